/**
 * OCSP (RFC 6960): parse requests, build signed responses. Pure: the provisioning endpoint decides each
 * certificate's status from the registry and hands it here.
 *
 * The issuing CA signs its own responses (RFC 6960 §4.2.2.2, "the CA who issued the certificate"), so no
 * delegated responder certificate exists, and the client already holds the signer: it needed the issuer's
 * certificate to build the CertID. The responder is named by key hash (§4.2.1, ResponderID byKey).
 */
import { createHash } from 'node:crypto';
import type * as rfc5280 from './asn1/rfc5280.ts';
import * as rfc6960 from './asn1/rfc6960.ts';
import * as asn1 from './asn1/schema.ts';
import { REVOCATION_REASONS, type RevocationReason } from './crl.ts';
import * as der from './der.ts';
import { PkiError } from './errors.ts';
import { OID } from './oids.ts';
import { canonicalSerial } from './serial.ts';
import { type Issuer, readCertificate, sigAlgFor, spkiPublicKeyBits } from './x509.ts';

/** Hash algorithms a CertID may use. OpenSSL uses SHA-1 by default; RFC 5019 clients likewise. */
export type OcspHashAlgorithm = 'sha1' | 'sha256' | 'sha384' | 'sha512';

const HASH_OIDS: Record<OcspHashAlgorithm, string> = {
  sha1: OID.sha1,
  sha256: OID.sha256,
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
};
const HASH_BY_OID = new Map(Object.entries(HASH_OIDS).map(([k, v]) => [v, k as OcspHashAlgorithm]));
const HASH_LEN: Record<OcspHashAlgorithm, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

/** Limits: a request is small; anything bigger is refused before it costs anything. */
export const OCSP_REQUEST_MAX_BYTES = 16 * 1024;
export const OCSP_MAX_CERT_IDS = 64;
/** RFC 8954 §2.1: a nonce is 1 to 32 octets. */
export const OCSP_NONCE_MAX_BYTES = 32;

export interface CertId {
  readonly hashAlgorithm: OcspHashAlgorithm;
  readonly issuerNameHash: Buffer;
  readonly issuerKeyHash: Buffer;
  /** Canonical lowercase hex. */
  readonly serial: string;
  /**
   * The CertID exactly as the client encoded it. A response echoes it byte for byte: OpenSSL matches
   * the response to its request with the AlgorithmIdentifier's parameters (NULL or absent) included.
   */
  readonly der: Buffer;
}

export interface OcspRequest {
  readonly certIds: readonly CertId[];
  /** The Nonce value (RFC 6960 §4.4.1 `Nonce ::= OCTET STRING`), to be echoed. */
  readonly nonce?: Buffer;
}

function malformed(msg: string, cause?: unknown): never {
  throw new PkiError('OCSP_MALFORMED', `the OCSP request is malformed: ${msg}`, { cause });
}

type Decoded<S> = asn1.Decoded<S>;
type CertIdValue = Decoded<typeof rfc6960.CertID>;
type ExtensionsValue = Decoded<typeof rfc5280.Extensions>;

const OCSP_REQUEST = rfc6960.ocspRequestSchema(OCSP_MAX_CERT_IDS);

