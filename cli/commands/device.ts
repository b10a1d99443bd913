/**
 * `fleet device issue|list|show|revoke|suspend|reinstate|reset`: every one through the provisioning API
 * (cli/api.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { csrToDer } from '../../pki/csr.ts';
import { FleetError } from '../../pki/errors.ts';
import { checkDeviceRequest } from '../../provisioning/issuance.ts';
import { type Json, withApi } from '../api.ts';
import { apiFlags, idArg, num, query, reasonOf } from '../args.ts';
import { type CommandContext, dispatch, type Sub, UsageError } from '../command.ts';
import { print } from '../output.ts';

const subs: Record<string, Sub> = {
  /** An operator issuing a device certificate from the device's CSR (outside any station's scope). */
  async issue(ctx, argv) {
    const { values } = apiFlags(argv, ['id', 'product', 'fleet', 'csr', 'out']);
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
    const { values } = apiFlags(argv, [
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
    const { values, positionals } = apiFlags(argv, []);
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
        const { values, positionals } = apiFlags(argv, action === 'revoke' ? ['reason'] : []);
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

export const command = dispatch('device', subs);
