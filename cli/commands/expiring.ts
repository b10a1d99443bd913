/** `fleet expiring [--days 30]`: active certificates that expire soon (exit 3 when any), through the API. */
import { type Json, withApi } from '../api.ts';
import { apiFlags, num, query } from '../args.ts';
import type { Command } from '../command.ts';
import { print } from '../output.ts';

export const command: Command = {
  async run(ctx) {
    const { values } = apiFlags(ctx.argv, ['days', 'limit', 'cursor']);
    const days = num(values['days'], '--days') ?? 30;
    num(values['limit'], '--limit');
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
};
