/**
 * `fleet`: one command, dispatching to each part. Every command takes `--data DIR` (default ./data, or
 * FLEET_DATA_DIR), `--json` and `--help`. Configuration is read here, once, and passed down.
 *
 * bin/fleet.mjs runs this compiled (dist/main.js) in its own process; tests call runCli() in-process.
 * Only what `fleet --help` needs is imported up front: each command's module loads when it runs.
 */
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../config/load.ts';
import { FleetError } from '../pki/errors.ts';
import { nearest } from './args.ts';
import type { CommandContext } from './command.ts';
import { UsageError } from './errors.ts';
import { COMMANDS, usage } from './table.ts';

export interface CliIo {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

/** --data and --json wherever they are (before `--`), for the configuration; each command parses them too. */
function globalFlags(argv: string[]): { data?: string; json: boolean; rest: string[] } {
  let data: string | undefined;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--json') json = true;
    else if (a === '--data' && argv[i + 1] !== undefined) data = argv[i + 1];
    else if (a.startsWith('--data=')) data = a.slice('--data='.length);
  }
  // Before the command's name: only the global flags.
  let k = 0;
  while (k < argv.length) {
    const a = argv[k]!;
    if (a === '--json' || a.startsWith('--data=')) k++;
    else if (a === '--data') k += 2;
    else break;
  }
  return { data, json, rest: argv.slice(k) };
}

/** Runs one `fleet` invocation; returns the exit code. Tests call this in-process. */
export async function runCli(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
  io: CliIo = { out: process.stdout, err: process.stderr },
): Promise<number> {
  const { data, json, rest } = globalFlags(argv);
  try {
    let [name, ...args] = rest;
    if (name === undefined) {
      io.err.write(usage());
      return 2;
    }
    if (name === '-h' || name === '--help') {
      io.out.write(usage());
      return 0;
    }
    // `fleet help device issue` is `fleet device issue --help`.
    if (name === 'help') {
      const words = args.filter((a, i) => !a.startsWith('-') && args[i - 1] !== '--data');
      if (words.length === 0) {
        io.out.write(usage());
        return 0;
      }
      name = words[0]!;
      args = [...words.slice(1), '--help'];
    }
    // Own properties only: `fleet toString` is an unknown command, not Object.prototype.toString.
    const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!entry) {
      const near = name.startsWith('-') ? undefined : nearest(name, Object.keys(COMMANDS));
      throw new UsageError(
        name.startsWith('-')
          ? `${name} before a command: only --data, --json and --help go there`
          : `unknown command ${JSON.stringify(name)}${near ? `; did you mean ${near}?` : ''}`,
        { code: 'USAGE_UNKNOWN_COMMAND', details: { command: name, nearest: near } },
      );
    }
    const config = loadConfig(env, { data, json, tty: (io.err as { isTTY?: boolean }).isTTY === true });
    const ctx: CommandContext = { config, argv: args, out: io.out, err: io.err };
    const { command } = await entry.load();
    return await command.run(ctx);
  } catch (e) {
    if (e instanceof FleetError) {
      if (json) io.out.write(`${JSON.stringify({ error: e.toPublic() })}\n`);
      if (e instanceof UsageError) {
        const see = e.helpFor ? `fleet ${e.helpFor} --help` : 'fleet --help';
        io.err.write(`fleet: ${e.message}\n${e.usage ? `${e.usage}\n` : ''}(${see} shows more)\n`);
        return 2;
      }
      io.err.write(`fleet: error ${e.code}: ${e.message}\n`);
      if (e.cause && env.FLEET_DEBUG) io.err.write(`cause: ${String((e.cause as Error).stack ?? e.cause)}\n`);
      return 1;
    }
    io.err.write(`fleet: internal error: ${(e as Error).stack ?? String(e)}\n`);
    return 70;
  }
}

// Run only when executed from source (`tsx cli/main.ts`), not when imported (bin/fleet.mjs, tests).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`fleet: ${String(e)}\n`);
      process.exitCode = 70;
    },
  );
}
