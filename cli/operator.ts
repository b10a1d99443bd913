/**
 * The operator commands (`fleet station|service|operator|audit|expiring|provisioning`, and `fleet device
 * list|show|revoke|suspend|reinstate|reset`): every one goes through the provisioning API with the operator
 * certificate `fleet init` made (data/operator/admin.{crt,key}.pem), trusting only the fleet root, so the
 * CLI works the same against the embedded default and a remote deployment, and every action is authorised
 * and audited by the service under the operator's identity.
 *
 * Where the API is: FLEET_API_URL when the configuration carries it (`apiUrl`), else
 * https://<FLEET_HOST>:<FLEET_API_PORT>. When nothing listens there:
 *   - for the implicit local address (the embedded default with the service not running), the command
 *     starts the same service in-process on a loopback port for the one call, against the data directory,
 *     and says so on stderr: same code path, same authorisation, same audit, no second way to write;
 *   - for an explicit FLEET_API_URL it fails (API_UNREACHABLE): silently acting on a local database when
 *     a remote deployment was meant would be worse than failing.
 * `--local` forces the in-process service; `--remote` forbids it.
 *
 * Import this module through cli/commands.ts (it uses commands.ts's UsageError at run time only).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { type FleetConfig, paths } from '../config/index.ts';
import { isRevocationReason, OPERATOR_REASONS } from '../pki/crl.ts';
import { csrToDer } from '../pki/csr.ts';
import { buildCsr } from '../pki/csr-build.ts';
import { FleetError } from '../pki/errors.ts';
import { assertValidId } from '../pki/ids.ts';
import { isUnreachable, ProvisioningClient } from '../provisioning/client.ts';
import { checkDeviceRequest } from '../provisioning/issuance.ts';
import { runProvisioning, startProvisioning } from '../provisioning/main.ts';
import { type Command, type CommandContext, UsageError } from './commands.ts';

type Values = Record<string, string | boolean | undefined>;

function parse(argv: string[], strings: string[], booleans: string[] = []) {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    data: { type: 'string' },
    json: { type: 'boolean' },
    local: { type: 'boolean' },
    remote: { type: 'boolean' },
  };
  for (const n of strings) options[n] = { type: 'string' };
  for (const n of booleans) options[n] = { type: 'boolean' };
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Values, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function print(ctx: CommandContext, json: unknown, text: string): void {
  ctx.out.write(
    ctx.config.json ? `${JSON.stringify(json, null, 2)}\n` : text.endsWith('\n') ? text : `${text}\n`,
  );
}

function apiUrlOf(config: FleetConfig): { url: string; explicit: boolean } {
  const explicit = config.apiUrl;
  if (explicit) return { url: explicit.replace(/\/$/, ''), explicit: true };
  return { url: `https://${config.host}:${config.apiPort}`, explicit: false };
}

function operatorFiles(config: FleetConfig) {
  const p = paths(config.dataDir);
  return {
    cert: join(p.operator, 'admin.crt.pem'),
    key: join(p.operator, 'admin.key.pem'),
    ca: join(p.ca, 'root.crt.pem'),
  };
}

/** Runs `fn` against the API (see the module comment for where and the in-process fallback). */
export async function withApi<T>(
  ctx: CommandContext,
  values: Values,
  fn: (api: ProvisioningClient) => Promise<T>,
): Promise<T> {
  const { url, explicit } = apiUrlOf(ctx.config);
  const files = operatorFiles(ctx.config);
  if (!values['local']) {
    const api = await ProvisioningClient.fromFiles(url, files);
    try {
      return await fn(api);
    } catch (e) {
      // Only "nothing listens": a TLS or HTTP failure from something that does listen is reported as is.
      const refused =
        isUnreachable(e) && (e as { details?: { reason?: string } }).details?.reason === 'ECONNREFUSED';
      if (!refused || explicit || values['remote']) throw e;
    } finally {
      await api.close();
    }
  }
  ctx.err.write(
    `fleet: the provisioning service is not running at ${url}; running it in-process for this command\n`,
  );
  const running = await startProvisioning(
    { ...ctx.config, apiPort: 0, publicPort: 0, listenHost: '127.0.0.1' },
    pino({ level: 'warn', base: { service: 'provisioning' } }, pino.destination(2)),
  );
  const api = await ProvisioningClient.fromFiles(`https://127.0.0.1:${running.ports.apiPort}`, files);
  try {
    return await fn(api);
  } finally {
    await api.close();
    await running.stop();
  }
}

