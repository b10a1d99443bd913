/**
 * Typed errors for the whole system. Every refusal carries a stable `code` (what code checks), an HTTP
 * status and MQTT CONNACK return code where they apply, and a public message safe to show a client.
 * The internal cause (`cause`) goes to the log, never to the client.
 *
 * Each part keeps its own codes in its own errors.ts and builds on FleetError; this base lives in pki/
 * because it is the lowest part.
 */
export interface FleetErrorOptions {
  /** HTTP status for API answers (default 400). */
  httpStatus?: number;
  /** MQTT 3.1.1 CONNACK return code where the error refuses a connection. */
  connackCode?: number;
  /** Internal cause: logged, never shown to a client. */
  cause?: unknown;
  /** Extra public, structured detail (field names, limits). Must not contain secrets. */
  details?: Record<string, unknown>;
}

export class FleetError extends Error {
  readonly code: string;
  readonly httpStatus: number;
  readonly connackCode: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, publicMessage: string, opts: FleetErrorOptions = {}) {
    super(publicMessage, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FleetError';
    this.code = code;
    this.httpStatus = opts.httpStatus ?? 400;
    this.connackCode = opts.connackCode;
    this.details = opts.details;
  }

  /** What a client may see. */
  toPublic(): { code: string; message: string; details?: Record<string, unknown> } {
    return this.details
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }
}

export function isFleetError(e: unknown, code?: string): e is FleetError {
  return e instanceof FleetError && (code === undefined || e.code === code);
}

/**
 * pki/ error codes, one place. Each refusal has its own code; code checks `code`, never the message.
 */
export const PKI_ERROR_CODES = {
  ID_INVALID: 'an id breaks the id rules (design.md)',
  CSR_MALFORMED: 'the CSR is not a DER or PEM PKCS#10 request',
  CSR_TOO_LARGE: 'the CSR is over the size limit',
  CSR_SIGNATURE_INVALID: 'the CSR signature does not verify (no proof of possession)',
  CSR_SIGNATURE_ALGORITHM_UNSUPPORTED: 'the CSR is signed with an algorithm we do not accept',
  CSR_KEY_UNSUPPORTED: 'the CSR key type is not P-256, P-384, Ed25519 or RSA',
  CSR_CURVE_UNSUPPORTED: 'the CSR key is on a curve other than P-256 or P-384',
  CSR_KEY_TOO_WEAK: 'the CSR key is RSA shorter than 2048 bits',
  CSR_SUBJECT_MISMATCH: 'the CSR subject CN disagrees with the requested id',
  CSR_SUBJECT_INVALID: 'the CSR subject is not usable',
  CERT_MALFORMED: 'a certificate could not be parsed',
  CERT_NOT_FLEET_IDENTITY: 'the certificate carries no single urn:fleet identity',
  CERT_IDENTITY_MISMATCH: 'the certificate CN and SAN URI disagree',
  CERT_IS_CA: 'a CA certificate was presented as a client',
  CERT_WRONG_USAGE: 'the certificate lacks the extended key usage for this use',
  CERT_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: 'the certificate is not yet valid',
  CERT_UNTRUSTED: 'the certificate was not issued by this fleet',
  PROFILE_INVALID: 'an issuing request does not fit its profile',
  KEY_UNSUPPORTED: 'a CA key of an unsupported type',
  KEY_EXISTS: 'a key exists already and is never overwritten',
  KEY_MISSING: 'a key is not in the key store',
  KEY_NAME_INVALID: 'a bad key name',
  KEY_DECRYPT_FAILED: 'a key could not be decrypted',
  PASSPHRASE_WEAK: 'the CA key passphrase is too short',
  CA_EXISTS: 'a CA exists already and is never overwritten',
  CA_MISSING: 'no CA in the data directory',
  CA_INVALID: 'the CA files are inconsistent',
  CRL_INVALID: 'a CRL request is invalid',
  OCSP_MALFORMED: 'an OCSP request could not be parsed',
  OCSP_INVALID: 'an OCSP response cannot be built from what was given',
  PKCS7_INVALID: 'a PKCS#7 certs-only message is invalid',
} as const;
export type PkiErrorCode = keyof typeof PKI_ERROR_CODES;

export class PkiError extends FleetError {
  declare readonly code: PkiErrorCode;
  constructor(code: PkiErrorCode, publicMessage: string, opts: FleetErrorOptions = {}) {
    super(code, publicMessage, opts);
    this.name = 'PkiError';
  }
}
