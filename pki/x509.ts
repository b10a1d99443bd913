/**
 * X.509 v3 certificate assembly (RFC 5280) from pre-encoded parts. What is constant per CA and profile
 * (issuer name, signature algorithm, AKI, CRL DP, AIA, key usage, EKU) is encoded once by `Issuer`; a
 * certificate costs one SHA-1 (SKI), one random serial, a few concatenations and one signature.
 */
import { hash, randomFillSync, X509Certificate } from 'node:crypto';
import * as rfc5280 from './asn1/rfc5280.ts';
import * as asn1 from './asn1/schema.ts';
import * as der from './der.ts';
import { PkiError } from './errors.ts';
import { type IdentityKind, identityUri } from './ids.ts';
import { hashFor, type Signer } from './keystore.ts';
import { OID } from './oids.ts';

// ------------------------------------------------------------------ names

export interface NameParts {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
}

const rdn = (oid: string, value: string) => der.set(der.seq(der.oid(oid), der.utf8(value)));

export function encodeName(n: NameParts): Buffer {
  const rdns: Buffer[] = [];
  if (n.organization) rdns.push(rdn(OID.organizationName, n.organization));
  if (n.organizationalUnit) rdns.push(rdn(OID.organizationalUnitName, n.organizationalUnit));
  rdns.push(rdn(OID.commonName, n.commonName));
  return der.seq(...rdns);
}

// ------------------------------------------------------------------ extensions

const ext = (oid: string, critical: boolean, value: Buffer) =>
  critical
    ? der.seq(der.oid(oid), der.boolean(true), der.octetString(value))
    : der.seq(der.oid(oid), der.octetString(value));

export const KU = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

function keyUsageValue(bits: number[]): Buffer {
  let v = 0;
  for (const b of bits) v |= 0x80 >> b;
  let unused = 0;
  while (unused < 8 && !(v & (1 << unused))) unused++;
  return der.bitString(Buffer.from([v]), unused);
}

export function basicConstraintsExt(ca: boolean, pathLen?: number): Buffer {
  const body = ca
    ? der.seq(der.boolean(true), ...(pathLen === undefined ? [] : [der.uint(pathLen)]))
    : der.seq();
  return ext(OID.basicConstraints, true, body);
}
export const keyUsageExt = (bits: number[]) => ext(OID.keyUsage, true, keyUsageValue(bits));
export const extKeyUsageExt = (oids: string[]) =>
  ext(OID.extKeyUsage, false, der.seq(...oids.map((o) => der.oid(o))));
export const skiExt = (keyId: Buffer) => ext(OID.subjectKeyIdentifier, false, der.octetString(keyId));
export const akiExt = (keyId: Buffer) =>
  ext(OID.authorityKeyIdentifier, false, der.seq(der.ctx(0, keyId, true)));
export function crlDpExt(url: string): Buffer {
  // DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames { uniformResourceIdentifier [6] } } }
  const uri = der.ctx(6, Buffer.from(url, 'ascii'), true);
  return ext(OID.crlDistributionPoints, false, der.seq(der.seq(der.ctx(0, der.ctx(0, uri)))));
}
export function aiaExt(ocspUrl?: string, caIssuersUrl?: string): Buffer {
  const ads: Buffer[] = [];
  if (ocspUrl) ads.push(der.seq(der.oid(OID.ocsp), der.ctx(6, Buffer.from(ocspUrl, 'ascii'), true)));
  if (caIssuersUrl)
    ads.push(der.seq(der.oid(OID.caIssuers), der.ctx(6, Buffer.from(caIssuersUrl, 'ascii'), true)));
  return ext(OID.authorityInfoAccess, false, der.seq(...ads));
}

export interface AltNames {
  uris?: string[];
  dns?: string[];
  ips?: string[];
}

