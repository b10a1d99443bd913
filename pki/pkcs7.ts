/**
 * PKCS#7 / CMS (RFC 5652) "certs-only" messages, the envelope EST (RFC 7030 §4.1.3, §4.2.3) uses for CA
 * certificates and issued certificates: a degenerate SignedData with no content and no signers.
 */
import * as rfc5280 from './asn1/rfc5280.ts';
import * as rfc5652 from './asn1/rfc5652.ts';
import * as asn1 from './asn1/schema.ts';
import * as der from './der.ts';
import { PkiError } from './errors.ts';
import { OID } from './oids.ts';

/**
 * ContentInfo { signedData, SignedData { version 1, digestAlgorithms {}, encapContentInfo { id-data },
 * certificates [0] IMPLICIT { certs… }, signerInfos {} } } (RFC 5652 §5.1, version 1: only X.509 v3
 * certificates and no signers).
 *
 * The certificates are kept in the caller's order (leaf first) rather than sorted as a DER SET OF would
 * be: EST clients take the first certificate of a simpleenroll answer as theirs, and OpenSSL likewise
 * encodes this field in order.
 */
export function certsOnly(certs: readonly Buffer[]): Buffer {
  if (certs.length === 0) throw new PkiError('PKCS7_INVALID', 'a certs-only message needs a certificate');
  for (const c of certs) {
    try {
      asn1.decode(c, rfc5280.Certificate);
    } catch (cause) {
      throw new PkiError('PKCS7_INVALID', 'a certificate is not one DER Certificate', { cause });
    }
  }
  const signedData = der.seq(
    der.uint(1),
    der.set(),
    der.seq(der.oid(OID.pkcs7Data)),
    der.ctx(0, Buffer.concat(certs)),
    der.set(),
  );
  return der.seq(der.oid(OID.pkcs7SignedData), der.ctx(0, signedData));
}

/** The certificates of a certs-only (or any) SignedData, in order (RFC 5652 §5.1). For clients and tests. */
export function certsFromPkcs7(input: Buffer): Buffer[] {
  try {
    const ci = asn1.decode(input, rfc5652.ContentInfo);
    if (ci.contentType !== OID.pkcs7SignedData) throw new der.DerError('not SignedData');
    const sd = asn1.decode(ci.content.der, rfc5652.SignedData);
    return (sd.certificates ?? []).map((c) => Buffer.from(c.der));
  } catch (cause) {
    throw new PkiError('PKCS7_INVALID', 'not a PKCS#7 SignedData message', { cause });
  }
}

/**
 * Base64 for EST bodies (RFC 7030 §4.1.3: `Content-Transfer-Encoding: base64`), in 64-character lines
 * with CRLF as RFC 2045 asks of a MIME body.
 */
export function toBase64Body(d: Buffer): string {
  const b64 = d.toString('base64');
  return `${(b64.match(/.{1,64}/g) ?? []).join('\r\n')}\r\n`;
}

/** Strict base64 decoding of an EST body: whitespace anywhere is fine, anything else is refused. */
export function fromBase64Body(text: string): Buffer | undefined {
  const b64 = text.replace(/[\r\n\t ]/g, '');
  if (b64.length === 0 || b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
  return Buffer.from(b64, 'base64');
}

export const PKCS7_MIME = 'application/pkcs7-mime; smime-type=certs-only';
