/** The shape of a `fleet` command, what it runs with, and the usage error every command may throw. */
import type { FleetConfig } from '../config/index.ts';

/** A mistake in the command line: `fleet` prints the message and the usage text and exits 2. */
export class UsageError extends Error {}

export interface CommandContext {
  config: FleetConfig;
  /** The arguments after the command's name. */
  argv: string[];
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export interface Command {
  /** Runs the command; returns the exit code. */
  run(ctx: CommandContext): Promise<number>;
}

/** A subcommand (`fleet device revoke …`): the arguments after its name. */
export type Sub = (ctx: CommandContext, argv: string[]) => Promise<number>;

/** A command made of subcommands: the first argument names one. */
export function dispatch(name: string, subs: Record<string, Sub>): Command {
  return {
    async run(ctx) {
      const [sub, ...rest] = ctx.argv;
      const fn = sub ? subs[sub] : undefined;
      if (!fn) throw new UsageError(`${name} needs one of: ${Object.keys(subs).join(', ')}`);
      return fn(ctx, rest);
    },
  };
}
