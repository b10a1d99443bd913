/**
 * RFC 5280 (X.509 certificates) types Fleet reads, as typed schemas (§4.1, Appendix A.1). Names follow the
 * RFC's ASN.1 module so a reader can hold one beside the other.
 */
import { TAG } from '../der.ts';
import {
  any,
  bitString,
  boolean,
  deferred,
  explicit,
  implicit,
  integer,
  octetString,
  oid,
  oneOf,
  optional,
  sequence,
  sequenceOf,
  setOf,
  smallInteger,
} from './schema.ts';

/** §4.1.1.2 */
export const AlgorithmIdentifier = sequence('AlgorithmIdentifier', {
  algorithm: oid(),
  parameters: optional(any()),
});

/** §4.1.2.4: the value is kept as it came (its string type matters to whoever reads it). */
export const AttributeTypeAndValue = sequence('AttributeTypeAndValue', { type: oid(), value: any() });
export const RelativeDistinguishedName = setOf('RelativeDistinguishedName', AttributeTypeAndValue);
/** Name ::= CHOICE { rdnSequence RDNSequence }, the only choice there is. */
export const Name = sequenceOf('Name', RelativeDistinguishedName);

/** §4.1.2.5 Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime } */
export const Time = oneOf('Time', [TAG.UTC_TIME, TAG.GENERALIZED_TIME]);
export const Validity = sequence('Validity', { notBefore: Time, notAfter: Time });

/** §4.1.2.7 */
export const SubjectPublicKeyInfo = sequence('SubjectPublicKeyInfo', {
  algorithm: AlgorithmIdentifier,
  subjectPublicKey: bitString(),
});

/** §4.1.2.9: critical BOOLEAN DEFAULT FALSE; extnValue holds the extension's own DER. */
export const Extension = sequence('Extension', {
  extnID: oid(),
  critical: optional(boolean()),
  extnValue: octetString(),
});
export const Extensions = sequenceOf('Extensions', Extension);

/** §4.1.2: names are kept whole (deferred): issuing copies them byte for byte, OCSP hashes them. */
export const TBSCertificate = sequence('TBSCertificate', {
  version: optional(explicit(0, smallInteger())),
  serialNumber: integer(),
  signature: AlgorithmIdentifier,
  issuer: deferred(Name),
  validity: Validity,
  subject: deferred(Name),
  subjectPublicKeyInfo: SubjectPublicKeyInfo,
  issuerUniqueID: optional(implicit(1, bitString())),
  subjectUniqueID: optional(implicit(2, bitString())),
  extensions: optional(explicit(3, Extensions)),
});

/** §4.1 */
export const Certificate = sequence('Certificate', {
  tbsCertificate: TBSCertificate,
  signatureAlgorithm: AlgorithmIdentifier,
  signatureValue: bitString(),
});

/** §5.1: a CRL entry; the serial as its INTEGER bytes, the extensions (reason code) as they came. */
export const RevokedCertificate = sequence('RevokedCertificate', {
  userCertificate: integer(),
  revocationDate: Time,
  crlEntryExtensions: optional(Extensions),
});

/** §5.1.2: the entries are counted (sequenceOf), the issuer kept whole (deferred). */
export const TBSCertList = sequence('TBSCertList', {
  version: optional(smallInteger()),
  signature: AlgorithmIdentifier,
  issuer: deferred(Name),
  thisUpdate: Time,
  nextUpdate: optional(Time),
  revokedCertificates: optional(sequenceOf('RevokedCertificates', RevokedCertificate)),
  crlExtensions: optional(explicit(0, Extensions)),
});

/** §5.1 */
export const CertificateList = sequence('CertificateList', {
  tbsCertList: TBSCertList,
  signatureAlgorithm: AlgorithmIdentifier,
  signatureValue: bitString(),
});
