/**
 * The subcommands stations, services and operators share (`create|issue|list|show|revoke|suspend|
 * reinstate`, and `scope` for a station), through the provisioning API (cli/api.ts).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { buildCsr } from '../pki/csr-build.ts';
import { type Json, withApi } from './api.ts';
import { apiFlags, idArg, isoOf, query, quotaOf, reasonOf, splitList } from './args.ts';
import { type CommandContext, type Sub, UsageError } from './command.ts';
import { print } from './output.ts';

export function principalSubs(kind: 'station' | 'service' | 'operator', plural: string): Record<string, Sub> {
  const subs: Record<string, Sub> = {
    async create(ctx, argv) {
      const { values, positionals } = apiFlags(
        argv,
        kind === 'station' ? ['products', 'quota'] : kind === 'service' ? ['role'] : [],
      );
      const id = idArg(positionals, kind, `${kind} create`);
      const body: Record<string, unknown> = { id };
      if (kind === 'station') {
        if (typeof values['products'] === 'string') body['products'] = splitList(values['products']);
        if (values['quota'] !== undefined) body['hourlyQuota'] = quotaOf(values['quota']);
      }
      if (kind === 'service' && values['role'] !== undefined) body['role'] = values['role'];
      const r: Json = await withApi(ctx, values, (api) => api.call('POST', `/v1/${plural}`, body));
      print(
        ctx,
        r,
        `created ${kind} ${id}${kind === 'station' ? ` (products: ${(r.products ?? []).join(', ') || 'none'}, quota: ${r.hourlyQuota ?? 'unlimited'}/h)` : ''}`,
      );
      return 0;
    },

    async issue(ctx, argv) {
      const { values, positionals } = apiFlags(argv, ['out']);
      const id = idArg(positionals, kind, `${kind} issue`);
      const out = resolve(typeof values['out'] === 'string' ? values['out'] : '.');
      // The key is made here and never sent anywhere: the service sees only the CSR.
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const csr = buildCsr(privateKey, id).toString('base64');
      const r: Json = await withApi(ctx, values, (api) =>
        api.call('POST', `/v1/${plural}/${id}/certificates`, { csr }),
      );
      await mkdir(out, { recursive: true });
      const keyFile = join(out, `${id}.key.pem`);
      const certFile = join(out, `${id}.crt.pem`);
      await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, {
        mode: 0o600,
      });
      await writeFile(certFile, r.certificate + r.chain.join(''));
      await writeFile(join(out, 'root.crt.pem'), r.root);
      print(
        ctx,
        { ...r, files: { cert: certFile, key: keyFile } },
        `issued ${kind} ${id} serial ${r.serial}, valid until ${r.notAfter}\n  ${certFile}\n  ${keyFile} (keep it secret)`,
      );
      return 0;
    },

    async list(ctx, argv) {
      const { values } = apiFlags(argv, ['status', 'limit', 'cursor']);
      const page: Json = await withApi(ctx, values, (api) =>
        api.call(
          'GET',
          `/v1/${plural}${query(values, { status: 'status', limit: 'limit', cursor: 'cursor' })}`,
        ),
      );
      print(
        ctx,
        page,
        page.items
          .map(
            (p: Json) =>
              `${p.id.padEnd(24)} ${p.status.padEnd(10)}${kind === 'station' ? ` ${(p.products ?? []).join(',')} quota ${p.hourlyQuota ?? '-'}` : ''}${p.role ? ` role ${p.role}` : ''}`,
          )
          .join('\n') || `(no ${plural})`,
      );
      return 0;
    },

    async show(ctx, argv) {
      const { values, positionals } = apiFlags(argv, []);
      const id = idArg(positionals, kind, `${kind} show`);
      const p: Json = await withApi(ctx, values, (api) => api.call('GET', `/v1/${plural}/${id}`));
      print(ctx, p, `${kind} ${p.id}: ${p.status}${p.revocationReason ? ` (${p.revocationReason})` : ''}`);
      return 0;
    },

    ...Object.fromEntries(
      (['revoke', 'suspend', 'reinstate'] as const).map((action) => [
        action,
        async (ctx: CommandContext, argv: string[]) => {
          const { values, positionals } = apiFlags(
            argv,
            action === 'revoke'
              ? ['reason', ...(kind === 'station' ? ['cascade-from', 'cascade-to'] : [])]
              : [],
          );
          const id = idArg(positionals, kind, `${kind} ${action}`);
          const body: Record<string, unknown> = {};
          if (action === 'revoke') body['reason'] = reasonOf(values['reason']);
          if (typeof values['cascade-from'] === 'string') {
            body['cascade'] = {
              from: isoOf(values['cascade-from'], '--cascade-from'),
              ...(typeof values['cascade-to'] === 'string'
                ? { to: isoOf(values['cascade-to'], '--cascade-to') }
                : {}),
            };
          } else if (values['cascade-to'] !== undefined) {
            throw new UsageError('--cascade-to needs --cascade-from');
          }
          const r: Json = await withApi(ctx, values, (api) =>
            api.call('POST', `/v1/${plural}/${id}/${action}`, body),
          );
          const cascade = r.cascade ? `; ${r.cascade.devicesRevoked} devices it enrolled revoked too` : '';
          print(
            ctx,
            r,
            r.changed
              ? `${action === 'reinstate' ? 'reinstated' : `${action}d`} ${kind} ${id}${cascade}`
              : `${kind} ${id} was already ${r.status}${cascade}`,
          );
          return 0;
        },
      ]),
    ),
  };
  if (kind === 'station') {
    subs['scope'] = async (ctx, argv) => {
      const { values, positionals } = apiFlags(argv, ['products', 'quota']);
      const id = idArg(positionals, 'station', 'station scope');
      const body: Record<string, unknown> = {};
      if (typeof values['products'] === 'string') body['products'] = splitList(values['products']);
      if (values['quota'] !== undefined) body['hourlyQuota'] = quotaOf(values['quota']);
      if (Object.keys(body).length === 0)
        throw new UsageError('station scope needs --products and/or --quota');
      const r: Json = await withApi(ctx, values, (api) => api.call('PATCH', `/v1/stations/${id}`, body));
      print(
        ctx,
        r,
        `station ${id}: products ${(r.products ?? []).join(', ') || 'none'}, quota ${r.hourlyQuota ?? 'unlimited'}/h`,
      );
      return 0;
    };
  }
  return subs;
}
