/** `fleet audit [--actor K:ID] [--subject K:ID] [--action A] [--from T] [--to T]`: the audit log, through the API. */
import { type Json, withApi } from '../api.ts';
import { apiFlags, isoOf, query } from '../args.ts';
import type { Command } from '../command.ts';
import { print } from '../output.ts';

export const command: Command = {
  async run(ctx) {
    const { values } = apiFlags(ctx.argv, ['actor', 'subject', 'action', 'from', 'to', 'limit', 'cursor']);
    for (const f of ['from', 'to'] as const)
      if (typeof values[f] === 'string') values[f] = isoOf(values[f] as string, `--${f}`);
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
            `${a.at} ${a.outcome.padEnd(7)} ${a.actor.padEnd(30)} ${a.action.padEnd(22)} ${a.subject ?? ''}${a.details?.code ? ` ${a.details.code}` : ''}`,
        ),
        page.nextCursor ? `(more: --cursor ${page.nextCursor})` : '',
      ].join('\n'),
    );
    return 0;
  },
};