function toCertId(c: CertIdValue): CertId {
  const { algorithm: oid, parameters } = c.hashAlgorithm;
  if (parameters && parameters.tag !== der.TAG.NULL) malformed('bad hashAlgorithm parameters');
  if (parameters && parameters.contents.length !== 0) malformed('bad hashAlgorithm parameters');
  const hashAlgorithm = HASH_BY_OID.get(oid);
  if (!hashAlgorithm) {
    throw new PkiError('OCSP_MALFORMED', `the OCSP CertID hash algorithm ${oid} is not supported`, {
      details: { hashAlgorithm: oid },
    });
  }
  const len = HASH_LEN[hashAlgorithm];
  if (c.issuerNameHash.length !== len || c.issuerKeyHash.length !== len)
    malformed(`CertID hashes must be ${len} bytes for ${hashAlgorithm}`);
  if (c.serialNumber.length > 21) malformed('bad serial number length');
  const serial = canonicalSerial(c.serialNumber.toString('hex')) ?? malformed('bad serial number');
  // RFC 5280 §4.1.2.2: a serial is at most 20 octets. 21 content octets are allowed above for a 00 sign
  // octet only; a 21-octet value no CA may issue went on to the registry lookup and came back as a JSON
  // 400 where RFC 6960 §2.3 says malformedRequest.
  if (serial.length > 40) malformed('the serial number is longer than 20 octets (RFC 5280 §4.1.2.2)');
  return Object.freeze({
    hashAlgorithm,
    issuerNameHash: Buffer.from(c.issuerNameHash),
    issuerKeyHash: Buffer.from(c.issuerKeyHash),
    serial,
    der: Buffer.from(c.der),
  });
}

/** Reads the Nonce from Extensions; refuses other critical extensions, ignores the rest (RFC 6960 §4.4). */
function readNonce(exts: ExtensionsValue): Buffer | undefined {
  let nonce: Buffer | undefined;
  for (const e of exts) {
    if (e.extnID === OID.ocspNonce) {
      if (nonce) malformed('two nonce extensions');
      // §4.4.1: extnValue holds a DER OCTET STRING. Some old clients put the raw bytes there instead;
      // accept those as the nonce itself.
      let v: Buffer = e.extnValue;
      try {
        v = asn1.decode(e.extnValue, asn1.octetString());
      } catch {
        // raw nonce
      }
      if (v.length === 0 || v.length > OCSP_NONCE_MAX_BYTES)
        malformed(`the nonce must be 1 to ${OCSP_NONCE_MAX_BYTES} octets (RFC 8954)`);
      nonce = Buffer.from(v);
    } else if (e.critical) {
      malformed(`unsupported critical extension ${e.extnID}`);
    }
  }
  return nonce;
}

/**
 * Parses a DER OCSPRequest (RFC 6960 §4.1.1, pki/asn1/rfc6960.ts). A request signature, if any, is not
 * checked: the answers are public and signed by us, so who asks does not matter.
 */
export function parseOcspRequest(input: Buffer): OcspRequest {
  if (!Buffer.isBuffer(input) || input.length === 0) malformed('empty request');
  if (input.length > OCSP_REQUEST_MAX_BYTES)
    throw new PkiError('OCSP_MALFORMED', `the OCSP request is over ${OCSP_REQUEST_MAX_BYTES} bytes`, {
      details: { limit: OCSP_REQUEST_MAX_BYTES },
    });
  let req: Decoded<typeof OCSP_REQUEST>;
  try {
    req = asn1.decode(input, OCSP_REQUEST);
  } catch (e) {
    malformed(e instanceof Error ? e.message : 'unparseable', e);
  }
  const tbs = req.tbsRequest;
  // version [0] EXPLICIT, v1(0) is the only version.
  if (tbs.version && (tbs.version.length !== 1 || tbs.version[0] !== 0)) malformed('version must be v1');
  const nonce = tbs.requestExtensions ? readNonce(tbs.requestExtensions) : undefined;
  const certIds = tbs.requestList.map((r) => {
    if (r.singleRequestExtensions) readNonce(r.singleRequestExtensions); // refuses unknown critical ones
    return toCertId(r.reqCert);
  });
  return Object.freeze({ certIds: Object.freeze(certIds), ...(nonce ? { nonce } : {}) });
}

/**
 * RFC 6960 Appendix A.1: a GET request carries the DER request base64-encoded and URL-encoded in the
 * last path segment. Takes that segment (URL-decoded or not) and returns the DER.
 */
