/**
 * Configuration's typed errors. A bad setting is refused at start, once, with the variable it came from
 * (`details.name` where there is one); code checks `code`, never the message text.
 */
import { FleetError } from '../pki/errors.ts';

export class ConfigError extends FleetError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('CONFIG_INVALID', message, { details });
    this.name = 'ConfigError';
  }
}
