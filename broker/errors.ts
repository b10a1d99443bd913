/**
 * The broker's typed errors. Code checks `code` (stable), never the message text. Each error carries the
 * MQTT 3.1.1 CONNACK return code where it refuses a connection; the internal cause goes to the log only.
 */
import { FleetError, type FleetErrorOptions } from '../pki/errors.ts';

export const BROKER_ERROR_CODES = {
  /** A policy document (file or object) is malformed; `details.position` names the offending field. */
  POLICY_INVALID: 'BROKER_POLICY_INVALID',
  /** The policy file could not be read or parsed as JSON/YAML. */
  POLICY_UNREADABLE: 'BROKER_POLICY_UNREADABLE',
  /** A topic or topic filter is not valid MQTT (empty, too long, NUL, misplaced wildcard). */
  TOPIC_INVALID: 'BROKER_TOPIC_INVALID',
  /** The policy denied a publish or subscribe. */
  ACL_DENIED: 'BROKER_ACL_DENIED',
  /** The message queue was closed. */
  MQ_CLOSED: 'BROKER_MQ_CLOSED',
} as const;

export type BrokerErrorCode = (typeof BROKER_ERROR_CODES)[keyof typeof BROKER_ERROR_CODES];

/** [MQTT-3.2.2.3] CONNACK return codes (3.1.1). */
export const CONNACK = {
  ACCEPTED: 0,
  UNACCEPTABLE_PROTOCOL: 1,
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USERNAME_OR_PASSWORD: 4,
  NOT_AUTHORIZED: 5,
} as const;

export class BrokerError extends FleetError {
  constructor(code: BrokerErrorCode, publicMessage: string, opts: FleetErrorOptions = {}) {
    super(code, publicMessage, opts);
    this.name = 'BrokerError';
  }
}

/** A bad policy document; `position` is a path such as `rules[3].topics[0]`. */
export class PolicyError extends BrokerError {
  readonly position: string;
  constructor(position: string, problem: string, opts: FleetErrorOptions = {}) {
    super(BROKER_ERROR_CODES.POLICY_INVALID, `policy ${position}: ${problem}`, {
      ...opts,
      httpStatus: 500,
      details: { ...opts.details, position },
    });
    this.name = 'PolicyError';
    this.position = position;
  }
}

export class TopicError extends BrokerError {
  constructor(problem: string, opts: FleetErrorOptions = {}) {
    super(BROKER_ERROR_CODES.TOPIC_INVALID, problem, opts);
    this.name = 'TopicError';
  }
}

export class AclDeniedError extends BrokerError {
  constructor(action: 'publish' | 'subscribe', opts: FleetErrorOptions = {}) {
    super(BROKER_ERROR_CODES.ACL_DENIED, `${action} not authorized`, {
      ...opts,
      httpStatus: 403,
      connackCode: CONNACK.NOT_AUTHORIZED,
    });
    this.name = 'AclDeniedError';
  }
}
