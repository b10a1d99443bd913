/** RFC 2986 (PKCS #10) certification requests, as typed schemas (§4, Appendix A). */
import { AlgorithmIdentifier, Name, SubjectPublicKeyInfo } from './rfc5280.ts';
import { any, bitString, deferred, implicit, integer, oid, optional, sequence, setOf } from './schema.ts';

/** §4.1 Attribute { type, values SET OF ANY }; Fleet reads no attribute, but each must be well formed. */
export const Attribute = sequence('Attribute', { type: oid(), values: setOf('AttributeValues', any()) });

/**
 * §4.1. The subject and the key are deferred: checkCsr reads the key first and the subject only after the
 * signature verifies, so a refusal names the first thing wrong in that order. `attributes` is OPTIONAL
 * here although RFC 2986 makes it mandatory: requests without it were always accepted.
 */
export const CertificationRequestInfo = sequence('CertificationRequestInfo', {
  version: integer(),
  subject: deferred(Name),
  subjectPKInfo: deferred(SubjectPublicKeyInfo),
  attributes: optional(implicit(0, setOf('Attributes', Attribute))),
});

/** §4.2 */
export const CertificationRequest = sequence('CertificationRequest', {
  certificationRequestInfo: CertificationRequestInfo,
  signatureAlgorithm: AlgorithmIdentifier,
  signature: bitString(),
});