function ipBytes(ip: string): Buffer {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) {
    const parts = ip.split('.').map(Number);
    if (parts.some((p) => p > 255)) throw new PkiError('PROFILE_INVALID', `bad IPv4 address ${ip}`);
    return Buffer.from(parts);
  }
  if (ip.includes(':')) {
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    if (ip.split('::').length > 2 || (tail === undefined && h.length !== 8) || h.length + t.length > 8) {
      throw new PkiError('PROFILE_INVALID', `bad IPv6 address ${ip}`);
    }
    const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    const b = Buffer.alloc(16);
    groups.forEach((g, i) => {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new PkiError('PROFILE_INVALID', `bad IPv6 address ${ip}`);
      b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
    });
    return b;
  }
  throw new PkiError('PROFILE_INVALID', `bad IP address ${ip}`);
}

const DNS_RE =
  /^(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export function sanExt(names: AltNames): Buffer {
  const gns: Buffer[] = [];
  for (const d of names.dns ?? []) {
    if (!DNS_RE.test(d)) throw new PkiError('PROFILE_INVALID', `bad DNS name ${JSON.stringify(d)}`);
    gns.push(der.ctx(2, Buffer.from(d, 'ascii'), true));
  }
  for (const ip of names.ips ?? []) gns.push(der.ctx(7, ipBytes(ip), true));
  for (const u of names.uris ?? []) gns.push(der.ctx(6, Buffer.from(u, 'ascii'), true));
  if (gns.length === 0)
    throw new PkiError('PROFILE_INVALID', 'a certificate needs at least one subject alternative name');
  // RFC 5280 §4.2.1.6: critical when the subject name is empty; ours never is.
  return ext(OID.subjectAltName, false, der.seq(...gns));
}

// ------------------------------------------------------------------ keys

/** The subjectPublicKey BIT STRING contents of an SPKI (RFC 5280 §4.2.1.2 method 1 hashes these). */
export function spkiPublicKeyBits(spki: Buffer): Buffer {
  return asn1.decode(spki, rfc5280.SubjectPublicKeyInfo).subjectPublicKey.bytes;
}

/**
 * A certificate read through its RFC 5280 schema (pki/asn1/rfc5280.ts); every field keeps its DER. A
 * certificate that is not one strict DER Certificate is CERT_MALFORMED.
 */
export function readCertificate(d: Buffer): asn1.Decoded<typeof rfc5280.Certificate> {
  try {
    return asn1.decode(d, rfc5280.Certificate);
  } catch (cause) {
    throw new PkiError('CERT_MALFORMED', 'the certificate could not be parsed', { cause });
  }
}

export const keyIdentifier = (spki: Buffer): Buffer => hash('sha1', spkiPublicKeyBits(spki), 'buffer');

export function sigAlgFor(signer: Signer): Buffer {
  return der.seq(der.oid(hashFor(signer.algorithm) === 'sha384' ? OID.ecdsaWithSHA384 : OID.ecdsaWithSHA256));
}

// ------------------------------------------------------------------ serials

const SERIAL_POOL_SIZE = 16 * 1024;
let serialPool = Buffer.alloc(0);
let serialPos = SERIAL_POOL_SIZE;

/** 128 random bits (RFC 5280 §4.1.2.2 allows up to 20 octets), never with a leading zero byte. */
export function randomSerial(): Buffer {
  for (;;) {
    if (serialPos + 16 > serialPool.length) {
      serialPool = randomFillSync(Buffer.allocUnsafe(SERIAL_POOL_SIZE));
      serialPos = 0;
    }
    const s = Buffer.from(serialPool.subarray(serialPos, serialPos + 16));
    serialPos += 16;
    if (s[0] !== 0) return s;
  }
}

// ------------------------------------------------------------------ profiles

export type ProfileName = IdentityKind | 'broker';
export type CaRole = 'root' | 'device' | 'infrastructure';

/** Which issuing CA signs which profile. */
export const PROFILE_CA: Record<ProfileName, Exclude<CaRole, 'root'>> = {
  device: 'device',
  service: 'infrastructure',
  station: 'infrastructure',
  operator: 'infrastructure',
  broker: 'infrastructure',
};

export interface IssueRequest {
  profile: ProfileName;
  /** The subject's id; required for identity profiles, the CN for a broker. */
  id: string;
  /** SubjectPublicKeyInfo DER of the subject's key (from a checked CSR or a key we made). */
  spki: Buffer;
  /** Broker only: DNS names and IPs the clients dial. */
  dns?: string[];
  ips?: string[];
  notBefore?: Date;
  /** Overrides the profile's validity. */
  validityDays?: number;
  /** Explicit notAfter (tests make expired certificates this way). */
  notAfter?: Date;
}

export interface IssuedCertificate {
  readonly der: Buffer;
  /** Lowercase hex, canonical. */
  readonly serial: string;
  /** SHA-256 of the DER, lowercase hex. */
  readonly fingerprint: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, lowercase hex. */
  readonly spkiSha256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly profile: ProfileName;
  readonly subjectId: string;
  readonly issuerCa: Exclude<CaRole, 'root'>;
}

export interface IssuerOptions {
  role: Exclude<CaRole, 'root'>;
  signer: Signer;
  /** This CA's own certificate DER. */
  certificate: Buffer;
  organization: string;
  crlUrl?: string;
  ocspUrl?: string;
  caIssuersUrl?: string;
  /** Validity per profile, days. */
  validityDays: Partial<Record<ProfileName, number>>;
}

const DEFAULT_VALIDITY_DAYS: Record<ProfileName, number> = {
  device: 20 * 365 + 5,
  service: 2 * 365,
  station: 2 * 365,
  operator: 365,
  broker: 397,
};
/** Backdating covers small clock differences between the CA and its verifiers. */
const BACKDATE_MS = 5 * 60 * 1000;
const V3 = der.ctx(0, der.uint(2));

/** One issuing CA, with everything constant per profile encoded once. */
export class Issuer {
  readonly role: Exclude<CaRole, 'root'>;
  readonly certificate: Buffer;
  readonly signer: Signer;
  private readonly sigAlg: Buffer;
  private readonly issuerName: Buffer;
  private readonly org: string;
  private readonly constantExts: Map<ProfileName, Buffer> = new Map();
  private readonly validityDays: Record<ProfileName, number>;
  private cachedValidity: { key: string; blob: Buffer; nb: Date; na: Date } | undefined;

  constructor(o: IssuerOptions) {
    this.role = o.role;
    this.certificate = o.certificate;
    this.signer = o.signer;
    this.org = o.organization;
    this.sigAlg = sigAlgFor(o.signer);
    // Certificates it issues name it by its own subject, byte for byte (RFC 5280 §4.1.2.4).
    this.issuerName = readCertificate(o.certificate).tbsCertificate.subject.der;
    this.validityDays = { ...DEFAULT_VALIDITY_DAYS, ...o.validityDays };
    const aki = akiExt(keyIdentifier(o.signer.spki));
    const dp = o.crlUrl ? crlDpExt(o.crlUrl) : Buffer.alloc(0);
    const aia = o.ocspUrl || o.caIssuersUrl ? aiaExt(o.ocspUrl, o.caIssuersUrl) : Buffer.alloc(0);
    for (const profile of Object.keys(PROFILE_CA) as ProfileName[]) {
      if (PROFILE_CA[profile] !== o.role) continue;
      const eku = profile === 'broker' ? [OID.serverAuth] : [OID.clientAuth];
      this.constantExts.set(
        profile,
        Buffer.concat([
          basicConstraintsExt(false),
          keyUsageExt([KU.digitalSignature]),
          extKeyUsageExt(eku),
          aki,
          dp,
          aia,
        ]),
      );
    }
  }

  private validity(req: IssueRequest): { blob: Buffer; nb: Date; na: Date } {
    const nb = req.notBefore ?? new Date(Math.floor((Date.now() - BACKDATE_MS) / 1000) * 1000);
    let na: Date;
    if (req.notAfter) na = req.notAfter;
    else {
      const days = req.validityDays ?? this.validityDays[req.profile];
      na = new Date(nb.getTime() + days * 86_400_000);
    }
    const key = `${nb.getTime()}/${na.getTime()}`;
    if (this.cachedValidity?.key === key) return this.cachedValidity;
    const v = { key, blob: der.seq(der.time(nb), der.time(na)), nb, na };
    this.cachedValidity = v;
    return v;
  }

  /** Builds and signs a certificate. Pure in-memory: recording it is the caller's (registry's) job. */
  issue(req: IssueRequest): IssuedCertificate {
    const constant = this.constantExts.get(req.profile);
    if (!constant)
      throw new PkiError('PROFILE_INVALID', `the ${this.role} CA does not issue ${req.profile} certificates`);
    let san: Buffer;
    let subject: Buffer;
    if (req.profile === 'broker') {
      subject = encodeName({ commonName: req.id, organization: this.org });
      san = sanExt({ dns: req.dns, ips: req.ips });
    } else {
      // ids are validated at the edge; refuse here too so no profile can carry a hostile id.
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(req.id)) throw new PkiError('ID_INVALID', 'invalid id');
      subject = encodeName({ commonName: req.id, organization: this.org });
      san = sanExt({ uris: [identityUri(req.profile, req.id)] });
    }
    const { blob: validity, nb, na } = this.validity(req);
    if (na.getTime() <= nb.getTime())
      throw new PkiError('PROFILE_INVALID', 'notAfter must be after notBefore');
    const serial = randomSerial();
    const exts = der.ctx(3, der.seq(constant, san, skiExt(keyIdentifier(req.spki))));
    const tbs = der.seq(
      V3,
      der.uintFromBytes(serial),
      this.sigAlg,
      this.issuerName,
      validity,
      subject,
      req.spki,
      exts,
    );
    const sig = this.signer.sign(tbs);
    const cert = der.seq(tbs, this.sigAlg, der.bitString(sig));
    return Object.freeze({
      der: cert,
      serial: serial.toString('hex'),
      fingerprint: hash('sha256', cert, 'hex'),
      spkiSha256: hash('sha256', req.spki, 'hex'),
      notBefore: nb,
      notAfter: na,
      profile: req.profile,
      subjectId: req.id,
      issuerCa: this.role,
    });
  }
}

