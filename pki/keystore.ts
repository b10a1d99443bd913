import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PkiError } from './errors.ts';

export type KeyAlgorithm = 'P-256' | 'P-384';

/**
 * A signing key that never leaves its store: a file key, a KMS or a PKCS#11 token all look like this to
 * the CA core (step-ca's signer interface).
 */
export interface Signer {
  readonly algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER of the key. */
  readonly spki: Buffer;
  /** Signs `data` with ECDSA and the hash that matches the curve; returns the DER (r, s) signature. */
  sign(data: Buffer): Buffer;
}

export interface KeyStore {
  has(name: string): Promise<boolean>;
  /** Creates a new key under `name`; refuses to overwrite. */
  create(name: string, algorithm: KeyAlgorithm): Promise<Signer>;
  load(name: string): Promise<Signer>;
}

export const hashFor = (alg: KeyAlgorithm): 'sha256' | 'sha384' => (alg === 'P-384' ? 'sha384' : 'sha256');
const curveFor = (alg: KeyAlgorithm) => (alg === 'P-384' ? 'secp384r1' : 'prime256v1');

export function signerFromKeyObject(key: KeyObject): Signer {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const algorithm: KeyAlgorithm =
    curve === 'secp384r1' ? 'P-384' : curve === 'prime256v1' ? 'P-256' : (undefined as never);
  if (!algorithm) throw new PkiError('KEY_UNSUPPORTED', `CA keys must be ECDSA P-256 or P-384, got ${curve}`);
  const hash = hashFor(algorithm);
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return Object.freeze({ algorithm, spki, sign: (data: Buffer) => sign(hash, data, key) });
}

export function generateSigner(algorithm: KeyAlgorithm): { signer: Signer; privateKey: KeyObject } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: curveFor(algorithm) });
  return { signer: signerFromKeyObject(privateKey), privateKey };
}

/**
 * Default key store: each key an encrypted PKCS#8 PEM (AES-256-CBC, scrypt-free PBES2 from OpenSSL),
 * mode 0600, in one directory. The passphrase comes from the caller (file or FLEET_CA_PASSPHRASE, read
 * in main), never from here.
 */
export class FileKeyStore implements KeyStore {
  constructor(
    private readonly dir: string,
    private readonly passphrase: string,
  ) {
    if (!passphrase || passphrase.length < 16) {
      throw new PkiError('PASSPHRASE_WEAK', 'the CA key passphrase must be at least 16 characters');
    }
  }

  private path(name: string): string {
    if (!/^[a-z0-9-]+$/.test(name)) throw new PkiError('KEY_NAME_INVALID', `bad key name ${name}`);
    return join(this.dir, `${name}.key.pem`);
  }

  async has(name: string): Promise<boolean> {
    try {
      await stat(this.path(name));
      return true;
    } catch {
      return false;
    }
  }

  async create(name: string, algorithm: KeyAlgorithm): Promise<Signer> {
    const path = this.path(name);
    if (await this.has(name))
      throw new PkiError('KEY_EXISTS', `key ${name} exists already; refusing to overwrite`);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const { signer, privateKey } = generateSigner(algorithm);
    const pem = privateKey.export({
      type: 'pkcs8',
      format: 'pem',
      cipher: 'aes-256-cbc',
      passphrase: this.passphrase,
    }) as string;
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, pem, { mode: 0o600, flag: 'wx' });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
    return signer;
  }

  async load(name: string): Promise<Signer> {
    const path = this.path(name);
    let pem: string;
    try {
      pem = await readFile(path, 'utf8');
    } catch (cause) {
      throw new PkiError('KEY_MISSING', `key ${name} not found in the key store`, { cause });
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: 'pem', passphrase: this.passphrase });
    } catch (cause) {
      throw new PkiError('KEY_DECRYPT_FAILED', `key ${name} could not be decrypted: wrong passphrase?`, {
        cause,
      });
    }
    return signerFromKeyObject(key);
  }
}
