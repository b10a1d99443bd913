/** `fleet audit`: the audit log, newest first, through the API. */
import { type Json, withApi } from '../api.ts';
import { query } from '../args.ts';
import { simple } from '../command.ts';
import { print } from '../output.ts';

export const command = simple(
  {
    name: 'audit',
    summary: 'the audit log, newest first: who did what to whom, and what was refused',
    api: true,
    flags: {
      actor: {
        type: 'string',
        arg: 'KIND:ID',
        help: 'only what this principal did (operator:admin, station:line-1)',
      },
      subject: { type: 'string', arg: 'KIND:ID', help: 'only what was done to this subject (device:dev-1)' },
      action: { type: 'string', arg: 'ACTION', help: 'only this action (device.enroll, device.revoke, …)' },
      from: { type: 'time', help: 'at or after this time (ISO 8601)' },
      to: { type: 'time', help: 'before this time (ISO 8601)' },
      limit: { type: 'int', min: 1, max: 1000, help: 'at most N per page', default: '100' },
      cursor: { type: 'string', arg: 'CURSOR', help: 'the next page (printed at the end of a full page)' },
    },
    examples: [
      'fleet audit --subject device:dev-1',
      'fleet audit --actor station:line-1 --from 2026-12-01T00:00:00Z',
    ],
  },
  async (ctx, { values }) => {
    const page: Json = await withApi(ctx, values, (api) =>
      api.call(
        'GET',
        `/v1/audit${query(values, { actor: 'actor', subject: 'subject', action: 'action', from: 'from', to: 'to', limit: 'limit', cursor: 'cursor' })}`,
      ),
    );
    print(
      ctx,
      page,
      [
        ...page.items.map(
          (a: Json) =>
            `${a.at} ${a.outcome.padEnd(7)} ${a.actor.padEnd(30)} ${a.action.padEnd(22)} ${a.subject ?? ''}${a.details?.code ? ` ${a.details.code}` : ''}${a.count > 1 ? ` (x${a.count}, last ${a.lastAt})` : ''}`,
        ),
        page.nextCursor ? `(more: --cursor ${page.nextCursor})` : '',
      ].join('\n'),
    );
    return 0;
  },
);