export function ocspRequestFromGetPath(segment: string): Buffer {
  let b64: string;
  try {
    b64 = decodeURIComponent(segment);
  } catch (cause) {
    malformed('bad URL encoding', cause);
  }
  if (b64.length > OCSP_REQUEST_MAX_BYTES * 2) malformed('request too large');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) malformed('the GET request is not base64');
  return Buffer.from(b64, 'base64');
}

// ------------------------------------------------------------------ issuer matching

interface IssuerHashes {
  nameDer: Buffer;
  keyBits: Buffer;
  byAlg: Map<OcspHashAlgorithm, { name: Buffer; key: Buffer }>;
  /** SHA-1 of the key bits: ResponderID byKey (§4.2.1) and the CertID SHA-1 key hash. */
  keyHashSha1: Buffer;
}
const hashCache = new WeakMap<Issuer, IssuerHashes>();

function issuerHashes(issuer: Issuer): IssuerHashes {
  let h = hashCache.get(issuer);
  if (!h) {
    // CertID hashes the issuing CA's own *subject* name (§4.1.1).
    const nameDer = Buffer.from(readCertificate(issuer.certificate).tbsCertificate.subject.der);
    const keyBits = spkiPublicKeyBits(issuer.signer.spki);
    h = {
      nameDer,
      keyBits,
      byAlg: new Map(),
      keyHashSha1: createHash('sha1').update(keyBits).digest(),
    };
    hashCache.set(issuer, h);
  }
  return h;
}

/** issuerNameHash and issuerKeyHash (RFC 6960 §4.1.1) of an issuing CA under one hash algorithm. */
export function issuerCertIdHashes(issuer: Issuer, alg: OcspHashAlgorithm): { name: Buffer; key: Buffer } {
  const h = issuerHashes(issuer);
  let v = h.byAlg.get(alg);
  if (!v) {
    v = {
      name: createHash(alg).update(h.nameDer).digest(),
      key: createHash(alg).update(h.keyBits).digest(),
    };
    h.byAlg.set(alg, v);
  }
  return v;
}

/** True when the CertID names certificates issued by `issuer` (both hashes must match). */
export function certIdMatchesIssuer(certId: CertId, issuer: Issuer): boolean {
  const h = issuerCertIdHashes(issuer, certId.hashAlgorithm);
  return h.name.equals(certId.issuerNameHash) && h.key.equals(certId.issuerKeyHash);
}

/**
 * The issuing CA a CertID asks about, or undefined for a foreign issuer. A request naming no issuer of ours
 * gets `unauthorized` (RFC 5019 §2.2.3: we are not authoritative for it); a foreign CertID beside ours in
 * one request gets 'unknown' (see answerOcspRequest).
 */
export function findIssuerForCertId<T extends Issuer>(certId: CertId, issuers: Iterable<T>): T | undefined {
  for (const i of issuers) if (certIdMatchesIssuer(certId, i)) return i;
  return undefined;
}

/** A CertID for a certificate of `issuer` (what a client would send); for tests and self-checks. */
export function certIdFor(issuer: Issuer, serial: string, alg: OcspHashAlgorithm = 'sha1'): CertId {
  const h = issuerCertIdHashes(issuer, alg);
  const s = canonicalSerial(serial);
  if (s === undefined) throw new PkiError('OCSP_INVALID', 'a serial number is hex digits only');
  return Object.freeze({
    hashAlgorithm: alg,
    issuerNameHash: h.name,
    issuerKeyHash: h.key,
    serial: s,
    der: der.seq(
      der.seq(der.oid(HASH_OIDS[alg]), der.NULL),
      der.octetString(h.name),
      der.octetString(h.key),
      der.uintFromBytes(Buffer.from(s, 'hex')),
    ),
  });
}

// ------------------------------------------------------------------ responses

export type OcspCertStatus = 'good' | 'unknown' | { revoked: { at: Date; reason?: RevocationReason } };

export interface OcspSingleResponse {
  certId: CertId;
  status: OcspCertStatus;
  thisUpdate: Date;
  /** When newer information will be available; absent means "always available" (§4.2.2.1). */
  nextUpdate?: Date;
}

