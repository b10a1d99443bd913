#!/usr/bin/env -S npx tsx
/**
 * `fleet`: one command, dispatching to each part. Every subcommand takes `--data DIR` (default ./data,
 * or FLEET_DATA_DIR) and `--json`. Configuration is read here, once, and passed down.
 */
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { FleetError } from '../pki/errors.ts';
import { COMMANDS, type CommandContext, UsageError, usage } from './commands.ts';
import { loadConfig } from './config.ts';

async function main(argv: string[]): Promise<number> {
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
      process.stdout.write(usage());
      return name || values.help ? 0 : 2;
    }
    const cmd = COMMANDS[name];
    if (!cmd) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
    const config = loadConfig(process.env, {
      data: typeof values.data === 'string' ? values.data : undefined,
      json,
    });
    const ctx: CommandContext = {
      config,
      argv: argv.slice(argv.indexOf(name) + 1),
      out: process.stdout,
      err: process.stderr,
    };
    return await cmd.run(ctx);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`fleet: ${e.message}\n\n${usage()}`);
      return 2;
    }
    if (e instanceof FleetError) {
      if (json) process.stdout.write(`${JSON.stringify({ error: e.toPublic() })}\n`);
      process.stderr.write(`fleet: error ${e.code}: ${e.message}\n`);
      if (e.cause && process.env.FLEET_DEBUG)
        process.stderr.write(`cause: ${String((e.cause as Error).stack ?? e.cause)}\n`);
      return 1;
    }
    process.stderr.write(`fleet: internal error: ${(e as Error).stack ?? String(e)}\n`);
    return 70;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`fleet: ${String(e)}\n`);
    process.exitCode = 70;
  },
);
