#!/usr/bin/env -S npx tsx
/**
 * `fleet`: one command, dispatching to each part. Every subcommand takes `--data DIR` (default ./data,
 * or FLEET_DATA_DIR) and `--json`. Configuration is read here, once, and passed down.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/index.ts';
import { FleetError } from '../pki/errors.ts';
import { type CommandContext, UsageError } from './command.ts';
import { COMMANDS, usage } from './table.ts';

export interface CliIo {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

/** Runs one `fleet` invocation; returns the exit code. Tests call this in-process. */
export async function runCli(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
  io: CliIo = { out: process.stdout, err: process.stderr },
): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    options: { data: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  const json = values.json === true;
  try {
    const name = positionals[0];
    if (!name || values.help) {
      io.out.write(usage());
      return name || values.help ? 0 : 2;
    }
    const entry = COMMANDS[name];
    if (!entry) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
    const config = loadConfig(env, {
      data: typeof values.data === 'string' ? values.data : undefined,
      json,
    });
    const ctx: CommandContext = {
      config,
      argv: argv.slice(argv.indexOf(name) + 1),
      out: io.out,
      err: io.err,
    };
    const { command } = await entry.load();
    return await command.run(ctx);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err.write(`fleet: ${e.message}\n\n${usage()}`);
      return 2;
    }
    if (e instanceof FleetError) {
      if (json) io.out.write(`${JSON.stringify({ error: e.toPublic() })}\n`);
      io.err.write(`fleet: error ${e.code}: ${e.message}\n`);
      if (e.cause && env.FLEET_DEBUG) io.err.write(`cause: ${String((e.cause as Error).stack ?? e.cause)}\n`);
      return 1;
    }
    io.err.write(`fleet: internal error: ${(e as Error).stack ?? String(e)}\n`);
    return 70;
  }
}

// Run only when executed, not when imported by tests.
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
