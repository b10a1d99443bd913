/** The `fleet` subcommands. Each parses its own flags and prints text, or JSON with --json. */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { FleetConfig } from '../config/index.ts';
import { currentCrl } from '../provisioning/crl.ts';
import { initDataDir, openLocalCa, withRegistry } from '../runtime/index.ts';
import { DEVICE_OPERATOR_SUB, OPERATOR_COMMANDS } from './operator.ts';

export class UsageError extends Error {}

export interface CommandContext {
  config: FleetConfig;
  argv: string[];
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export interface Command {
  summary: string;
  run(ctx: CommandContext): Promise<number>;
}

/** Parses a subcommand's string flags strictly (an unknown flag is a usage error). */
function flags(
  argv: string[],
  names: string[],
): { values: Record<string, string | undefined>; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    data: { type: 'string' },
    json: { type: 'boolean' },
  };
  for (const n of names) options[n] = { type: 'string' };
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    const out: Record<string, string | undefined> = {};
    for (const n of names) out[n] = values[n] as string | undefined;
    return { values: out, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function print(ctx: CommandContext, json: unknown, text: string): void {
  ctx.out.write(
    ctx.config.json ? `${JSON.stringify(json, null, 2)}\n` : text.endsWith('\n') ? text : `${text}\n`,
  );
}

const init: Command = {
  summary: 'create the CA hierarchy, the registry and the local operator credential (idempotent)',
  async run(ctx) {
    flags(ctx.argv, []);
    const r = await initDataDir(ctx.config);
    const lines = [
      r.created.length
        ? `fleet: initialised ${r.dataDir}`
        : `fleet: ${r.dataDir} is already initialised; nothing changed`,
      ...r.created.map((c) => `  created ${c}`),
      `  root CA:   ${r.ca.root}  (embed this in device firmware)`,
      `  registry:  ${r.registry}`,
      `  operator:  ${r.operator.cert}`,
    ];
    if (r.ca.passphraseSource === 'generated') {
      lines.push(
        '',
        'WARNING: the CA key passphrase was generated into data/secrets/ca-passphrase for this embedded setup.',
        '         In production supply your own with FLEET_CA_PASSPHRASE_FILE and keep the root key offline.',
      );
    }
    print(ctx, r, lines.join('\n'));
    return 0;
  },
};

// ------------------------------------------------------------------------------------------------ device

// Every device command goes through the provisioning API (cli/operator.ts).
const DEVICE_SUB: Record<string, (ctx: CommandContext, argv: string[]) => Promise<number>> = {
  ...DEVICE_OPERATOR_SUB,
};

const device: Command = {
  summary: 'device issue|list|show|revoke|suspend|reinstate|reset',
  async run(ctx) {
    const [sub, ...rest] = ctx.argv;
    const fn = sub ? DEVICE_SUB[sub] : undefined;
    if (!fn) throw new UsageError(`device needs one of: ${Object.keys(DEVICE_SUB).join(', ')}`);
    return fn(ctx, rest);
  },
};

// ------------------------------------------------------------------------------------------------ crl

const crl: Command = {
  summary: 'crl [--ca device|infrastructure] [--out FILE(.pem|.der|.crl)]: the current CRL',
  async run(ctx) {
    const { values } = flags(ctx.argv, ['ca', 'out']);
    const which = values.ca ?? 'device';
    if (which !== 'device' && which !== 'infrastructure')
      throw new UsageError('--ca must be device or infrastructure');
    const ca = await openLocalCa(ctx.config);
    const built = await withRegistry(ctx.config, (r) => currentCrl(ca, r, which));
    const info = {
      ca: which,
      crlNumber: built.crlNumber.toString(),
      thisUpdate: built.thisUpdate,
      nextUpdate: built.nextUpdate,
    };
    if (values.out) {
      const asDer = /\.(der|crl)$/i.test(values.out);
      await writeFile(values.out, asDer ? built.der : built.pem);
      print(
        ctx,
        { ...info, file: values.out },
        `wrote the ${which} CRL (number ${built.crlNumber}) to ${values.out}`,
      );
    } else {
      print(ctx, { ...info, pem: built.pem }, built.pem);
    }
    return 0;
  },
};

export const COMMANDS: Record<string, Command> = {
  init,
  device,
  crl,
  up: {
    summary: 'run the whole system (what `npm start` runs)',
    run: async (ctx) => (await import('./up.ts')).up.run(ctx),
  },
  broker: {
    summary: 'run the MQTT broker alone',
    run: async (ctx) => (await import('./up.ts')).broker.run(ctx),
  },
  sim: { summary: 'simulated devices load test', run: async (c) => (await import('./sim.ts')).sim.run(c) },
  ...OPERATOR_COMMANDS,
};

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(14)} ${c.summary}`);
  return `usage: fleet <command> [--data DIR] [--json]\n\ncommands:\n${lines.join('\n')}\n`;
}
