/**
 * Typed errors for pki/, and the error scheme every part builds on (pki/error-scheme.ts, re-exported here
 * because pki is the lowest part and every part has always imported FleetError from this file).
 *
 * Each refusal has its own code; code checks `code`, never the message. Every pki code is a 400: what
 * reaches a client from pki is a CSR, certificate or request it sent that could not be taken.
 */
import { type DeclaredErrorOptions, defineErrors, type ErrorCode, FleetError } from './error-scheme.ts';

export {
  type DeclaredErrorOptions,
  defineErrors,
  type ErrorCode,
  type ErrorDeclaration,
  type ErrorSpec,
  type ErrorTable,
  FleetError,
  type FleetErrorOptions,
  isFleetError,
} from './error-scheme.ts';

export const PKI_ERRORS = defineErrors('pki', {
  ID_INVALID: { status: 400, message: 'an id breaks the id rules (design.md)' },
  CSR_MALFORMED: { status: 400, message: 'the CSR is not a DER or PEM PKCS#10 request' },
  CSR_TOO_LARGE: { status: 400, message: 'the CSR is over the size limit' },
  CSR_SIGNATURE_INVALID: {
    status: 400,
    message: 'the CSR signature does not verify (no proof of possession)',
  },
  CSR_SIGNATURE_ALGORITHM_UNSUPPORTED: {
    status: 400,
    message: 'the CSR is signed with an algorithm we do not accept',
  },
  CSR_KEY_UNSUPPORTED: { status: 400, message: 'the CSR key type is not P-256, P-384, Ed25519 or RSA' },
  CSR_CURVE_UNSUPPORTED: { status: 400, message: 'the CSR key is on a curve other than P-256 or P-384' },
  CSR_KEY_TOO_WEAK: { status: 400, message: 'the CSR key is RSA shorter than 2048 bits' },
  CSR_SUBJECT_MISMATCH: { status: 400, message: 'the CSR subject CN disagrees with the requested id' },
  CSR_SUBJECT_INVALID: { status: 400, message: 'the CSR subject is not usable' },
  CERT_MALFORMED: { status: 400, message: 'a certificate could not be parsed' },
  CERT_NOT_FLEET_IDENTITY: { status: 400, message: 'the certificate carries no single urn:fleet identity' },
  CERT_IDENTITY_MISMATCH: { status: 400, message: 'the certificate CN and SAN URI disagree' },
  CERT_IS_CA: { status: 400, message: 'a CA certificate was presented as a client' },
  CERT_WRONG_USAGE: { status: 400, message: 'the certificate lacks the extended key usage for this use' },
  CERT_EXPIRED: { status: 400, message: 'the certificate has expired' },
  CERT_NOT_YET_VALID: { status: 400, message: 'the certificate is not yet valid' },
  CERT_UNTRUSTED: { status: 400, message: 'the certificate was not issued by this fleet' },
  PROFILE_INVALID: { status: 400, message: 'an issuing request does not fit its profile' },
  KEY_UNSUPPORTED: { status: 400, message: 'a CA key of an unsupported type' },
  KEY_EXISTS: { status: 400, message: 'a key exists already and is never overwritten' },
  KEY_MISSING: { status: 400, message: 'a key is not in the key store' },
  KEY_NAME_INVALID: { status: 400, message: 'a bad key name' },
  KEY_DECRYPT_FAILED: { status: 400, message: 'a key could not be decrypted' },
  PASSPHRASE_WEAK: { status: 400, message: 'the CA key passphrase is too short' },
  CA_EXISTS: { status: 400, message: 'a CA exists already and is never overwritten' },
  CA_MISSING: { status: 400, message: 'no CA in the data directory' },
  CA_INVALID: { status: 400, message: 'the CA files are inconsistent' },
  CRL_INVALID: { status: 400, message: 'a CRL request is invalid' },
  OCSP_MALFORMED: { status: 400, message: 'an OCSP request could not be parsed' },
  OCSP_INVALID: { status: 400, message: 'an OCSP response cannot be built from what was given' },
  PKCS7_INVALID: { status: 400, message: 'a PKCS#7 certs-only message is invalid' },
  /** A DER value broke the DER rules (pki/der.ts); readers map it to their own code (CSR_MALFORMED, …). */
  DER_INVALID: { status: 400, message: 'a DER value is malformed' },
});
export type PkiErrorCode = ErrorCode<typeof PKI_ERRORS>;

export class PkiError extends FleetError {
  declare readonly code: PkiErrorCode;
  constructor(code: PkiErrorCode, publicMessage?: string, opts: DeclaredErrorOptions = {}) {
    super(PKI_ERRORS.get(code), publicMessage, opts);
    this.name = 'PkiError';
  }
}
