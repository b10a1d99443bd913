/**
 * The simulator's typed errors, one place. Code checks `code` (stable), never the message text; the
 * message names what was wrong and, where it helps, what to do instead.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const SIM_ERRORS = defineErrors('device-sim', {
  /** A command-line flag is unknown, missing its value, or has a value of the wrong shape. */
  SIM_FLAG_INVALID: { status: 400, message: 'a flag is unknown or has a bad value' },
  /** A scenario (file or flags) breaks a rule; `details.position` names the field, e.g. `phases[2].qos`. */
  SIM_SCENARIO_INVALID: { status: 400, message: 'the scenario is invalid' },
  /** The scenario file cannot be read or is not JSON. */
  SIM_SCENARIO_UNREADABLE: { status: 400, message: 'the scenario file cannot be read or parsed' },
  /** The target is neither loopback nor an address the user named. */
  SIM_TARGET_FORBIDDEN: { status: 400, message: 'the target is not loopback and was not named by the user' },
  /** An identity directory is missing, unreadable, or holds keys without certificates (or the reverse). */
  SIM_IDENTITIES_INVALID: { status: 400, message: 'the identity directory is unusable' },
  /** The identity cache was made for another CA or key type. */
  SIM_IDENTITIES_STALE: { status: 400, message: 'the identity cache does not fit this run' },
  /** Enrollment of simulated devices failed. */
  SIM_ENROLL_FAILED: { status: 400, message: 'enrolling a simulated device failed' },
  /** Revoking a device through the operator API failed. */
  SIM_REVOKE_FAILED: { status: 400, message: 'revoking a device failed' },
  /** A worker process died or stopped answering. */
  SIM_WORKER_FAILED: { status: 400, message: 'a load worker failed' },
});

export type SimErrorCode = ErrorCode<typeof SIM_ERRORS>;

export class SimError extends FleetError {
  declare readonly code: SimErrorCode;
  constructor(code: SimErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(SIM_ERRORS.get(code), publicMessage, opts);
    this.name = 'SimError';
  }
}

/** A bad scenario field; `position` is a path such as `phases[1].ratePerDevice`. */
export class ScenarioError extends SimError {
  readonly position: string;
  constructor(position: string, problem: string, opts: DeclaredErrorOptions = {}) {
    super('SIM_SCENARIO_INVALID', `scenario ${position}: ${problem}`, {
      ...opts,
      details: { ...opts.details, position },
    });
    this.name = 'ScenarioError';
    this.position = position;
  }
}

/** A bad command-line flag; `flag` names it (`--qos`). */
export class FlagError extends SimError {
  readonly flag: string;
  constructor(flag: string, problem: string) {
    super('SIM_FLAG_INVALID', `${flag}: ${problem}`, { details: { flag } });
    this.name = 'FlagError';
    this.flag = flag;
  }
}
