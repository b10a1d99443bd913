/**
 * The broker's typed errors, declared in one place (pki/error-scheme.ts). Code checks `code` (stable), never
 * the message text. A refusal of an MQTT connection is declared with its MQTT 3.1.1 CONNACK return code; the
 * internal cause goes to the log only.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';
import type { AuthFailureReason } from './metrics.ts';

/** [MQTT-3.2.2.3] CONNACK return codes (3.1.1). */
export const CONNACK = {
  ACCEPTED: 0,
  UNACCEPTABLE_PROTOCOL: 1,
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USERNAME_OR_PASSWORD: 4,
  NOT_AUTHORIZED: 5,
} as const;

const NOT_AUTHORIZED = CONNACK.NOT_AUTHORIZED;

export const BROKER_ERRORS = defineErrors('broker', {
  /** `details.position` names the offending field. Found at start-up: the broker does not start. */
  BROKER_POLICY_INVALID: { status: 500, message: 'a policy document (file or object) is malformed' },
  BROKER_POLICY_UNREADABLE: {
    status: 400,
    message: 'the policy file could not be read or parsed as JSON/YAML',
  },
  BROKER_TOPIC_INVALID: {
    status: 400,
    message: 'a topic or topic filter is not valid MQTT (empty, too long, NUL, misplaced wildcard)',
  },
  BROKER_ACL_DENIED: {
    status: 403,
    connack: NOT_AUTHORIZED,
    message: 'the policy denied a publish or subscribe',
  },
  BROKER_MQ_CLOSED: { status: 503, message: 'the message queue was closed' },
  BROKER_REDIS_URL_INVALID: { status: 500, message: 'REDIS_URL is not a usable redis:// or rediss:// URL' },
  BROKER_REDIS_UNAVAILABLE: { status: 500, message: 'Redis did not answer within the start-up timeout' },
  BROKER_TICKET_KEYS_INVALID: {
    status: 500,
    message: 'the TLS ticket key file is missing, unreadable or not 48 bytes',
  },
  /** `details.reason` says how (missing, malformed, too_long, timeout, incomplete). */
  BROKER_PROXY_HEADER_INVALID: { status: 400, message: 'the PROXY protocol header was refused' },

  // A refused CONNECT: BROKER_CONNECT_<reason>, the reason being the metrics label and log field
  // (metrics.ts AuthFailureReason); the client sees only the return code.
  BROKER_CONNECT_NO_CERTIFICATE: { connack: NOT_AUTHORIZED, message: 'no client certificate' },
  BROKER_CONNECT_NOT_AUTHORIZED_TLS: {
    connack: NOT_AUTHORIZED,
    message: 'the client certificate did not verify against the fleet trust',
  },
  BROKER_CONNECT_CERTIFICATE_INVALID: {
    connack: NOT_AUTHORIZED,
    message: 'the client certificate is not a usable fleet identity',
  },
  BROKER_CONNECT_KIND_NOT_ALLOWED: {
    connack: NOT_AUTHORIZED,
    message: 'this kind of identity may not use MQTT (only devices and services)',
  },
  BROKER_CONNECT_CLIENT_ID_MISMATCH: {
    connack: NOT_AUTHORIZED,
    message: "the client id is not the certificate's id",
  },
  BROKER_CONNECT_CLIENT_ID_CONFLICT: {
    connack: NOT_AUTHORIZED,
    message: 'a live connection of another kind holds this id',
  },
  BROKER_CONNECT_UNKNOWN_IDENTITY: { connack: NOT_AUTHORIZED, message: 'the identity is in no registry row' },
  BROKER_CONNECT_SUSPENDED: { connack: NOT_AUTHORIZED, message: 'the subject is suspended' },
  BROKER_CONNECT_REVOKED: { connack: NOT_AUTHORIZED, message: 'the subject is revoked' },
  BROKER_CONNECT_CERTIFICATE_REVOKED: { connack: NOT_AUTHORIZED, message: 'the certificate is revoked' },
  BROKER_CONNECT_CERTIFICATE_SUPERSEDED: {
    connack: NOT_AUTHORIZED,
    message: 'the certificate was superseded by a newer one and its grace period is over',
  },
  BROKER_CONNECT_WILL_DENIED: {
    connack: NOT_AUTHORIZED,
    message: 'the policy denies a publish to the will topic',
  },
  /** [MQTT-3.1.2-24]: a keepalive below the broker's minimum. */
  BROKER_CONNECT_KEEPALIVE_OUT_OF_BOUNDS: {
    connack: CONNACK.IDENTIFIER_REJECTED,
    message: 'the keepalive is below the minimum',
  },
  BROKER_CONNECT_REGISTRY_UNAVAILABLE: {
    connack: CONNACK.SERVER_UNAVAILABLE,
    message: 'the registry did not answer',
  },
  BROKER_CONNECT_INTERNAL_ERROR: { connack: CONNACK.SERVER_UNAVAILABLE, message: 'internal error' },
});