export interface OcspResponseOptions {
  /** The CA that issued the certificates asked about; it signs the response itself. */
  issuer: Issuer;
  responses: readonly OcspSingleResponse[];
  /** Echoed from the request (§4.4.1). */
  nonce?: Buffer;
  producedAt?: Date;
  /** Include the issuer's certificate in `certs`; not needed when the CA signs directly (§4.2.2.2). */
  includeIssuerCertificate?: boolean;
}

/** RFC 6960 §4.2.1 OCSPResponseStatus. */
export const OCSP_RESPONSE_STATUS = {
  successful: 0,
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
} as const;
export type OcspErrorStatus = Exclude<keyof typeof OCSP_RESPONSE_STATUS, 'successful'>;

const ext = (oid: string, value: Buffer) => der.seq(der.oid(oid), der.octetString(value));
/** GeneralizedTime without fractions (§4.2.2.1 follows RFC 5280: seconds, Z). */
const gtime = (d: Date) => der.generalizedTime(d);

function certStatus(s: OcspCertStatus): Buffer {
  if (s === 'good') return der.ctx(0, Buffer.alloc(0), true); // good [0] IMPLICIT NULL
  if (s === 'unknown') return der.ctx(2, Buffer.alloc(0), true); // unknown [2] IMPLICIT NULL
  const reason = s.revoked.reason;
  const parts = [gtime(s.revoked.at)];
  if (reason !== undefined) {
    if (!Object.hasOwn(REVOCATION_REASONS, reason))
      throw new PkiError('OCSP_INVALID', `unknown revocation reason ${reason}`);
    // revocationReason [0] EXPLICIT CRLReason
    parts.push(der.ctx(0, der.tlv(der.TAG.ENUMERATED, Buffer.from([REVOCATION_REASONS[reason]]))));
  }
  return der.tlv(0xa1, ...parts); // revoked [1] IMPLICIT RevokedInfo
}

function singleResponse(r: OcspSingleResponse): Buffer {
  const parts = [r.certId.der, certStatus(r.status), gtime(r.thisUpdate)];
  if (r.nextUpdate) parts.push(der.ctx(0, gtime(r.nextUpdate)));
  return der.seq(...parts);
}

const ocspResponse = (status: number, responseBytes?: Buffer) =>
  der.seq(
    der.tlv(der.TAG.ENUMERATED, Buffer.from([status])),
    ...(responseBytes ? [der.ctx(0, responseBytes)] : []),
  );

/** A signed, successful OCSPResponse (DER) carrying a BasicOCSPResponse. */
export function buildOcspResponse(o: OcspResponseOptions): Buffer {
  if (o.responses.length === 0)
    throw new PkiError('OCSP_INVALID', 'an OCSP response needs at least one answer');
  if (o.nonce && (o.nonce.length === 0 || o.nonce.length > OCSP_NONCE_MAX_BYTES))
    throw new PkiError('OCSP_INVALID', `a nonce is 1 to ${OCSP_NONCE_MAX_BYTES} octets`);
  const h = issuerHashes(o.issuer);
  const producedAt = o.producedAt ?? new Date();
  const tbs = der.seq(
    // version v1 is the DEFAULT and so omitted (DER).
    der.ctx(2, der.octetString(h.keyHashSha1)), // responderID byKey [2] EXPLICIT KeyHash
    gtime(producedAt),
    der.seq(...o.responses.map(singleResponse)),
    ...(o.nonce ? [der.ctx(1, der.seq(ext(OID.ocspNonce, der.octetString(o.nonce))))] : []),
  );
  const sigAlg = sigAlgFor(o.issuer.signer);
  const basic = der.seq(
    tbs,
    sigAlg,
    der.bitString(o.issuer.signer.sign(tbs)),
    ...(o.includeIssuerCertificate ? [der.ctx(0, der.seq(o.issuer.certificate))] : []),
  );
  return ocspResponse(
    OCSP_RESPONSE_STATUS.successful,
    der.seq(der.oid(OID.ocspBasic), der.octetString(basic)),
  );
}

