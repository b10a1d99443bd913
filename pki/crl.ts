/** Certificate revocation lists (RFC 5280 §5), v2, with CRL number and reason codes. */
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
