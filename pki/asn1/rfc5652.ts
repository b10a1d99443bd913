/** RFC 5652 (CMS) SignedData, as far as a certs-only message needs it (§3, §5.1). */
import { AlgorithmIdentifier } from './rfc5280.ts';
import {
  any,
  explicit,
  implicit,
  octetString,
  oid,
  optional,
  sequence,
  setOf,
  smallInteger,
} from './schema.ts';

/** §3: the content is read by its type (only SignedData here). */
export const ContentInfo = sequence('ContentInfo', { contentType: oid(), content: explicit(0, any()) });

/** §5.1. Certificates are CertificateChoices, kept whole; signer infos are not interpreted. */
export const SignedData = sequence('SignedData', {
  version: smallInteger(),
  digestAlgorithms: setOf('DigestAlgorithmIdentifiers', AlgorithmIdentifier),
  encapContentInfo: sequence('EncapsulatedContentInfo', {
    eContentType: oid(),
    eContent: optional(explicit(0, octetString())),
  }),
  certificates: optional(implicit(0, setOf('CertificateSet', any()))),
  crls: optional(implicit(1, setOf('RevocationInfoChoices', any()))),
  signerInfos: setOf('SignerInfos', any()),
});