/** An unsigned error response (§4.2.1): only the status, no responseBytes. */
export function buildOcspError(status: OcspErrorStatus): Buffer {
  if (!Object.hasOwn(OCSP_RESPONSE_STATUS, status) || status === ('successful' as string))
    throw new PkiError('OCSP_INVALID', `not an OCSP error status: ${status}`);
  return ocspResponse(OCSP_RESPONSE_STATUS[status]);
}

export const OCSP_CONTENT_TYPE = {
  request: 'application/ocsp-request',
  response: 'application/ocsp-response',
} as const;

// ------------------------------------------------------------------ the whole exchange

/** What the registry says about one serial of one issuing CA. */
export type OcspLookup<T extends Issuer> = (
  issuer: T,
  serials: readonly string[],
) => Promise<ReadonlyMap<string, OcspCertStatus>> | ReadonlyMap<string, OcspCertStatus>;

export interface OcspAnswer {
  /** The DER OCSPResponse to send (always status 200, content type application/ocsp-response). */
  readonly der: Buffer;
  readonly outcome: 'successful' | OcspErrorStatus;
  readonly request?: OcspRequest;
  /** Why it was not successful, for the log (never for the client: the status says all it may know). */
  readonly error?: unknown;
}

/**
 * One OCSP exchange, pure but for `lookup` (the registry): parse, pick the issuing CA, look the serials
 * up, sign. A malformed request gets `malformedRequest`; one naming no CA of ours `unauthorized`; a
 * failing lookup `internalError`. All CertIDs of the answering CA are answered in one response signed by
 * it; a CertID of another issuer in the same request is answered 'unknown'. Serials the lookup does not
 * return are 'unknown' too.
 */
export async function answerOcspRequest<T extends Issuer>(o: {
  request: Buffer;
  issuers: Iterable<T>;
  lookup: OcspLookup<T>;
  now?: Date;
  /** nextUpdate = now + this; default 3600 s. Publish changes sooner than that through the CRL and feed. */
  validitySeconds?: number;
}): Promise<OcspAnswer> {
  let request: OcspRequest;
  try {
    request = parseOcspRequest(o.request);
  } catch (error) {
    return { der: buildOcspError('malformedRequest'), outcome: 'malformedRequest', error };
  }
  const issuers = [...o.issuers];
  let issuer: T | undefined;
  for (const id of request.certIds) {
    issuer = findIssuerForCertId(id, issuers);
    if (issuer) break;
  }
  if (!issuer) return { der: buildOcspError('unauthorized'), outcome: 'unauthorized', request };
  const ours = request.certIds.filter((id) => certIdMatchesIssuer(id, issuer));
  let statuses: ReadonlyMap<string, OcspCertStatus>;
  try {
    statuses = await o.lookup(issuer, [...new Set(ours.map((id) => id.serial))]);
  } catch (error) {
    return { der: buildOcspError('internalError'), outcome: 'internalError', request, error };
  }
  const now = new Date(Math.floor((o.now ?? new Date()).getTime() / 1000) * 1000);
  const nextUpdate = new Date(now.getTime() + (o.validitySeconds ?? 3600) * 1000);
  try {
    const der = buildOcspResponse({
      issuer,
      responses: request.certIds.map((certId) => ({
        certId,
        status: ours.includes(certId) ? (statuses.get(certId.serial) ?? 'unknown') : 'unknown',
        thisUpdate: now,
        nextUpdate,
      })),
      nonce: request.nonce,
      producedAt: now,
    });
    return { der, outcome: 'successful', request };
  } catch (error) {
    // A status the lookup made up (an unknown reason) or a failing signer: never a half-built answer.
    return { der: buildOcspError('internalError'), outcome: 'internalError', request, error };
  }
}