/** A CA certificate: self-signed root (issuerSigner === subject signer) or an intermediate. */
export function buildCaCertificate(o: {
  subject: NameParts;
  subjectSpki: Buffer;
  issuerSigner: Signer;
  /** Issuer certificate DER; omitted for a self-signed root. */
  issuerCertificate?: Buffer;
  pathLen?: number;
  notBefore?: Date;
  validityDays: number;
}): Buffer {
  const nb = o.notBefore ?? new Date(Math.floor((Date.now() - BACKDATE_MS) / 1000) * 1000);
  const na = new Date(nb.getTime() + o.validityDays * 86_400_000);
  const subject = encodeName(o.subject);
  let issuerName = subject;
  if (o.issuerCertificate) issuerName = readCertificate(o.issuerCertificate).tbsCertificate.subject.der;
  const sigAlg = sigAlgFor(o.issuerSigner);
  const exts = [
    basicConstraintsExt(true, o.pathLen),
    keyUsageExt([KU.digitalSignature, KU.keyCertSign, KU.cRLSign]),
    skiExt(keyIdentifier(o.subjectSpki)),
  ];
  if (o.issuerCertificate) exts.push(akiExt(keyIdentifier(o.issuerSigner.spki)));
  const tbs = der.seq(
    V3,
    der.uintFromBytes(randomSerial()),
    sigAlg,
    issuerName,
    der.seq(der.time(nb), der.time(na)),
    subject,
    o.subjectSpki,
    der.ctx(3, der.seq(...exts)),
  );
  return der.seq(tbs, sigAlg, der.bitString(o.issuerSigner.sign(tbs)));
}

export const certToPem = (d: Buffer) => der.toPem(d, 'CERTIFICATE');
export const parseCert = (d: Buffer | string) => new X509Certificate(d);