export type BrokerErrorCode = ErrorCode<typeof BROKER_ERRORS>;

export class BrokerError extends FleetError {
  declare readonly code: BrokerErrorCode;
  constructor(code: BrokerErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(BROKER_ERRORS.get(code), publicMessage, opts);
    this.name = 'BrokerError';
  }
}

/** A bad policy document; `position` is a path such as `rules[3].topics[0]`. */
export class PolicyError extends BrokerError {
  readonly position: string;
  constructor(position: string, problem: string, opts: DeclaredErrorOptions = {}) {
    super('BROKER_POLICY_INVALID', `policy ${position}: ${problem}`, {
      ...opts,
      details: { ...opts.details, position },
    });
    this.name = 'PolicyError';
    this.position = position;
  }
}

export class TopicError extends BrokerError {
  constructor(problem: string, opts: DeclaredErrorOptions = {}) {
    super('BROKER_TOPIC_INVALID', problem, opts);
    this.name = 'TopicError';
  }
}

export class AclDeniedError extends BrokerError {
  constructor(action: 'publish' | 'subscribe', opts: DeclaredErrorOptions = {}) {
    super('BROKER_ACL_DENIED', `${action} not authorized`, opts);
    this.name = 'AclDeniedError';
  }
}

/** Start-up of the cluster parts (Redis, TLS ticket keys): the broker does not start. */
export class ClusterError extends BrokerError {
  constructor(
    code: 'BROKER_REDIS_URL_INVALID' | 'BROKER_REDIS_UNAVAILABLE' | 'BROKER_TICKET_KEYS_INVALID',
    message: string,
    cause?: unknown,
  ) {
    super(code, message, cause === undefined ? {} : { cause });
    this.name = 'ClusterError';
  }
}

/** A refused CONNECT's code: `BROKER_CONNECT_` and the reason. Every reason has its declaration. */
export type ConnectRefusalCode = `BROKER_CONNECT_${Uppercase<AuthFailureReason>}`;
// A reason added to metrics.ts without its declaration here fails the typecheck on this line.
const connectRefusalDeclared: ConnectRefusalCode extends BrokerErrorCode ? true : false = true;
void connectRefusalDeclared;

/** The declaration of a refused CONNECT, by its reason. */
export function connectRefusal(reason: AuthFailureReason) {
  return BROKER_ERRORS.get(`BROKER_CONNECT_${reason.toUpperCase()}` as ConnectRefusalCode);
}

/**
 * A refused CONNECT: `reason` is the metrics label and log field, `code` and `connackCode` come from the
 * declaration; `detail` goes to the log only.
 */
export class ConnectRefused extends BrokerError {
  constructor(
    readonly reason: AuthFailureReason,
    readonly detail?: string,
  ) {
    super(`BROKER_CONNECT_${reason.toUpperCase()}` as ConnectRefusalCode);
    this.name = 'ConnectRefused';
  }
}
