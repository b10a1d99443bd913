/**
 * `fleet device issue|list|show|revoke|suspend|reinstate|reset`: every one through the provisioning API
 * (cli/api.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { OPERATOR_REASONS } from '../../pki/crl.ts';
import { csrToDer } from '../../pki/csr.ts';
import { checkDeviceRequest } from '../../provisioning/issuance.ts';
import { type Json, withApi } from '../api.ts';
import { type FlagSpec, idOf, query, reasonOf, SUBJECT_STATUSES } from '../args.ts';
import { type CommandContext, dispatch, type SubCommand } from '../command.ts';
import { CliError } from '../errors.ts';
import { print } from '../output.ts';

const ID = [{ name: 'ID', help: 'the device id', required: true }] as const;
const REASON: FlagSpec = {
  type: 'enum',
  values: OPERATOR_REASONS,
  help: 'the RFC 5280 reason written into the CRL and OCSP answers',
  default: 'unspecified',
};

const subs: Record<string, SubCommand> = {
  /** An operator issuing a device certificate from the device's CSR (outside any station's scope). */
  issue: {
    spec: {
      name: 'device issue',
      summary: "issue a device certificate from the device's CSR (same id and key: the same certificate)",
      description:
        'The device makes its key and a CSR; the key never leaves it. The CSR (PEM or DER) is checked here\n' +
        'first (signature, key type, a CN if any must equal --id), then issued by the provisioning service.\n' +
        'Without --out the certificate and its chain are printed (PEM).',
      api: true,
      flags: {
        id: {
          type: 'string',
          arg: 'ID',
          help: 'the device id: letters, digits, . _ - (no / + #), at most 64',
          required: true,
        },
        product: {
          type: 'string',
          arg: 'PRODUCT',
          help: 'the product it is (a policy placeholder)',
          required: true,
        },
        csr: { type: 'string', arg: 'FILE', help: "the device's CSR, PEM or DER", required: true },
        fleet: {
          type: 'string',
          arg: 'FLEET',
          help: 'the fleet it belongs to (it receives fleets/FLEET/broadcast/#)',
          default: 'the product',
        },
        out: {
          type: 'string',
          arg: 'DIR',
          help: 'write DIR/ID.crt.pem (certificate + chain) and DIR/root.crt.pem',
        },
      },
      examples: [
        'fleet device issue --id dev-1 --product thermo --csr dev-1.csr --out certs',
        'openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev-1.key -subj /CN=dev-1 -out dev-1.csr',
      ],
    },
    async run(ctx, { values }) {
      const id = values['id'] as string;
      const product = values['product'] as string;
      const csrFile = values['csr'] as string;
      const fleet = values['fleet'] as string | undefined;
      let csr: Buffer;
      try {
        csr = await readFile(csrFile);
      } catch (cause) {
        throw new CliError('CSR_UNREADABLE', `cannot read the CSR file ${csrFile}`, { cause });
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
  },

  list: {
    spec: {
      name: 'device list',
      summary: 'list devices, newest first, filtered',
      api: true,
      flags: {
        status: { type: 'enum', values: SUBJECT_STATUSES, help: 'only devices with this status' },
        product: { type: 'string', arg: 'PRODUCT', help: 'only this product' },
        fleet: { type: 'string', arg: 'FLEET', help: 'only this fleet' },
        station: { type: 'string', arg: 'STATION', help: 'only devices this station enrolled' },
        from: { type: 'time', help: 'enrolled at or after this time (ISO 8601)' },
        to: { type: 'time', help: 'enrolled before this time (ISO 8601)' },
        'expiring-days': {
          type: 'int',
          min: 0,
          arg: 'DAYS',
          help: 'whose certificate expires within DAYS days',
        },
        limit: { type: 'int', min: 1, max: 1000, help: 'at most N per page', default: '100' },
        cursor: { type: 'string', arg: 'CURSOR', help: 'the next page (printed at the end of a full page)' },
      },
      examples: [
        'fleet device list --status revoked --product thermo',
        'fleet device list --json --limit 1000',
      ],
    },
    async run(ctx, { values }) {
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
  },

  show: {
    spec: {
      name: 'device show',
      summary: 'one device: status, certificates, presence (connected, last seen)',
      api: true,
      args: ID,
      examples: ['fleet device show dev-1'],
    },
    async run(ctx, { values, args }) {
      const id = idOf(args, 'device');
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
  },

  ...Object.fromEntries(
    (
      [
        [
          'revoke',
          'revoke a device for good: its certificates go on the CRL, its live connection is dropped',
        ],
        ['suspend', 'suspend a device (reversible): refused at CONNECT and dropped now, certificates kept'],
        ['reinstate', 'reinstate a suspended device'],
        ['reset', 'let a device enroll again with a new key (after a factory reset or repair)'],
      ] as const
    ).map(([action, summary]) => [
      action,
      {
        spec: {
          name: `device ${action}`,
          summary,
          api: true,
          args: ID,
          flags: action === 'revoke' ? { reason: REASON } : {},
          examples: [`fleet device ${action} dev-1${action === 'revoke' ? ' --reason keyCompromise' : ''}`],
        },
        async run(ctx: CommandContext, { values, args }) {
          const id = idOf(args, 'device');
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
      } satisfies SubCommand,
    ]),
  ),
};

export const command = dispatch(
  'device',
  'Devices: issue their certificates, list and inspect them, revoke, suspend, reinstate or reset them.\nEvery subcommand goes through the provisioning API with the operator credential in DATA/operator/.',
  subs,
);
