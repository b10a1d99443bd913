/**
 * Identity from a certificate: the one place that reads who a peer is. Called once, when a connection is
 * authenticated (the TLS layer has already verified the chain); everything downstream gets the frozen
 * typed value and never parses the certificate again.
 */
import { X509Certificate } from 'node:crypto';
import { PkiError } from './errors.ts';
import { type Identity, type IdentityKind, parseIdentityUri } from './ids.ts';
import { OID } from './oids.ts';
import { canonicalSerial } from './serial.ts';

/** Node gives the serial as upper-case hex; anything else is not a certificate we can name. */
function serialOf(cert: X509Certificate): string {
  const serial = canonicalSerial(cert.serialNumber);
  if (serial === undefined)
    throw new PkiError('CERT_MALFORMED', 'the certificate serial number is unreadable');
  return serial;
}

/** Reads one attribute (the last occurrence) from Node's `subject`/`issuer` text (one `K=V` a line). */
function nameAttr(name: string, attr: string): string | undefined {
  let out: string | undefined;
  for (const line of name.split('\n')) {
    if (line.startsWith(`${attr}=`)) out = line.slice(attr.length + 1);
  }
  return out;
}

function sanUris(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  if (!san) return [];
  // Node quotes (JSON) any SAN value with special characters, so a hostile value can never split here
  // into something that parses as one of ours: a quoted value simply fails the URI check below.
  return san
    .split(', ')
    .filter((e) => e.startsWith('URI:'))
    .map((e) => e.slice(4));
}

export interface IdentityOptions {
  /** Check validity against this time (default now). `false` skips the time check (the TLS layer did it). */
  now?: Date | false;
  /** Kinds accepted here; default all. */
  kinds?: readonly IdentityKind[];
}

export function identityFromCertificate(
  input: X509Certificate | Buffer | string,
  opts: IdentityOptions = {},
): Identity {
  let cert: X509Certificate;
  try {
    cert = input instanceof X509Certificate ? input : new X509Certificate(input);
  } catch (cause) {
    throw new PkiError('CERT_MALFORMED', 'the certificate could not be parsed', { cause });
  }
  if (cert.ca) throw new PkiError('CERT_IS_CA', 'a CA certificate cannot be a client identity');
  const ours = sanUris(cert).filter((u) => u.startsWith('urn:fleet:'));
  if (ours.length !== 1) {
    throw new PkiError('CERT_NOT_FLEET_IDENTITY', 'the certificate must carry exactly one urn:fleet SAN URI');
  }
  const parsed = parseIdentityUri(ours[0]!);
  if (!parsed)
    throw new PkiError('CERT_NOT_FLEET_IDENTITY', 'the certificate SAN URI is not a valid fleet identity');
  if (opts.kinds && !opts.kinds.includes(parsed.kind)) {
    throw new PkiError('CERT_WRONG_USAGE', `a ${parsed.kind} certificate is not accepted here`, {
      details: { kind: parsed.kind },
    });
  }
  const cn = nameAttr(cert.subject, 'CN');
  if (cn !== parsed.id)
    throw new PkiError('CERT_IDENTITY_MISMATCH', 'the certificate CN and SAN URI disagree');
  // RFC 5280 §4.2.1.12: identities authenticate as TLS clients; a serverAuth-only certificate is refused.
  const eku = cert.keyUsage;
  if (!eku?.includes(OID.clientAuth)) {
    throw new PkiError('CERT_WRONG_USAGE', 'the certificate lacks the clientAuth extended key usage');
  }
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  if (opts.now !== false) {
    const now = (opts.now ?? new Date()).getTime();
    if (now < notBefore.getTime())
      throw new PkiError('CERT_NOT_YET_VALID', 'the certificate is not yet valid');
    if (now > notAfter.getTime()) throw new PkiError('CERT_EXPIRED', 'the certificate has expired');
  }
  return Object.freeze({
    kind: parsed.kind,
    id: parsed.id,
    serial: serialOf(cert),
    fingerprint: cert.fingerprint256.replace(/:/g, '').toLowerCase(),
    notBefore,
    notAfter,
    issuer: nameAttr(cert.issuer, 'CN') ?? cert.issuer,
  });
}
