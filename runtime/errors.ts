/**
 * The runtime's typed errors, declared with pki/error-scheme.ts: what stops a Fleet process from starting on
 * this machine. Each names the setting to change (`details.variable`); code checks `code`, never the message.
 */
import { defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const RUNTIME_ERRORS = defineErrors('runtime', {
  /** Another process, or a Fleet already running. */
  PORT_IN_USE: { status: 409, message: 'a port Fleet listens on is in use' },
  PORT_CONFLICT: { status: 409, message: 'two services are configured on the same port' },
  /** Not an address of this machine, or a privileged port. */
  LISTEN_FAILED: { status: 409, message: 'a listener cannot be bound with these settings' },
});

export type RuntimeErrorCode = ErrorCode<typeof RUNTIME_ERRORS>;

export class RuntimeError extends FleetError {
  declare readonly code: RuntimeErrorCode;
  constructor(code: RuntimeErrorCode, message: string, details: Record<string, unknown>, cause?: unknown) {
    super(RUNTIME_ERRORS.get(code), message, { details, ...(cause === undefined ? {} : { cause }) });
    this.name = 'RuntimeError';
  }
}
