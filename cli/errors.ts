/**
 * The CLI's typed errors, declared with pki/error-scheme.ts. A mistake on the command line is a UsageError
 * (exit 2) with a stable code; its message names the flag or word at fault and, where one is close, what
 * was probably meant. Code checks `code`, never the message.
 */
import { defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const CLI_ERRORS = defineErrors('cli', {
  /** `details.nearest` when one is close. */
  USAGE_UNKNOWN_COMMAND: { status: 400, message: 'no such command or subcommand' },
  /** `details.nearest` when one is close. Never ignored. */
  USAGE_UNKNOWN_FLAG: { status: 400, message: 'a flag the command does not take' },
  /** A negative count, a value outside an enum, … */
  USAGE_FLAG_VALUE: { status: 400, message: 'a flag has a missing or bad value' },
  USAGE_MISSING: { status: 400, message: 'a required flag or argument is missing' },
  USAGE_UNEXPECTED_ARGUMENT: { status: 400, message: 'an argument the command does not take' },
  /** Flags that cannot go together, or one that needs another. */
  USAGE_CONFLICT: { status: 400, message: 'flags that do not go together' },
  USAGE_INVALID: { status: 400, message: 'the command line is not valid' },
  /** `fleet device issue --csr FILE`: the file cannot be read. */
  CSR_UNREADABLE: { status: 400, message: 'the CSR file cannot be read' },
});

export type CliErrorCode = ErrorCode<typeof CLI_ERRORS>;
type UsageCode = Extract<CliErrorCode, `USAGE_${string}`>;

export class CliError extends FleetError {
  declare readonly code: CliErrorCode;
  constructor(
    code: CliErrorCode,
    message?: string,
    opts: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(CLI_ERRORS.get(code), message, opts);
    this.name = 'CliError';
  }
}

/** A mistake in the command line: `fleet` prints the message and where to find help, and exits 2. */
export class UsageError extends CliError {
  declare readonly code: UsageCode;
  /** The command whose help fits (e.g. `device issue`), for the "see --help" line. */
  helpFor: string | undefined;
  /** That command's usage line, when known. */
  usage: string | undefined;

  constructor(
    message: string,
    opts: { code?: UsageCode; details?: Record<string, unknown>; helpFor?: string; usage?: string } = {},
  ) {
    super(opts.code ?? 'USAGE_INVALID', message, opts.details ? { details: opts.details } : {});
    this.name = 'UsageError';
    this.helpFor = opts.helpFor;
    this.usage = opts.usage;
  }
}
