/**
 * The CLI's typed errors, one place. A mistake on the command line is a UsageError (exit 2) with a stable
 * code; its message names the flag or word at fault and, where one is close, what was probably meant.
 */
import { FleetError } from '../pki/errors.ts';

export const CLI_ERROR_CODES = {
  /** No such command or subcommand (`details.nearest` when one is close). */
  USAGE_UNKNOWN_COMMAND: 'no such command or subcommand',
  /** A flag the command does not take (`details.nearest` when one is close). Never ignored. */
  USAGE_UNKNOWN_FLAG: 'a flag the command does not take',
  /** A flag's value is missing or has the wrong shape (a negative count, a value outside an enum, …). */
  USAGE_FLAG_VALUE: 'a flag has a missing or bad value',
  /** A required flag or argument is missing. */
  USAGE_MISSING: 'a required flag or argument is missing',
  /** An argument the command does not take. */
  USAGE_UNEXPECTED_ARGUMENT: 'an argument the command does not take',
  /** Flags that cannot go together, or one that needs another. */
  USAGE_CONFLICT: 'flags that do not go together',
  /** Any other mistake in the command line. */
  USAGE_INVALID: 'the command line is not valid',
} as const;

export type CliErrorCode = keyof typeof CLI_ERROR_CODES;

/** A mistake in the command line: `fleet` prints the message and where to find help, and exits 2. */
export class UsageError extends FleetError {
  declare readonly code: CliErrorCode;
  /** The command whose help fits (e.g. `device issue`), for the "see --help" line. */
  helpFor: string | undefined;
  /** That command's usage line, when known. */
  usage: string | undefined;

  constructor(
    message: string,
    opts: { code?: CliErrorCode; details?: Record<string, unknown>; helpFor?: string; usage?: string } = {},
  ) {
    super(opts.code ?? 'USAGE_INVALID', message, opts.details ? { details: opts.details } : {});
    this.name = 'UsageError';
    this.helpFor = opts.helpFor;
    this.usage = opts.usage;
  }
}
