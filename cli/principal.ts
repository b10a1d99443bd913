/**
 * The subcommands stations, services and operators share (`create|issue|list|show|revoke|suspend|
 * reinstate`, and `scope` for a station), through the provisioning API (cli/api.ts).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { OPERATOR_REASONS } from '../pki/crl.ts';
import { buildCsr } from '../pki/csr-build.ts';
import { type Json, withApi } from './api.ts';
import { type FlagSpec, idOf, query, quotaOf, reasonOf, SUBJECT_STATUSES, splitList } from './args.ts';
import { type CommandContext, type SubCommand, UsageError } from './command.ts';
import { print } from './output.ts';

type Kind = 'station' | 'service' | 'operator';

const ID = (kind: Kind) => [{ name: 'ID', help: `the ${kind} id`, required: true }];
const PRODUCTS: FlagSpec = {
  type: 'string',
  arg: 'P1,P2',
  help: 'the products it may enroll devices for (comma-separated)',
};
const QUOTA: FlagSpec = {
  type: 'string',
  arg: 'N|none',
  help: 'at most N enrollments per hour (none: no limit)',
};
const WHAT: Record<Kind, string> = {
  station: 'a factory station: enrolls devices of its products through the API, within an hourly quota',
  service: 'a backend service: an MQTT client that reads telemetry and sends commands (by its role)',
  operator: 'an operator: a person or tool using the operator API (the fleet CLI is operator admin)',
};
const EXAMPLE_ID: Record<Kind, string> = { station: 'line-1', service: 'backend', operator: 'alice' };

export function principalSubs(kind: Kind, plural: string): Record<string, SubCommand> {
  const ex = EXAMPLE_ID[kind];
  const subs: Record<string, SubCommand> = {
    create: {
      spec: {
        name: `${kind} create`,
        summary: `register ${WHAT[kind]}`,
        api: true,
        args: ID(kind),
        flags:
          kind === 'station'
            ? { products: PRODUCTS, quota: { ...QUOTA, default: 'none' } }
            : kind === 'service'
              ? {
                  role: {
                    type: 'string',
                    arg: 'ROLE',
                    help: 'the role its MQTT policy grants (the role placeholder in policy rules)',
                    default: 'none (the default policy does not use roles)',
                  },
                }
              : {},
        examples: [
          kind === 'station'
            ? `fleet station create ${ex} --products thermo,valve --quota 500`
            : kind === 'service'
              ? `fleet service create ${ex}`
              : `fleet operator create ${ex}`,
        ],
      },
      async run(ctx, { values, args }) {
        const id = idOf(args, kind);
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
    },

    issue: {
      spec: {
        name: `${kind} issue`,
        summary: `make a key here and get the ${kind} its client certificate (the key never leaves this machine)`,
        description: `Writes DIR/ID.key.pem (0600), DIR/ID.crt.pem (certificate + chain) and DIR/root.crt.pem.`,
        api: true,
        args: ID(kind),
        flags: { out: { type: 'string', arg: 'DIR', help: 'where to write the files', default: '.' } },
        examples: [`fleet ${kind} issue ${ex} --out ${kind}-creds`],
      },
      async run(ctx, { values, args }) {
        const id = idOf(args, kind);
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
    },

    list: {
      spec: {
        name: `${kind} list`,
        summary: `list ${plural}`,
        api: true,
        flags: {
          status: { type: 'enum', values: SUBJECT_STATUSES, help: `only ${plural} with this status` },
          limit: { type: 'int', min: 1, max: 1000, help: 'at most N per page', default: '100' },
          cursor: { type: 'string', arg: 'CURSOR', help: 'the next page' },
        },
        examples: [`fleet ${kind} list --status active`],
      },
      async run(ctx, { values }) {
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
    },

    show: {
      spec: {
        name: `${kind} show`,
        summary: `one ${kind} and its status`,
        api: true,
        args: ID(kind),
        examples: [`fleet ${kind} show ${ex}`],
      },
      async run(ctx, { values, args }) {
        const id = idOf(args, kind);
        const p: Json = await withApi(ctx, values, (api) => api.call('GET', `/v1/${plural}/${id}`));
        print(ctx, p, `${kind} ${p.id}: ${p.status}${p.revocationReason ? ` (${p.revocationReason})` : ''}`);
        return 0;
      },
    },

    ...Object.fromEntries(
      (['revoke', 'suspend', 'reinstate'] as const).map((action) => [
        action,
        {
          spec: {
            name: `${kind} ${action}`,
            summary:
              action === 'revoke'
                ? `revoke a ${kind} for good (its certificates on the CRL, its connections dropped)`
                : action === 'suspend'
                  ? `suspend a ${kind} (reversible)`
                  : `reinstate a suspended ${kind}`,
            api: true,
            args: ID(kind),
            flags:
              action === 'revoke'
                ? {
                    reason: {
                      type: 'enum',
                      values: OPERATOR_REASONS,
                      help: 'the RFC 5280 reason',
                      default: 'unspecified',
                    } satisfies FlagSpec,
                    ...(kind === 'station'
                      ? {
                          'cascade-from': {
                            type: 'time',
                            help: 'also revoke the devices it enrolled from this time on (a compromised line)',
                          } satisfies FlagSpec,
                          'cascade-to': {
                            type: 'time',
                            help: 'end of that window (with --cascade-from)',
                            default: 'now',
                          } satisfies FlagSpec,
                        }
                      : {}),
                  }
                : {},
            examples: [
              action === 'revoke' && kind === 'station'
                ? `fleet station revoke ${ex} --reason keyCompromise --cascade-from 2026-11-30T00:00:00Z`
                : `fleet ${kind} ${action} ${ex}${action === 'revoke' ? ' --reason keyCompromise' : ''}`,
            ],
          },
          async run(ctx: CommandContext, { values, args }) {
            const id = idOf(args, kind);
            const body: Record<string, unknown> = {};
            if (action === 'revoke') body['reason'] = reasonOf(values['reason']);
            if (typeof values['cascade-from'] === 'string') {
              body['cascade'] = {
                from: values['cascade-from'],
                ...(typeof values['cascade-to'] === 'string' ? { to: values['cascade-to'] } : {}),
              };
            } else if (values['cascade-to'] !== undefined) {
              throw new UsageError('--cascade-to needs --cascade-from', {
                code: 'USAGE_CONFLICT',
                helpFor: `${kind} ${action}`,
              });
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
        } satisfies SubCommand,
      ]),
    ),
  };
  if (kind === 'station') {
    subs['scope'] = {
      spec: {
        name: 'station scope',
        summary: "change a station's products and hourly quota",
        api: true,
        args: ID(kind),
        flags: { products: PRODUCTS, quota: QUOTA },
        examples: ['fleet station scope line-1 --products thermo --quota none'],
      },
      async run(ctx, { values, args }) {
        const id = idOf(args, 'station');
        const body: Record<string, unknown> = {};
        if (typeof values['products'] === 'string') body['products'] = splitList(values['products']);
        if (values['quota'] !== undefined) body['hourlyQuota'] = quotaOf(values['quota']);
        if (Object.keys(body).length === 0)
          throw new UsageError('fleet station scope needs --products and/or --quota', {
            code: 'USAGE_MISSING',
            helpFor: 'station scope',
          });
        const r: Json = await withApi(ctx, values, (api) => api.call('PATCH', `/v1/stations/${id}`, body));
        print(
          ctx,
          r,
          `station ${id}: products ${(r.products ?? []).join(', ') || 'none'}, quota ${r.hourlyQuota ?? 'unlimited'}/h`,
        );
        return 0;
      },
    };
  }
  return subs;
}

/** What `fleet station|service|operator` say about themselves. */
export const PRINCIPAL_ABOUT: Record<Kind, string> = {
  station: `Factory stations: ${WHAT.station}.`,
  service: `Backend services: ${WHAT.service}.`,
  operator: `Operators: ${WHAT.operator}.`,
};
