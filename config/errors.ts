/**
 * Configuration's typed errors, declared with pki/error-scheme.ts. A bad setting is refused at start, once,
 * with the variable it came from (`details.name` where there is one); code checks `code`, never the message.
 */
import { defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const CONFIG_ERRORS = defineErrors('config', {
  CONFIG_INVALID: { status: 400, message: 'a setting is missing, unreadable or has a bad value' },
});

export type ConfigErrorCode = ErrorCode<typeof CONFIG_ERRORS>;

export class ConfigError extends FleetError {
  declare readonly code: ConfigErrorCode;
  constructor(message: string, details?: Record<string, unknown>, cause?: unknown) {
    super(CONFIG_ERRORS.get('CONFIG_INVALID'), message, {
      details,
      ...(cause === undefined ? {} : { cause }),
    });
    this.name = 'ConfigError';
  }
}
