/**
 * Registry error codes, all in one place. Code checks `code`, never the message.
 */
import { FleetError, type FleetErrorOptions } from '../pki/errors.ts';

export const REGISTRY_ERRORS = {
  /** Another live process holds the PGlite data directory. */
  REGISTRY_LOCKED: 503,
  /** A committed migration could not be applied. */
  REGISTRY_MIGRATION_FAILED: 500,
  /** The registry was used after close(). */
  REGISTRY_CLOSED: 503,
  DEVICE_EXISTS: 409,
  PRINCIPAL_EXISTS: 409,
  /** The serial or the fingerprint is already recorded. */
  CERTIFICATE_EXISTS: 409,
  SUBJECT_NOT_FOUND: 404,
  CERTIFICATE_NOT_FOUND: 404,
  /** A revoked device id met again (issue, reset): revocation is final, enroll under a new id. */
  DEVICE_REVOKED: 409,
  /** Revoked is final: a revoked subject or certificate cannot change status. */
  ALREADY_REVOKED: 409,
  /** Superseding needs an active certificate (not superseded, not revoked). */
  CERTIFICATE_NOT_ACTIVE: 409,
  /** The subject is suspended or revoked and may not get a new certificate. */
  SUBJECT_NOT_ACTIVE: 409,
  INVALID_STATUS_TRANSITION: 409,
  /** A malformed argument (serial not lowercase hex, bad time window, …). */
  REGISTRY_INVALID_INPUT: 400,
  /**
   * An id breaks the id rules (design.md). The same public code and status as pki's ID_INVALID, which the
   * same rule (pki/ids.ts idProblem) raises outside the registry: a client sees one code for one mistake.
   */
  ID_INVALID: 400,
} as const;

export type RegistryErrorCode = keyof typeof REGISTRY_ERRORS;

export class RegistryError extends FleetError {
  declare readonly code: RegistryErrorCode;

  constructor(
    code: RegistryErrorCode,
    publicMessage: string,
    opts: Omit<FleetErrorOptions, 'httpStatus'> = {},
  ) {
    super(code, publicMessage, { ...opts, httpStatus: REGISTRY_ERRORS[code] });
    this.name = 'RegistryError';
  }
}
