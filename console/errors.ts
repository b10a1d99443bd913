/**
 * Console error codes, declared in one place with their HTTP statuses (pki/error-scheme.ts). Pages show the
 * public message; JSON answers carry `{ error: { code, message } }`; the internal cause goes to the log
 * only. Code checks `code`.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const CONSOLE_ERRORS = defineErrors('console', {
  CONSOLE_SIGN_IN_REQUIRED: {
    status: 401,
    message: 'no session cookie, or one that names no live session (ended, expired, idle, revoked)',
  },
  CONSOLE_LINK_INVALID: { status: 401, message: 'the sign-in link is unknown, expired or already used' },
  CONSOLE_OPERATOR_INACTIVE: { status: 403, message: "the session's operator is suspended or revoked" },
  CONSOLE_CSRF_INVALID: { status: 403, message: "a state-changing request without the session's CSRF token" },
  CONSOLE_ORIGIN_INVALID: {
    status: 403,
    message: 'a state-changing request from another origin (or with no Origin header)',
  },
  CONSOLE_INPUT_INVALID: { status: 400, message: 'a form or query field is missing or malformed' },
  CONSOLE_NOT_FOUND: { status: 404, message: 'no such page' },
  CONSOLE_DISABLED: {
    status: 409,
    message: 'the console is switched off (FLEET_CONSOLE=off): no link can be made',
  },
  /** The same code, status and message as provisioning's INTERNAL (the console is served by provisioning). */
  INTERNAL: { status: 500, message: 'internal error' },
});

export type ConsoleErrorCode = ErrorCode<typeof CONSOLE_ERRORS>;

export class ConsoleError extends FleetError {
  declare readonly code: ConsoleErrorCode;
  constructor(code: ConsoleErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(CONSOLE_ERRORS.get(code), publicMessage, opts);
    this.name = 'ConsoleError';
  }
}
