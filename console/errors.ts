/**
 * Console error codes, one place, each with its HTTP status. Pages show the public message; JSON answers
 * carry `{ error: { code, message } }`; the internal cause goes to the log only. Code checks `code`.
 */
import { FleetError, type FleetErrorOptions } from '../pki/errors.ts';

export const CONSOLE_ERRORS = {
  /** No session cookie, or one that names no live session (ended, expired, idle, revoked). */
  CONSOLE_SIGN_IN_REQUIRED: 401,
  /** The sign-in link is unknown, expired or already used. */
  CONSOLE_LINK_INVALID: 401,
  /** The session's operator is suspended or revoked. */
  CONSOLE_OPERATOR_INACTIVE: 403,
  /** A state-changing request without the session's CSRF token. */
  CONSOLE_CSRF_INVALID: 403,
  /** A state-changing request from another origin (or with no Origin header). */
  CONSOLE_ORIGIN_INVALID: 403,
  /** A form or query field is missing or malformed. */
  CONSOLE_INPUT_INVALID: 400,
  CONSOLE_NOT_FOUND: 404,
  /** The console is switched off (FLEET_CONSOLE=off): no link can be made. */
  CONSOLE_DISABLED: 409,
} as const;

export type ConsoleErrorCode = keyof typeof CONSOLE_ERRORS;

export class ConsoleError extends FleetError {
  declare readonly code: ConsoleErrorCode;
  constructor(
    code: ConsoleErrorCode,
    publicMessage: string,
    opts: Omit<FleetErrorOptions, 'httpStatus'> = {},
  ) {
    super(code, publicMessage, { ...opts, httpStatus: CONSOLE_ERRORS[code] });
    this.name = 'ConsoleError';
  }
}
