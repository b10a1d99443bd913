/** RFC 6960 (OCSP) requests, as typed schemas (§4.1.1, Appendix B.1). */
import { AlgorithmIdentifier, Extensions } from './rfc5280.ts';
import {
  any,
  bitString,
  type Decoded,
  explicit,
  integer,
  octetString,
  optional,
  sequence,
  sequenceOf,
} from './schema.ts';

export const CertID = sequence('CertID', {
  hashAlgorithm: AlgorithmIdentifier,
  issuerNameHash: octetString(),
  issuerKeyHash: octetString(),
  serialNumber: integer(),
});

export const Request = sequence('Request', {
  reqCert: CertID,
  singleRequestExtensions: optional(explicit(0, Extensions)),
});

export const Signature = sequence('Signature', {
  signatureAlgorithm: AlgorithmIdentifier,
  signature: bitString(),
  certs: optional(explicit(0, sequenceOf('certs', any()))),
});

/**
 * OCSPRequest with at most `maxCertIds` Requests: the limit is checked while the list is read, before the
 * next item is decoded. requestorName (a GeneralName) is informational only and kept undecoded.
 */
export function ocspRequestSchema(maxCertIds: number) {
  const TBSRequest = sequence('TBSRequest', {
    version: optional(explicit(0, integer())),
    requestorName: optional(explicit(1, any())),
    requestList: sequenceOf('requestList', Request, { min: 1, max: maxCertIds }),
    requestExtensions: optional(explicit(2, Extensions)),
  });
  return sequence('OCSPRequest', {
    tbsRequest: TBSRequest,
    optionalSignature: optional(explicit(0, Signature)),
  });
}
export type OCSPRequest = Decoded<ReturnType<typeof ocspRequestSchema>>;