const num = (v: unknown, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a non-negative number`);
  return n;
};

const reasonOf = (v: unknown): string => {
  const reason = (v as string | undefined) ?? 'unspecified';
  if (!isRevocationReason(reason) || !OPERATOR_REASONS.includes(reason))
    throw new UsageError(`--reason must be one of ${OPERATOR_REASONS.join(', ')}`);
  return reason;
};

function query(values: Values, map: Record<string, string>): string {
  const q = new URLSearchParams();
  for (const [flag, param] of Object.entries(map)) {
    const v = values[flag];
    if (typeof v === 'string') q.set(param, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

function idArg(positionals: string[], what: string, usage: string): string {
  const id = positionals[0];
  if (!id) throw new UsageError(`${usage} needs the ${what} id`);
  assertValidId(id, `${what} id`);
  return id;
}

// biome-ignore lint/suspicious/noExplicitAny: JSON answers
type Json = any;
type Sub = (ctx: CommandContext, argv: string[]) => Promise<number>;

function dispatch(name: string, subs: Record<string, Sub>, summary: string): Command {
  return {
    summary,
    async run(ctx) {
      const [sub, ...rest] = ctx.argv;
      const fn = sub ? subs[sub] : undefined;
      if (!fn) throw new UsageError(`${name} needs one of: ${Object.keys(subs).join(', ')}`);
      return fn(ctx, rest);
    },
  };
}

// ------------------------------------------------------------------------------------------------ devices

/** `fleet device list|show|revoke|suspend|reinstate|reset`, through the API. */
export const DEVICE_OPERATOR_SUB: Record<string, Sub> = {
  /** An operator issuing a device certificate from the device's CSR (outside any station's scope). */
  async issue(ctx, argv) {
    const { values } = parse(argv, ['id', 'product', 'fleet', 'csr', 'out']);
    const [id, product, csrFile] = [values['id'], values['product'], values['csr']] as (string | undefined)[];
    if (!id || !product || !csrFile) throw new UsageError('device issue needs --id, --product and --csr');
    const fleet = values['fleet'] as string | undefined;
    let csr: Buffer;
    try {
      csr = await readFile(csrFile);
    } catch (cause) {
      throw new FleetError('CSR_UNREADABLE', `cannot read the CSR file ${csrFile}`, { cause });
    }
    // Checked here first, so a bad CSR or id is refused before any connection (the service checks again).
    checkDeviceRequest({ id, product, fleet, csr });
    const r: Json = await withApi(ctx, values, (api) =>
      api.call('POST', '/v1/devices', { id, product, fleet, csr: csrToDer(csr).toString('base64') }),
    );
    const pem = [r.certificate, ...r.chain].join('');
    let file: string | undefined;
    const out = values['out'] as string | undefined;
    if (out) {
      await mkdir(out, { recursive: true });
      file = resolve(out, `${id}.crt.pem`);
      await writeFile(file, pem);
      await writeFile(resolve(out, 'root.crt.pem'), r.root);
    }
    const summary = {
      id,
      serial: r.serial,
      fingerprint: r.fingerprint,
      notAfter: r.notAfter,
      reused: r.reused,
      file,
    };
    if (file) {
      const note = r.reused ? ' (existing certificate, same key)' : '';
      print(ctx, summary, `issued ${id} serial ${r.serial}${note}\n  ${file}`);
    } else print(ctx, { ...summary, pem }, pem);
    return 0;
  },

  async list(ctx, argv) {
    const { values } = parse(argv, [
      'status',
      'product',
      'fleet',
      'station',
      'from',
      'to',
      'expiring-days',
      'limit',
      'cursor',
    ]);
    num(values['expiring-days'], '--expiring-days');
    num(values['limit'], '--limit');
    const page: Json = await withApi(ctx, values, (api) =>
      api.call(
        'GET',
        `/v1/devices${query(values, {
          status: 'status',
          product: 'product',
          fleet: 'fleet',
          station: 'station',
          from: 'enrolledFrom',
          to: 'enrolledTo',
          'expiring-days': 'expiringWithinDays',
          limit: 'limit',
          cursor: 'cursor',
        })}`,
      ),
    );
    const rows = page.items.map(
      (d: Json) => `${d.id.padEnd(24)} ${d.status.padEnd(10)} ${d.product.padEnd(16)} ${d.createdAt}`,
    );
    print(
      ctx,
      page,
      [
        `${'ID'.padEnd(24)} ${'STATUS'.padEnd(10)} ${'PRODUCT'.padEnd(16)} ENROLLED`,
        ...rows,
        page.nextCursor ? `(more: --cursor ${page.nextCursor})` : '',
      ].join('\n'),
    );
    return 0;
  },

  async show(ctx, argv) {
    const { values, positionals } = parse(argv, []);
    const id = idArg(positionals, 'device', 'device show');
    const d: Json = await withApi(ctx, values, (api) => api.call('GET', `/v1/devices/${id}`));
    const lines = [
      `device ${d.id}: ${d.status}${d.revocationReason ? ` (${d.revocationReason})` : ''}`,
      `  product ${d.product}, fleet ${d.fleet}, enrolled ${d.createdAt}${d.enrolledBy ? ` by station ${d.enrolledBy}` : ''}`,
      ...d.certificates.map((c: Json) => `  certificate ${c.serial} ${c.status} valid until ${c.notAfter}`),
      d.presence
        ? `  presence: ${d.presence.connected ? 'connected' : 'disconnected'}, last seen ${d.presence.lastSeen}`
        : '  presence: never connected',
    ];
    print(ctx, d, lines.join('\n'));
    return 0;
  },

  ...Object.fromEntries(
    (['revoke', 'suspend', 'reinstate', 'reset'] as const).map((action) => [
      action,
      async (ctx: CommandContext, argv: string[]) => {
        const { values, positionals } = parse(argv, action === 'revoke' ? ['reason'] : []);
        const id = idArg(positionals, 'device', `device ${action}`);
        const body = action === 'revoke' ? { reason: reasonOf(values['reason']) } : {};
        const r: Json = await withApi(ctx, values, (api) =>
          api.call('POST', `/v1/devices/${id}/${action}`, body),
        );
        const text =
          action === 'reset'
            ? `device ${id} may enroll again with a new key`
            : r.changed
              ? `${action === 'reinstate' ? 'reinstated' : `${action}d`} device ${id}${action === 'revoke' ? ` (${body.reason})` : ''}`
              : `device ${id} was already ${r.status}`;
        print(ctx, r, text);
        return 0;
      },
    ]),
  ),
};

// ------------------------------------------------------------------------------------------------ principals

function principalSubs(kind: 'station' | 'service' | 'operator', plural: string): Record<string, Sub> {
  const subs: Record<string, Sub> = {
    async create(ctx, argv) {
      const { values, positionals } = parse(
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
      const { values, positionals } = parse(argv, ['out']);
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
      const { values } = parse(argv, ['status', 'limit', 'cursor']);
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
      const { values, positionals } = parse(argv, []);
      const id = idArg(positionals, kind, `${kind} show`);
      const p: Json = await withApi(ctx, values, (api) => api.call('GET', `/v1/${plural}/${id}`));
      print(ctx, p, `${kind} ${p.id}: ${p.status}${p.revocationReason ? ` (${p.revocationReason})` : ''}`);
      return 0;
    },

    ...Object.fromEntries(
      (['revoke', 'suspend', 'reinstate'] as const).map((action) => [
        action,
        async (ctx: CommandContext, argv: string[]) => {
          const { values, positionals } = parse(
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
      const { values, positionals } = parse(argv, ['products', 'quota']);
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

const splitList = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

function quotaOf(v: unknown): number | null {
  if (v === 'none' || v === 'unlimited') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError('--quota must be a non-negative integer or "none"');
  return n;
}

function isoOf(v: string, name: string): string {
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new UsageError(`${name} must be a date/time (ISO 8601)`);
  return new Date(t).toISOString();
}

// ------------------------------------------------------------------------------------------------ audit, expiring

const audit: Command = {
  summary:
    'audit [--actor K:ID] [--subject K:ID] [--action A] [--from T] [--to T] [--limit N]: the audit log',
  async run(ctx) {
    const { values } = parse(ctx.argv, ['actor', 'subject', 'action', 'from', 'to', 'limit', 'cursor']);
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

const expiring: Command = {
  summary: 'expiring [--days 30] [--limit N]: active certificates that expire soon (exit 3 when any)',
  async run(ctx) {
    const { values } = parse(ctx.argv, ['days', 'limit', 'cursor']);
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

const provisioning: Command = {
  summary:
    'provisioning: run the provisioning service (mTLS API on FLEET_API_PORT, CRL/OCSP on FLEET_PUBLIC_PORT)',
  async run(ctx) {
    parse(ctx.argv, []);
    return runProvisioning(ctx.config);
  },
};

export const OPERATOR_COMMANDS: Record<string, Command> = {
  provisioning,
  station: dispatch(
    'station',
    principalSubs('station', 'stations'),
    'station create|issue|scope|list|show|revoke|suspend|reinstate (revoke --cascade-from T: its devices too)',
  ),
  service: dispatch(
    'service',
    principalSubs('service', 'services'),
    'service create|issue|list|show|revoke|suspend|reinstate',
  ),
  operator: dispatch(
    'operator',
    principalSubs('operator', 'operators'),
    'operator create|issue|list|show|revoke|suspend|reinstate',
  ),
  audit,
  expiring,
};
