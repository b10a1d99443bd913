/**
 * Test helpers for pki: a throwaway CA hierarchy in a temp dir (the real FileKeyStore with a random
 * passphrase), CSRs made by the openssl CLI and by node:crypto, and a thin openssl runner. Nothing here is
 * committed key material: every certificate is made at test time.
 */
import { execFile } from 'node:child_process';
import { createPublicKey, ECDH, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { type CaConfig, type CertificateAuthority, createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import { buildCsr, csrToPem } from '../../pki/csr-build.ts';
import * as der from '../../pki/der.ts';
import { FileKeyStore, type KeyAlgorithm } from '../../pki/keystore.ts';
import { OID } from '../../pki/oids.ts';
import { certToPem } from '../../pki/x509.ts';

const execFileP = promisify(execFile);

export interface OpensslResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the openssl CLI; never throws on a non-zero exit (tests assert on `code` and output). */
export async function openssl(
  args: string[],
  opts: { cwd?: string; input?: Buffer } = {},
): Promise<OpensslResult> {
  try {
    const { stdout, stderr } = await execFileP('openssl', args, {
      cwd: opts.cwd,
      encoding: 'utf8',
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof err.code === 'number' ? err.code : 1,
      stdout: err.stdout ?? '',
      stderr: err.stderr ?? '',
    };
  }
}

/** What `openssl verify` is asked to do; the argument list is built in one place from it. */
export interface VerifyOptions {
  /** Trusted roots (-CAfile). */
  readonly root: string;
  /** Untrusted intermediates (-untrusted). */
  readonly chain?: string | undefined;
  readonly purpose?: 'sslclient' | 'sslserver' | undefined;
  readonly hostname?: string | undefined;
  readonly ip?: string | undefined;
  /** -crl_check, with the CRL in this file (-CRLfile), or (true) in the -CAfile bundle. */
  readonly crl?: string | true | undefined;
}

/** `openssl verify` of one or more certificate files. */
export function opensslVerify(certs: string | readonly string[], o: VerifyOptions): Promise<OpensslResult> {
  return openssl([
    'verify',
    ...(o.purpose ? ['-purpose', o.purpose] : []),
    ...(o.hostname ? ['-verify_hostname', o.hostname] : []),
    ...(o.ip ? ['-verify_ip', o.ip] : []),
    ...(o.crl ? ['-crl_check', ...(o.crl === true ? [] : ['-CRLfile', o.crl])] : []),
    '-CAfile',
    o.root,
    ...(o.chain ? ['-untrusted', o.chain] : []),
    ...(typeof certs === 'string' ? [certs] : certs),
  ]);
}

/** `openssl ocsp` checking a response (-respin) against the request it answers (-reqin), nonce included. */
export function opensslOcspAgainstRequest(o: {
  readonly request: string;
  readonly response: string;
  readonly root: string;
  readonly verifyOther?: string | undefined;
  readonly issuer?: string | undefined;
  readonly text?: boolean | undefined;
}): Promise<OpensslResult> {
  return openssl([
    'ocsp',
    '-reqin',
    o.request,
    '-respin',
    o.response,
    '-CAfile',
    o.root,
    ...(o.verifyOther ? ['-verify_other', o.verifyOther] : []),
    ...(o.issuer ? ['-issuer', o.issuer] : []),
    ...(o.text ? ['-resp_text'] : []),
  ]);
}

/** `openssl ocsp` reading the status of `certs` from a response, with no nonce to check. */
export function opensslOcspStatus(o: {
  readonly response: string;
  readonly issuer: string;
  readonly certs: readonly string[];
  readonly root: string;
  readonly verifyOther?: string | undefined;
  readonly sha256?: boolean | undefined;
  readonly text?: boolean | undefined;
}): Promise<OpensslResult> {
  return openssl([
    'ocsp',
    ...(o.text ? ['-resp_text'] : []),
    '-respin',
    o.response,
    '-issuer',
    o.issuer,
    ...(o.sha256 ? ['-sha256'] : []),
    ...o.certs.flatMap((c) => ['-cert', c]),
    '-CAfile',
    o.root,
    ...(o.verifyOther ? ['-verify_other', o.verifyOther] : []),
    '-no_nonce',
  ]);
}

/** What a test expects of an `openssl verify` run (the column of verify tables). */
export const VERIFY = {
  /** Prints `<file>: OK` and exits 0. */
  okAndExit0: (r: OpensslResult) => {
    expect(r.stdout).toContain(': OK');
    expect(r.code).toBe(0);
  },
  /** Prints `<file>: OK`. */
  ok: (r: OpensslResult) => {
    expect(r.stdout).toContain(': OK');
  },
  exit0: (r: OpensslResult) => {
    expect(r.code).toBe(0);
  },
  fails: (r: OpensslResult) => {
    expect(r.code).not.toBe(0);
  },
} as const;

export interface TestCa {
  readonly dir: string;
  readonly caDir: string;
  readonly keyDir: string;
  readonly passphrase: string;
  readonly config: CaConfig;
  readonly ca: CertificateAuthority;
  /** Writes a file into the temp dir and returns its path. */
  write(name: string, data: string | Buffer): Promise<string>;
  /** Paths of root.pem, chain.pem (both issuing CAs) and one file per issuing CA. */
  readonly files: { root: string; chain: string; deviceCa: string; infrastructureCa: string };
  cleanup(): Promise<void>;
}

export async function makeTestCa(
  opts: { algorithm?: KeyAlgorithm; config?: Partial<CaConfig> } = {},
): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), 'fleet-pki-'));
  const caDir = join(dir, 'ca');
  const keyDir = join(dir, 'keys');
  const passphrase = randomBytes(24).toString('base64url');
  const config: CaConfig = {
    ...DEFAULT_CA_CONFIG,
    organization: 'Fleet Test',
    ...opts.config,
    algorithm: opts.algorithm ?? opts.config?.algorithm ?? 'P-256',
  };
  const ca = await createCa(caDir, new FileKeyStore(keyDir, passphrase), config);
  const write = async (name: string, data: string | Buffer) => {
    const p = join(dir, name);
    await writeFile(p, data);
    return p;
  };
  const files = {
    root: await write('root.pem', certToPem(ca.root)),
    chain: await write(
      'chain.pem',
      certToPem(ca.issuers.device.certificate) + certToPem(ca.issuers.infrastructure.certificate),
    ),
    deviceCa: await write('device-ca.pem', certToPem(ca.issuers.device.certificate)),
    infrastructureCa: await write('infrastructure-ca.pem', certToPem(ca.issuers.infrastructure.certificate)),
  };
  return {
    dir,
    caDir,
    keyDir,
    passphrase,
    config,
    ca,
    write,
    files,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

// ------------------------------------------------------------------ CSRs with openssl

export type OpensslKeySpec =
  | { ec: 'P-256' | 'P-384' | 'P-521' | 'secp256k1' }
  | { rsa: number }
  | { ed25519: true }
  | { ed448: true };

/** `openssl req -new -newkey …` in `dir`; returns the CSR PEM and the private key PEM. */
export async function opensslCsr(
  dir: string,
  subject: string | undefined,
  key: OpensslKeySpec = { ec: 'P-256' },
): Promise<{ csrPem: string; keyPem: string; keyPath: string; csrPath: string }> {
  const tag = randomBytes(6).toString('hex');
  const keyPath = join(dir, `${tag}.key.pem`);
  const csrPath = join(dir, `${tag}.csr.pem`);
  const keyArgs =
    'ec' in key
      ? ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${key.ec}`]
      : 'rsa' in key
        ? ['-newkey', `rsa:${key.rsa}`]
        : ['-newkey', 'ed25519' in key ? 'ed25519' : 'ed448'];
  const r = await openssl([
    'req',
    '-new',
    ...keyArgs,
    '-nodes',
    '-keyout',
    keyPath,
    '-out',
    csrPath,
    '-subj',
    subject === undefined ? '/' : subject,
  ]);
  if (r.code !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return {
    csrPem: await readFile(csrPath, 'utf8'),
    keyPem: await readFile(keyPath, 'utf8'),
    keyPath,
    csrPath,
  };
}

// ------------------------------------------------------------------ CSRs with node:crypto

export type NodeKeyType = 'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048' | 'RSA-1024' | 'secp256k1' | 'P-521';

export function generateKey(type: NodeKeyType): KeyObject {
  switch (type) {
    case 'P-256':
      return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    case 'P-384':
      return generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    case 'P-521':
      return generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey;
    case 'secp256k1':
      return generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey;
    case 'Ed25519':
      return generateKeyPairSync('ed25519').privateKey;
    case 'RSA-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    case 'RSA-1024':
      return generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  }
}

/** A PKCS#10 request built with node:crypto (pki's builder), so a CSR costs no subprocess. */
export const nodeCsr = buildCsr;
export const csrPem = csrToPem;

/** The SPKI of an EC key with its point in compressed form (SEC 1 §2.3.3), which some devices send. */
export function compressedSpki(key: KeyObject): Buffer {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const curveOid = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? OID.secp384r1 : OID.prime256v1;
  const curveName = curveOid === OID.secp384r1 ? 'secp384r1' : 'prime256v1';
  const size = curveOid === OID.secp384r1 ? 97 : 65;
  const point = spki.subarray(spki.length - size);
  const compressed = ECDH.convertKey(point, curveName, undefined, undefined, 'compressed') as Buffer;
  return der.seq(der.seq(der.oid(OID.ecPublicKey), der.oid(curveOid)), der.bitString(compressed));
}
