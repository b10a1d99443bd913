/**
 * The shape of a `fleet` command, what it runs with, and the helpers that give every command the same
 * parsing and the same `--help`: `simple()` for a command with flags, `dispatch()` for one made of
 * subcommands (`fleet device issue|list|…`).
 */
import type { FleetConfig } from '../config/index.ts';
import { helpText, nearest, type Parsed, parse, type Spec } from './args.ts';
import { UsageError } from './errors.ts';

export { UsageError } from './errors.ts';

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
  /** The command's help (its `--help`), when it declares one. */
  readonly help?: string;
  /** Its declaration, for a command made by simple(). */
  readonly spec?: Spec;
  /** Its subcommands, for a command made by dispatch(). */
  readonly subcommands?: Readonly<Record<string, SubCommand>>;
}

/** A command (or subcommand) declared by its Spec: parsed strictly, with its own --help. */
export interface SubCommand {
  readonly spec: Spec;
  run(ctx: CommandContext, p: Parsed): Promise<number>;
}

/** A command with flags and no subcommands. */
export function simple(spec: Spec, run: SubCommand['run']): Command {
  return {
    help: helpText(spec),
    spec,
    async run(ctx) {
      const p = parse(spec, ctx.argv);
      if (p.help) {
        ctx.out.write(helpText(spec));
        return 0;
      }
      return run(ctx, p);
    },
  };
}

/** The help of a command made of subcommands: each one's summary, then examples. */
export function groupHelp(name: string, about: string, subs: Record<string, SubCommand>): string {
  const w = Math.max(...Object.keys(subs).map((s) => s.length));
  return [
    `usage: fleet ${name} <subcommand> [flags]`,
    '',
    about,
    '',
    'subcommands',
    ...Object.entries(subs).map(([n, s]) => `  ${n.padEnd(w)}  ${s.spec.summary}`),
    '',
    `\`fleet ${name} <subcommand> --help\` shows every flag of one, with an example. Every subcommand takes`,
    '--data DIR (the data directory, default ./data or FLEET_DATA_DIR), --json, -h/--help, and those that',
    'go through the provisioning API --local and --remote.',
    '',
    'examples',
    ...Object.values(subs).map((s) => `  ${s.spec.examples[0]}`),
    '',
  ].join('\n');
}

/**
 * A command made of subcommands: the first argument names one. With `defaultSub`, a command line that
 * names none (nothing, or flags only) runs that one (`fleet console` prints a link).
 */
export function dispatch(
  name: string,
  about: string,
  subs: Record<string, SubCommand>,
  opts: { defaultSub?: string } = {},
): Command {
  const help = groupHelp(name, about, subs);
  return {
    help,
    subcommands: subs,
    async run(ctx) {
      let [sub, ...rest] = ctx.argv;
      if (sub === '-h' || sub === '--help') {
        ctx.out.write(help);
        return 0;
      }
      if (opts.defaultSub && (sub === undefined || sub.startsWith('-'))) {
        [sub, rest] = [opts.defaultSub, ctx.argv];
      }
      if (sub === undefined) {
        ctx.err.write(help);
        return 2;
      }
      // Own properties only: `fleet device constructor` is an unknown subcommand, not Object's constructor.
      const s = Object.hasOwn(subs, sub) ? subs[sub] : undefined;
      if (!s) {
        const near = nearest(sub, Object.keys(subs));
        throw new UsageError(
          `fleet ${name} has no subcommand ${JSON.stringify(sub)}${near ? `; did you mean ${near}?` : ''} ` +
            `(it has ${Object.keys(subs).join(', ')})`,
          { code: 'USAGE_UNKNOWN_COMMAND', details: { command: sub, nearest: near }, helpFor: name },
        );
      }
      const p = parse(s.spec, rest);
      if (p.help) {
        ctx.out.write(helpText(s.spec));
        return 0;
      }
      return s.run(ctx, p);
    },
  };
}
