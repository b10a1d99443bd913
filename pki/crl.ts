/** Certificate revocation lists (RFC 5280 §5), v2, with CRL number and reason codes. */
import { verify as verifySignature, type X509Certificate } from 'node:crypto';
import { CertificateList } from './asn1/rfc5280.ts';
import { type AnyValue, type Decoded, decode, integer } from './asn1/schema.ts';
import * as der from './der.ts';
import { PkiError } from './errors.ts';
import { OID } from './oids.ts';
import { canonicalSerial } from './serial.ts';
import type { Issuer } from './x509.ts';
import { akiExt, keyIdentifier, readCertificate, sigAlgFor } from './x509.ts';

/** RFC 5280 §5.3.1 CRLReason names (value 7 is unused; removeFromCRL only appears in delta CRLs). */
export const REVOCATION_REASON_NAMES = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'certificateHold',
  'removeFromCRL',
  'privilegeWithdrawn',
  'aACompromise',
] as const;
export type RevocationReason = (typeof REVOCATION_REASON_NAMES)[number];

/** RFC 5280 §5.3.1 CRLReason codes. */
export const REVOCATION_REASONS: Readonly<Record<RevocationReason, number>> = Object.freeze({
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
});

/** Reasons an operator may give when revoking (removeFromCRL is a delta-CRL device; hold is "suspend"). */
export const OPERATOR_REASONS: readonly RevocationReason[] = [
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'privilegeWithdrawn',
];

export function isRevocationReason(r: unknown): r is RevocationReason {
  return typeof r === 'string' && Object.hasOwn(REVOCATION_REASONS, r);
}

export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
  reason: RevocationReason;
}

export interface CrlOptions {
  issuer: Issuer;
  entries: Iterable<RevokedEntry>;
  crlNumber: bigint | number;
  thisUpdate?: Date;
  /** How long the CRL is valid. */
  validityHours?: number;
}

export interface BuiltCrl {
  der: Buffer;
  pem: string;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
}

const ext = (oid: string, value: Buffer) => der.seq(der.oid(oid), der.octetString(value));

export function buildCrl(o: CrlOptions): BuiltCrl {
  const thisUpdate = new Date(Math.floor((o.thisUpdate ?? new Date()).getTime() / 1000) * 1000);
  const nextUpdate = new Date(thisUpdate.getTime() + (o.validityHours ?? 24) * 3600_000);
  const crlNumber = BigInt(o.crlNumber);
  if (crlNumber < 0n || crlNumber >= 1n << 159n) throw new PkiError('CRL_INVALID', 'CRL number out of range');
  // The CRL issuer is the CA's own subject name, byte for byte (RFC 5280 §5.1.2.3).
  const issuerName = readCertificate(o.issuer.certificate).tbsCertificate.subject.der;
  const sigAlg = sigAlgFor(o.issuer.signer);
  const revoked: Buffer[] = [];
  for (const e of o.entries) {
    const serial = canonicalSerial(e.serial);
    if (serial === undefined) throw new PkiError('CRL_INVALID', 'a revoked serial number is not hex');
    // hasOwn, not a lookup: `REVOCATION_REASONS['toString']` is a function, not undefined.
    if (!isRevocationReason(e.reason))
      throw new PkiError('CRL_INVALID', `unknown revocation reason ${String(e.reason)}`);
    const code = REVOCATION_REASONS[e.reason];
    // RFC 5280 §5.3.1: the reasonCode "unspecified" SHOULD be absent rather than present.
    const entryExts =
      code === 0 ? [] : [der.seq(ext(OID.cRLReason, der.tlv(der.TAG.ENUMERATED, Buffer.from([code]))))];
    revoked.push(der.seq(der.uintFromBytes(Buffer.from(serial, 'hex')), der.time(e.revokedAt), ...entryExts));
  }
  const tbs = der.seq(
    der.uint(1),
    sigAlg,
    issuerName,
    der.time(thisUpdate),
    der.time(nextUpdate),
    ...(revoked.length ? [der.seq(...revoked)] : []),
    der.ctx(0, der.seq(akiExt(keyIdentifier(o.issuer.signer.spki)), ext(OID.cRLNumber, der.uint(crlNumber)))),
  );
  const crl = der.seq(tbs, sigAlg, der.bitString(o.issuer.signer.sign(tbs)));
  // OpenSSL and @peculiar/x509 read `X509 CRL`; plain `CRL` is not understood by everything.
  return { der: crl, pem: der.toPem(crl, 'X509 CRL'), crlNumber, thisUpdate, nextUpdate };
}

/** What a CRL says about itself (`readCrl`). */
export interface CrlInfo {
  crlNumber: bigint | undefined;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** How many certificates it lists. */
  entries: number;
}

const SIG_HASH: Readonly<Record<string, string | null>> = {
  [OID.ecdsaWithSHA256]: 'sha256',
  [OID.ecdsaWithSHA384]: 'sha384',
  [OID.ecdsaWithSHA512]: 'sha512',
  [OID.sha256WithRSAEncryption]: 'sha256',
  [OID.ed25519]: null,
};

/** RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ. */
function readTime(t: AnyValue): Date {
  const s = t.contents.toString('latin1');
  const utc = t.tag === der.TAG.UTC_TIME;
  const m = (
    utc ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/ : /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/
  ).exec(s);
  if (!m) throw new PkiError('CRL_INVALID', 'the CRL has a malformed time');
  let year = Number(m[1]);
  if (utc) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

/**
 * Reads a DER CRL (RFC 5280 §5.1) after checking that `issuer` signed it: a CRL fetched from a URL is
 * trusted for its signature, not for where it came from. CRL_INVALID when it is not a CRL or the signature
 * does not verify.
 */
export function readCrl(crl: Buffer, issuer: X509Certificate): CrlInfo {
  let list: Decoded<typeof CertificateList>;
  try {
    list = decode(crl, CertificateList);
  } catch (e) {
    throw new PkiError('CRL_INVALID', 'this is not a DER CRL', { cause: e });
  }
  const algOid = list.signatureAlgorithm.algorithm;
  if (!Object.hasOwn(SIG_HASH, algOid))
    throw new PkiError('CRL_INVALID', `the CRL is signed with ${algOid}, not supported`);
  if (!verifySignature(SIG_HASH[algOid]!, list.tbsCertList.der, issuer.publicKey, list.signatureValue.bytes))
    throw new PkiError('CRL_INVALID', 'the CRL signature does not verify with the issuing CA');
  const tbs = list.tbsCertList;
  let crlNumber: bigint | undefined;
  for (const e of tbs.crlExtensions ?? []) {
    if (e.extnID !== OID.cRLNumber) continue;
    try {
      crlNumber = BigInt(`0x${decode(e.extnValue, integer()).toString('hex')}`);
    } catch (cause) {
      throw new PkiError('CRL_INVALID', 'the CRL number is not an INTEGER', { cause });
    }
  }
  return {
    crlNumber,
    thisUpdate: readTime(tbs.thisUpdate),
    nextUpdate: tbs.nextUpdate ? readTime(tbs.nextUpdate) : undefined,
    entries: tbs.revokedCertificates?.length ?? 0,
  };
}
