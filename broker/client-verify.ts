/**
 * Client certificates verified once per distinct certificate, in JS, instead of by OpenSSL on every full
 * handshake; and the identity read from each distinct certificate once.
 *
 * Why: OpenSSL 3.0 rebuilds and re-verifies the client's chain on every full handshake (two ECDSA
 * verifications plus its certificate handling; ≈ 15–20 % of a full mTLS connect here, measured on a bare
 * Node server), although a fleet's devices present the same certificate on every connect.
 *
 * How: the secure context's `ca` holds name-only stand-ins for the fleet's CAs (`caListPem`): self-signed
 * certificates with exactly the CAs' subject names, fresh throwaway keys and their own key identifiers.
 * OpenSSL sends their names in the CertificateRequest, byte for byte the fleet CAs' names (RFC 8446
 * §4.2.4 and RFC 5246 §7.4.4 carry distinguished names only), so device stacks that pick their certificate
 * by it still do. OpenSSL finds no issuer for a fleet certificate among them (the authority key identifier
 * does not match), so it builds no chain and verifies no signature; the server runs with
 * `rejectUnauthorized: false`, and `check()` below decides before the connection is handed to MQTT.
 *
 * Why it is safe:
 * - Possession of the key is still proven by the TLS handshake itself: OpenSSL verifies the client's
 *   CertificateVerify signature over the transcript with the certificate's public key, whatever the chain
 *   verdict (RFC 8446 §4.4.3, RFC 5246 §7.4.8).
 * - Everything OpenSSL's chain verification decided is decided here, once per certificate, with OpenSSL's
 *   own primitives: the issuer is one of the fleet's CAs (`X509_check_issued`: name, key identifiers, the
 *   issuer's key usage) and its signature verifies (`X509_verify`); the fleet CAs' own chain to the root is
 *   verified at start; the purpose is TLS client as OpenSSL's `ssl_client` purpose has it (extended key
 *   usage, if present, includes clientAuth; key usage, if present, allows digitalSignature or
 *   keyAgreement); an unknown critical extension is refused as OpenSSL refuses it.
 * - The verdict is cached by the SHA-256 of the certificate's DER, so another certificate can never
 *   share it. Validity (of the certificate and of its issuing chain) is checked against the clock on
 *   every connect, and revocation is checked on every CONNECT by the revoked set, as before.
 * - The peer's certificate is decided after the handshake, before any MQTT byte is read: a refused
 *   connection is destroyed unread, as Node did after OpenSSL's verdict (the client sees the same close).
 *   One visible difference: a client that sends no certificate now completes the handshake and is then
 *   closed, where OpenSSL aborted the handshake with an alert (`rejectUnauthorized` sets both, and Node
 *   offers no way to keep the one without the other).
 * - Tested: test/broker-client-verify.test.ts runs the refusal matrix against a broker verifying this way
 *   and one letting OpenSSL verify, and expects the same outcome for every case.
 * - Stricter than OpenSSL in one way: the certificate must be issued directly by one of the fleet's CAs
 *   (intermediates the client sends are not used); a fleet's devices never need more.
 */
import { generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import * as rfc5280 from '../pki/asn1/rfc5280.ts';
import * as asn1 from '../pki/asn1/schema.ts';
import * as der from '../pki/der.ts';
import { identityFromCertificate } from '../pki/identity.ts';
import type { Identity } from '../pki/ids.ts';
import { OID } from '../pki/oids.ts';
import { certToPem } from '../pki/x509.ts';

/** Why a certificate is refused at the TLS layer (the handshake outcome label). */
export type TlsRefusal =
  | 'no_certificate'
  | 'unknown_ca'
  | 'certificate_expired'
  | 'certificate_not_yet_valid'
  | 'bad_certificate';

/** What one distinct certificate is, decided once. */
interface Verdict {
  /** A refusal that does not depend on time. */
  readonly refused?: TlsRefusal;
  /** Validity window of the certificate and its issuing chain (ms). */
  readonly notBefore: number;
  readonly notAfter: number;
  /** The fleet identity it carries, or the pki error code why it carries none (refused at CONNECT). */
  readonly identity?: Identity;
  readonly identityError?: { code: string };
}

export type CheckResult =
  | { ok: true; identity: Identity | undefined; identityError: { code: string } | undefined }
  | { ok: false; refused: TlsRefusal };

/** Extensions OpenSSL 3.0 understands (X509_supported_extension); any other marked critical is refused. */
const SUPPORTED_CRITICAL = new Set([
  '2.16.840.1.113730.1.1', // Netscape cert type
  OID.keyUsage,
  '2.5.29.17', // subjectAltName
  OID.basicConstraints,
  '2.5.29.32', // certificatePolicies
  '2.5.29.31', // cRLDistributionPoints
  OID.extKeyUsage,
  '1.3.6.1.5.5.7.1.7', // sbgp-ipAddrBlock
  '1.3.6.1.5.5.7.1.8', // sbgp-autonomousSysNum
  '1.3.6.1.5.5.7.48.1.5', // OCSP no check
  '2.5.29.36', // policyConstraints
  '1.3.6.1.5.5.7.1.14', // proxyCertInfo
  '2.5.29.30', // nameConstraints
  '2.5.29.33', // policyMappings
  '2.5.29.54', // inhibitAnyPolicy
]);
const NETSCAPE_CERT_TYPE = '2.16.840.1.113730.1.1';
const KU_DIGITAL_SIGNATURE = 0x80;
const KU_KEY_AGREEMENT = 0x08;

/** The extensions of a certificate, read through its RFC 5280 schema (pki/asn1/rfc5280.ts). */
function extensions(d: Buffer): readonly { extnID: string; critical?: boolean; extnValue: Buffer }[] {
  return asn1.decode(d, rfc5280.Certificate).tbsCertificate.extensions ?? [];
}

/** The key usage bits' first octet (digitalSignature is its top bit), 0 when the BIT STRING is empty. */
function keyUsageFirstOctet(extnValue: Buffer): number {
  return asn1.decode(extnValue, asn1.bitString()).bytes[0] ?? 0;
}

/** A fleet CA whose own chain to the root was verified at start. */
interface Anchor {
  readonly cert: X509Certificate;
  /** The intersection of the validity windows along its chain to the root (ms). */
  readonly notBefore: number;
  readonly notAfter: number;
}

const time = (s: string) => new Date(s).getTime();

export class ClientCertVerifier {
  /** PEM for the secure context's `ca`: name-only stand-ins for the fleet's CAs (see above). */
  readonly caListPem: string;
  private readonly anchors: Anchor[];
  private readonly verdicts = new Map<string, Verdict>();

  constructor(
    trustPem: string,
    private readonly max = 200_000,
  ) {
    const certs = der.fromPemAll(trustPem, 'CERTIFICATE').map((d) => new X509Certificate(d));
    if (certs.length === 0) throw new Error('client verification: the trust list holds no certificate');
    this.anchors = certs.map((c) => anchorOf(c, certs));
    this.caListPem = certs.map((c) => certToPem(nameOnly(c.raw))).join('');
  }

  /** Decides a peer certificate at `now` (ms): cached per distinct certificate, time checked every call. */
  check(cert: X509Certificate | undefined, now: number): CheckResult {
    if (!cert) return { ok: false, refused: 'no_certificate' };
    const fp = cert.fingerprint256;
    let v = this.verdicts.get(fp);
    if (v === undefined) {
      v = this.decide(cert);
      if (this.verdicts.size >= this.max) this.verdicts.delete(this.verdicts.keys().next().value!);
      this.verdicts.set(fp, v);
    }
    if (v.refused) return { ok: false, refused: v.refused };
    if (now < v.notBefore) return { ok: false, refused: 'certificate_not_yet_valid' };
    if (now > v.notAfter) return { ok: false, refused: 'certificate_expired' };
    return { ok: true, identity: v.identity, identityError: v.identityError };
  }

  /** Distinct certificates decided so far. */
  get size(): number {
    return this.verdicts.size;
  }

  private decide(cert: X509Certificate): Verdict {
    const notBefore0 = time(cert.validFrom);
    const notAfter0 = time(cert.validTo);
    const refused = (r: TlsRefusal): Verdict => ({ refused: r, notBefore: notBefore0, notAfter: notAfter0 });
    // X509_check_issued (names, key identifiers, the issuer's keyCertSign) and the signature itself.
    const anchor = this.anchors.find((a) => cert.checkIssued(a.cert) && safeVerify(cert, a.cert));
    if (!anchor) return refused('unknown_ca');
    let exts: ReturnType<typeof extensions>;
    try {
      exts = extensions(cert.raw);
    } catch {
      return refused('bad_certificate');
    }
    for (const e of exts) {
      if (e.critical && !SUPPORTED_CRITICAL.has(e.extnID)) return refused('bad_certificate');
      // OpenSSL's ssl_client purpose: the key must be usable for signatures or key agreement.
      if (e.extnID === OID.keyUsage) {
        let bits: number;
        try {
          bits = keyUsageFirstOctet(e.extnValue);
        } catch {
          return refused('bad_certificate');
        }
        if (!(bits & (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT))) return refused('bad_certificate');
      }
      // Never issued by a fleet CA; refused rather than interpreted.
      if (e.extnID === NETSCAPE_CERT_TYPE) return refused('bad_certificate');
    }
    // RFC 5280 §4.2.1.12: if the extended key usage is present it must allow TLS client authentication.
    const eku = cert.keyUsage;
    if (eku && !eku.includes(OID.clientAuth)) return refused('bad_certificate');
    const notBefore = Math.max(notBefore0, anchor.notBefore);
    const notAfter = Math.min(notAfter0, anchor.notAfter);
    try {
      return { notBefore, notAfter, identity: identityFromCertificate(cert, { now: false }) };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string') throw err;
      return { notBefore, notAfter, identityError: { code } };
    }
  }
}

function safeVerify(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * A trust-list certificate's chain to a self-signed root in the list, verified once: each link issued and
 * signed by the next, every issuer a CA. Throws when the trust list is not a fleet CA hierarchy.
 */
function anchorOf(cert: X509Certificate, all: readonly X509Certificate[]): Anchor {
  let notBefore = time(cert.validFrom);
  let notAfter = time(cert.validTo);
  let c = cert;
  for (let depth = 0; depth < 8; depth++) {
    if (!c.ca) throw new Error(`client verification: ${c.subject} in the trust list is not a CA`);
    const selfSigned = c.checkIssued(c) && safeVerify(c, c);
    if (selfSigned) return { cert, notBefore, notAfter };
    const up = all.find((p) => p !== c && c.checkIssued(p) && safeVerify(c, p));
    if (!up) throw new Error(`client verification: no issuer for ${c.subject} in the trust list`);
    notBefore = Math.max(notBefore, time(up.validFrom));
    notAfter = Math.min(notAfter, time(up.validTo));
    c = up;
  }
  throw new Error('client verification: the trust list chain is too deep');
}

/**
 * A self-signed certificate with exactly `caDer`'s subject name (its DER copied), a throwaway P-256 key
 * and a random subject key identifier: it names the CA in the CertificateRequest and can never be
 * anyone's issuer (its key is discarded, its key identifier matches no certificate's AKI).
 */
function nameOnly(caDer: Buffer): Buffer {
  const subject = asn1.decode(caDer, rfc5280.Certificate).tbsCertificate.subject.der;
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const sigAlg = der.seq(der.oid(OID.ecdsaWithSHA256));
  const now = Date.now();
  const ski = der.seq(der.oid('2.5.29.14'), der.octetString(der.octetString(randomBytes(20))));
  const bc = der.seq(
    der.oid(OID.basicConstraints),
    der.boolean(true),
    der.octetString(der.seq(der.boolean(true))),
  );
  const tbs = der.seq(
    der.ctx(0, der.uint(2)),
    der.uintFromBytes(randomBytes(16)),
    sigAlg,
    subject,
    der.seq(der.time(new Date(now - 3_600_000)), der.time(new Date(now + 3_650 * 86_400_000))),
    subject,
    spki,
    der.ctx(3, der.seq(bc, ski)),
  );
  const sig = sign('sha256', tbs, privateKey);
  return der.seq(tbs, sigAlg, der.bitString(sig));
}
