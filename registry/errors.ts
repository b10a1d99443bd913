/**
 * Registry error codes, declared in one place with their HTTP statuses (pki/error-scheme.ts). Code checks
 * `code`, never the message.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const REGISTRY_ERRORS = defineErrors('registry', {
  REGISTRY_LOCKED: { status: 503, message: 'another live process holds the PGlite data directory' },
  REGISTRY_MIGRATION_FAILED: { status: 500, message: 'a committed migration could not be applied' },
  REGISTRY_CLOSED: { status: 503, message: 'the registry was used after close()' },
  DEVICE_EXISTS: { status: 409, message: 'the device is recorded already' },
  PRINCIPAL_EXISTS: { status: 409, message: 'the principal is recorded already' },
  CERTIFICATE_EXISTS: { status: 409, message: 'the serial or the fingerprint is already recorded' },
  SUBJECT_NOT_FOUND: { status: 404, message: 'no such subject' },
  CERTIFICATE_NOT_FOUND: { status: 404, message: 'no such certificate' },
  DEVICE_REVOKED: {
    status: 409,
    message: 'a revoked device id met again (issue, reset): revocation is final, enroll under a new id',
  },
  ALREADY_REVOKED: {
    status: 409,
    message: 'revoked is final: a revoked subject or certificate cannot change status',
  },
  CERTIFICATE_NOT_ACTIVE: {
    status: 409,
    message: 'superseding needs an active certificate (not superseded, not revoked)',
  },
  SUBJECT_NOT_ACTIVE: {
    status: 409,
    message: 'the subject is suspended or revoked and may not get a new certificate',
  },
  INVALID_STATUS_TRANSITION: { status: 409, message: 'the status change is not allowed from this status' },
  REGISTRY_INVALID_INPUT: {
    status: 400,
    message: 'a malformed argument (serial not lowercase hex, bad time window, …)',
  },
  /**
   * The same public code, status and message as pki's ID_INVALID, which the same rule (pki/ids.ts idProblem)
   * raises outside the registry: a client sees one code for one mistake.
   */
  ID_INVALID: { status: 400, message: 'an id breaks the id rules (design.md)' },
});

export type RegistryErrorCode = ErrorCode<typeof REGISTRY_ERRORS>;

export class RegistryError extends FleetError {
  declare readonly code: RegistryErrorCode;

  constructor(code: RegistryErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(REGISTRY_ERRORS.get(code), publicMessage, opts);
    this.name = 'RegistryError';
  }
}
