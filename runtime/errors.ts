/**
 * The runtime's typed errors: what stops a Fleet process from starting on this machine. Each names the
 * setting to change (`details.variable`); code checks `code`, never the message.
 */
import { FleetError } from '../pki/errors.ts';

export const RUNTIME_ERROR_CODES = {
  /** A port Fleet would listen on is taken (another process, or a Fleet already running). */
  PORT_IN_USE: 'a port Fleet listens on is in use',
  /** Two services were configured on the same port. */
  PORT_CONFLICT: 'two services are configured on the same port',
  /** The listen address cannot be bound here (not an address of this machine, or a privileged port). */
  LISTEN_FAILED: 'a listener cannot be bound with these settings',
} as const;

export type RuntimeErrorCode = keyof typeof RUNTIME_ERROR_CODES;

export class RuntimeError extends FleetError {
  declare readonly code: RuntimeErrorCode;
  constructor(code: RuntimeErrorCode, message: string, details: Record<string, unknown>, cause?: unknown) {
    super(code, message, { details, httpStatus: 409, ...(cause === undefined ? {} : { cause }) });
    this.name = 'RuntimeError';
  }
}
