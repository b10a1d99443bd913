/**
 * `fleet console`: prints a one-time sign-in link to the operator console for the operator whose
 * certificate the CLI holds (data/operator/admin.*.pem), asked of the running provisioning service over
 * its mTLS API. `fleet console sessions` lists live console sessions; `fleet console revoke-sessions
 * [--operator ID]` ends every session of an operator (default: this one), e.g. for a lost laptop.
 *
 * Unlike the other operator commands it never starts the service in-process: a link is only worth
 * something while a console serves it, so with nothing running it says to start one.
 */

import { isUnreachable } from '../../provisioning/client.ts';
import { ProvisioningError } from '../../provisioning/errors.ts';
import { type Json, withApi } from '../api.ts';
import { type CommandContext, dispatch, type SubCommand } from '../command.ts';

async function call(
  ctx: CommandContext,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<Json> {
  try {
    return await withApi(ctx, { remote: true }, (api) => api.call(method, path, body));
  } catch (e) {
    if (isUnreachable(e))
      throw new ProvisioningError(
        'API_UNREACHABLE',
        `${(e as Error).message}: start Fleet first (npm start), then run fleet console again`,
        { cause: e },
      );
    throw e;
  }
}

function write(ctx: CommandContext, json: unknown, text: string): void {
  ctx.out.write(ctx.config.json ? `${JSON.stringify(json, null, 2)}\n` : `${text}\n`);
}

const subs: Record<string, SubCommand> = {
  link: {
    spec: {
      name: 'console link',
      summary: 'a one-time sign-in link to the console for this operator (what `fleet console` alone does)',
      description:
        'Asks the running provisioning service (never one started in-process: a link is only worth something\n' +
        'while a console serves it). The link works once, for FLEET_CONSOLE_LINK_MINUTES (default 10).',
      examples: ['fleet console'],
    },
    async run(ctx) {
      const r = await call(ctx, 'POST', '/v1/console/links');
      write(
        ctx,
        r,
        [
          `Open this link in your browser to sign in to the console as operator ${r.operator}:`,
          '',
          `  ${r.url}`,
          '',
          `It works once, until ${r.expiresAt}. The browser must trust the fleet root CA`,
          '(data/ca/root.crt.pem) unless FLEET_CONSOLE_CERT_FILE serves a certificate it already trusts.',
        ].join('\n'),
      );
      return 0;
    },
  },
  sessions: {
    spec: {
      name: 'console sessions',
      summary: 'the live console sessions: operator, since, last request, address',
      examples: ['fleet console sessions'],
    },
    async run(ctx) {
      const r = await call(ctx, 'GET', '/v1/console/sessions');
      write(
        ctx,
        r,
        r.items.length
          ? r.items
              .map(
                (s: Json) =>
                  `${s.session}  ${s.operator.padEnd(16)} since ${s.createdAt}  last ${s.lastSeenAt}  ${s.address ?? ''}`,
              )
              .join('\n')
          : 'no live console sessions',
      );
      return 0;
    },
  },
  'revoke-sessions': {
    spec: {
      name: 'console revoke-sessions',
      summary: "end every console session of an operator (a lost laptop): this one's unless --operator",
      flags: {
        operator: { type: 'string', arg: 'ID', help: 'the operator whose sessions end', default: 'this one' },
      },
      examples: ['fleet console revoke-sessions --operator alice'],
    },
    async run(ctx, { values }) {
      const operator = values['operator'];
      const r = await call(ctx, 'POST', '/v1/console/sessions/revoke', operator ? { operator } : {});
      write(ctx, r, `ended ${r.sessionsEnded} console session(s) of operator ${r.operator}`);
      return 0;
    },
  },
};

export const command = dispatch(
  'console',
  'The operator console in the browser: `fleet console` prints a one-time sign-in link for the operator\nwhose credential this CLI holds (data/operator/); its sessions can be listed and ended.',
  subs,
  { defaultSub: 'link' },
);
