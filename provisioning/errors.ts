/**
 * Provisioning error codes, declared in one place with their HTTP statuses (pki/error-scheme.ts). A client
 * sees `{ error: { code, message, details? } }`; the internal cause (a database error, a stack) goes to the
 * log only. Code checks `code`.
 *
 * Errors from lower parts (pki's CSR_*, ID_INVALID; the registry's DEVICE_EXISTS, SUBJECT_NOT_FOUND, …) keep
 * their own codes and statuses: they are FleetErrors too and pass through unchanged.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from '../pki/errors.ts';

export const PROVISIONING_ERRORS = defineErrors('provisioning', {
  CLIENT_CERT_REQUIRED: {
    status: 401,
    message: 'no client certificate, or one that does not verify against the fleet trust',
  },
  CLIENT_CERT_INVALID: {
    status: 401,
    message:
      'the verified certificate is not a usable fleet identity (no URN, CA cert, wrong usage, expired)',
  },
  CLIENT_CERT_REVOKED: { status: 403, message: "the client's own certificate or its subject is revoked" },
  CLIENT_CERT_SUPERSEDED: {
    status: 403,
    message:
      "the client's certificate was replaced by a newer one (re-enrollment); only simplereenroll takes it",
  },
  CLIENT_SUSPENDED: { status: 403, message: "the client's subject is suspended" },
  IDENTITY_KIND_FORBIDDEN: {
    status: 403,
    message: "the certificate's kind may not use this route (a device where a station is required, …)",
  },
  STATION_UNKNOWN: {
    status: 403,
    message: 'the station exists in no registry row (a certificate without its principal)',
  },
  PRODUCT_NOT_IN_SCOPE: { status: 403, message: "the product is not in the station's scope" },
  QUOTA_EXHAUSTED: { status: 429, message: "the station's hourly quota is spent" },
  DEVICE_KEY_CONFLICT: {
    status: 409,
    message: 'the device id is enrolled with another key than the one sent',
  },
  REENROLL_IDENTITY_MISMATCH: {
    status: 403,
    message: 'simplereenroll: the CSR names another subject than the authenticated device',
  },
  DEVICE_NOT_FOUND: { status: 404, message: 'no such device' },
  PRINCIPAL_NOT_FOUND: { status: 404, message: 'no such principal' },
  ROUTE_NOT_FOUND: { status: 404, message: 'no such route' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'the route does not take this method' },
  URL_INVALID: { status: 400, message: 'the URL is malformed (bad percent-encoding)' },
  URL_TOO_LONG: { status: 414, message: 'a path segment is longer than the router takes' },
  BODY_MALFORMED_JSON: { status: 400, message: 'the body is not valid JSON' },
  BODY_INVALID: {
    status: 400,
    message: 'the body is JSON but misses a field or has one of the wrong type or shape',
  },
  QUERY_INVALID: { status: 400, message: 'a query string parameter is missing or malformed' },
  BODY_TOO_LARGE: { status: 413, message: 'the body is over its size limit' },
  LINE_TOO_LARGE: { status: 413, message: 'a batch line is longer than its limit' },
  CONTENT_TYPE_UNSUPPORTED: { status: 415, message: 'the route does not take this content type' },
  EST_BODY_INVALID: { status: 400, message: 'EST: the body is not base64 (RFC 7030 §4.2.1)' },
  EST_PRODUCT_REQUIRED: {
    status: 400,
    message: 'EST without a label, and a station whose scope is not exactly one product',
  },
  API_UNREACHABLE: { status: 503, message: 'client side: the API could not be reached at all' },
  /** Client side: the API answered an error status without a Fleet error body (a proxy's page, say). */
  API_ERROR: { status: 502, message: 'client side: the API answered an error without a code' },
  OPERATOR_CREDENTIALS_MISSING: {
    status: 400,
    message: 'client side: the operator certificate or key is not where `fleet init` puts it',
  },
  SERVICE_UNAVAILABLE: { status: 503, message: 'the registry did not answer (health check)' },
  INTERNAL: { status: 500, message: 'internal error' },
});

export type ProvisioningErrorCode = ErrorCode<typeof PROVISIONING_ERRORS>;

export class ProvisioningError extends FleetError {
  declare readonly code: ProvisioningErrorCode;
  constructor(code: ProvisioningErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(PROVISIONING_ERRORS.get(code), publicMessage, opts);
    this.name = 'ProvisioningError';
  }
}

/**
 * An error the provisioning API answered, as the client relays it: the service's own code, status and
 * public message (declared by the part that threw it, on the service's side), or API_ERROR when the answer
 * carried no Fleet error.
 */
export class ApiAnswerError extends FleetError {
  constructor(
    answer: { code?: string; message?: string; details?: Record<string, unknown> } | undefined,
    status: number,
  ) {
    // The status the API answered (not API_ERROR's declared 502): the caller reads what the service said.
    super(answer?.code ?? 'API_ERROR', answer?.message ?? `HTTP ${status}`, {
      httpStatus: status,
      ...(answer?.details ? { details: answer.details } : {}),
    });
    this.name = 'ApiAnswerError';
  }
}

/** Any thrown value as the FleetError a client may see: unknown errors become INTERNAL (cause logged). */
export function toFleetError(e: unknown): FleetError {
  if (e instanceof FleetError) return e;
  return new ProvisioningError('INTERNAL', 'internal error', { cause: e });
}
