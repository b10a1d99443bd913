/**
 * Building a PKCS#10 request (RFC 2986 §4) with node:crypto: what a device does with its own key. Kept
 * apart from parsing (csr.ts). Used by the simulator and by tests; the subject is the CN only, when given.
 */
import { createPublicKey, type KeyObject, sign } from 'node:crypto';
import * as der from './der.ts';
import { OID } from './oids.ts';

function csrSignatureAlgorithm(key: KeyObject): { alg: Buffer; hash: string | null } {
  if (key.asymmetricKeyType === 'ed25519') return { alg: der.seq(der.oid(OID.ed25519)), hash: null };
  if (key.asymmetricKeyType === 'rsa') {
    return { alg: der.seq(der.oid(OID.sha256WithRSAEncryption), der.NULL), hash: 'sha256' };
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve === 'secp384r1') return { alg: der.seq(der.oid(OID.ecdsaWithSHA384)), hash: 'sha384' };
  if (curve === 'secp521r1') return { alg: der.seq(der.oid(OID.ecdsaWithSHA512)), hash: 'sha512' };
  return { alg: der.seq(der.oid(OID.ecdsaWithSHA256)), hash: 'sha256' };
}

/**
 * A DER CSR signed by `key`. `opts.spki` replaces the request's public key (tests use it to send a key
 * encoding other than the signing key's default).
 */
export function buildCsr(key: KeyObject, commonName?: string, opts: { spki?: Buffer } = {}): Buffer {
  const spki = opts.spki ?? createPublicKey(key).export({ type: 'spki', format: 'der' });
  const subject =
    commonName === undefined
      ? der.seq()
      : der.seq(der.set(der.seq(der.oid(OID.commonName), der.utf8(commonName))));
  const info = der.seq(der.uint(0), subject, spki, der.ctx(0, Buffer.alloc(0)));
  const { alg, hash } = csrSignatureAlgorithm(key);
  return der.seq(info, alg, der.bitString(sign(hash, info, key)));
}

export const csrToPem = (d: Buffer): string => der.toPem(d, 'CERTIFICATE REQUEST');
