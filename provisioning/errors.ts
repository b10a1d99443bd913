/**
 * Provisioning error codes, one place, each with its HTTP status. A client sees `{ error: { code, message,
 * details? } }`; the internal cause (a database error, a stack) goes to the log only. Code checks `code`.
 *
 * Errors from lower parts (pki's CSR_*, ID_INVALID; the registry's DEVICE_EXISTS, SUBJECT_NOT_FOUND, …) keep
 * their own codes and statuses: they are FleetErrors too and pass through unchanged.
 */
import { FleetError, type FleetErrorOptions } from '../pki/errors.ts';

export const PROVISIONING_ERRORS = {
  /** No client certificate, or one OpenSSL did not verify against the fleet trust. */
  CLIENT_CERT_REQUIRED: 401,
  /** The verified certificate is not a usable fleet identity (no URN, CA cert, wrong usage, expired). */
  CLIENT_CERT_INVALID: 401,
  /** The client's own certificate or its subject is revoked. */
  CLIENT_CERT_REVOKED: 403,
  /** The client's certificate was replaced by a newer one (re-enrollment); only simplereenroll takes it. */
  CLIENT_CERT_SUPERSEDED: 403,
  /** The client's subject is suspended. */
  CLIENT_SUSPENDED: 403,
  /** The certificate's kind may not use this route (a device where a station is required, …). */
  IDENTITY_KIND_FORBIDDEN: 403,
  /** The station exists in no registry row (a certificate without its principal). */
  STATION_UNKNOWN: 403,
  /** The product is not in the station's scope (there is no product catalogue beyond the scopes). */
  PRODUCT_NOT_IN_SCOPE: 403,
  /** The station's hourly quota is spent. */
  QUOTA_EXHAUSTED: 429,
  /** The same device id and key were issued, but another key was sent (from pki issuance). */
  DEVICE_KEY_CONFLICT: 409,
  /** simplereenroll: the CSR names another subject than the authenticated device. */
  REENROLL_IDENTITY_MISMATCH: 403,
  DEVICE_NOT_FOUND: 404,
  PRINCIPAL_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  /** The body is not valid JSON. */
  BODY_MALFORMED_JSON: 400,
  /** The body is JSON but misses a field or has one of the wrong type or shape. */
  BODY_INVALID: 400,
  /** A query string parameter is missing or malformed. */
  QUERY_INVALID: 400,
  BODY_TOO_LARGE: 413,
  /** A batch line is longer than its limit. */
  LINE_TOO_LARGE: 413,
  CONTENT_TYPE_UNSUPPORTED: 415,
  /** EST: the body is not base64 (RFC 7030 §4.2.1). */
  EST_BODY_INVALID: 400,
  /** EST without a label and a station whose scope is not exactly one product. */
  EST_PRODUCT_REQUIRED: 400,
  /** Client side: the API could not be reached at all. */
  API_UNREACHABLE: 503,
  /** Client side: the operator certificate or key is not where `fleet init` puts it. */
  OPERATOR_CREDENTIALS_MISSING: 400,
  /** The registry did not answer (health check). */
  SERVICE_UNAVAILABLE: 503,
  INTERNAL: 500,
} as const;

export type ProvisioningErrorCode = keyof typeof PROVISIONING_ERRORS;

export class ProvisioningError extends FleetError {
  declare readonly code: ProvisioningErrorCode;
  constructor(
    code: ProvisioningErrorCode,
    publicMessage: string,
    opts: Omit<FleetErrorOptions, 'httpStatus'> = {},
  ) {
    super(code, publicMessage, { ...opts, httpStatus: PROVISIONING_ERRORS[code] });
    this.name = 'ProvisioningError';
  }
}

/** Any thrown value as the FleetError a client may see: unknown errors become INTERNAL (cause logged). */
export function toFleetError(e: unknown): FleetError {
  if (e instanceof FleetError) return e;
  return new ProvisioningError('INTERNAL', 'internal error', { cause: e });
}
