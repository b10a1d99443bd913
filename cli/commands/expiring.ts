/** `fleet expiring [--days 30]`: active certificates that expire soon (exit 3 when any), through the API. */
import { type Json, withApi } from '../api.ts';
import { query } from '../args.ts';
import { simple } from '../command.ts';
import { print } from '../output.ts';

export const command = simple(
  {
    name: 'expiring',
    summary: 'active certificates that expire within DAYS days; exits 3 when there are any (alert on it)',
    api: true,
    flags: {
      days: { type: 'int', min: 0, max: 36500, arg: 'DAYS', help: 'the window', default: '30' },
      limit: { type: 'int', min: 1, max: 1000, help: 'at most N per page', default: '100' },
      cursor: { type: 'string', arg: 'CURSOR', help: 'the next page' },
    },
    examples: ['fleet expiring --days 60 || echo "certificates to renew"'],
  },
  async (ctx, { values }) => {
    const days = (values['days'] as number | undefined) ?? 30;
    const page: Json = await withApi(ctx, values, (api) =>
      api.call(
        'GET',
        `/v1/certificates/expiring?days=${days}${query(values, { limit: 'limit', cursor: 'cursor' }).replace('?', '&')}`,
      ),
    );
    print(
      ctx,
      page,
      page.items.length
        ? page.items
            .map((c: Json) => `${c.notAfter} ${c.subjectKind}:${c.subjectId} serial ${c.serial}`)
            .join('\n')
        : `no certificate expires within ${days} days`,
    );
    // Scriptable as an alert (cron, monitoring): non-zero when something needs renewing.
    return page.items.length ? 3 : 0;
  },
);
