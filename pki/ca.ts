/**
 * The fleet's CA hierarchy: an offline-capable root signs a device-issuing CA and an infrastructure CA
 * (brokers, stations, services, operators). Certificates live as PEM beside the key store; keys live only
 * behind the KeyStore interface.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as der from './der.ts';
import { PkiError } from './errors.ts';
import { exists, writeAtomic } from './files.ts';
import type { KeyAlgorithm, KeyStore, Signer } from './keystore.ts';
import {
  buildCaCertificate,
  certToPem,
  type IssuedCertificate,
  type IssueRequest,
  Issuer,
  PROFILE_CA,
  type ProfileName,
} from './x509.ts';

export interface CaConfig {
  organization: string;
  algorithm: KeyAlgorithm;
  /** Base URL of the public (plain HTTP) endpoint: CRLs at `${base}/crl/<ca>.crl`, OCSP at `${base}/ocsp`. */
  publicBaseUrl?: string;
  rootValidityDays: number;
  intermediateValidityDays: number;
  validityDays: Partial<Record<ProfileName, number>>;
}

export const DEFAULT_CA_CONFIG: CaConfig = Object.freeze({
  organization: 'Fleet',
  algorithm: 'P-256',
  publicBaseUrl: 'http://localhost:8080',
  // The issuing CAs must outlive the 20-year device certificates they sign.
  rootValidityDays: 30 * 365,
  intermediateValidityDays: 25 * 365,
  validityDays: {},
});

export type IssuingCa = 'device' | 'infrastructure';
const CERT_FILES = {
  root: 'root.crt.pem',
  device: 'device-ca.crt.pem',
  infrastructure: 'infrastructure-ca.crt.pem',
};
const KEY_NAMES = { root: 'root', device: 'device-ca', infrastructure: 'infrastructure-ca' };

export const crlUrl = (base: string, ca: IssuingCa) => `${base.replace(/\/$/, '')}/crl/${ca}.crl`;
export const ocspUrl = (base: string) => `${base.replace(/\/$/, '')}/ocsp`;

export class CertificateAuthority {
  constructor(
    readonly root: Buffer,
    readonly issuers: Readonly<Record<IssuingCa, Issuer>>,
    readonly rootSigner: Signer | undefined,
  ) {}

  issuerFor(profile: ProfileName): Issuer {
    return this.issuers[PROFILE_CA[profile]];
  }

  issue(req: IssueRequest): IssuedCertificate {
    return this.issuerFor(req.profile).issue(req);
  }

  /** The chain a holder of a `profile` certificate presents after its own: the issuing CA (not the root). */
  chainFor(profile: ProfileName): Buffer[] {
    return [this.issuerFor(profile).certificate];
  }

  get rootPem(): string {
    return certToPem(this.root);
  }

  /** Root and both issuing CAs, PEM, for a TLS `ca` trust list. */
  get trustPem(): string {
    return [this.root, this.issuers.device.certificate, this.issuers.infrastructure.certificate]
      .map(certToPem)
      .join('');
  }
}

function makeIssuers(
  config: CaConfig,
  device: { signer: Signer; cert: Buffer },
  infra: { signer: Signer; cert: Buffer },
) {
  const base = config.publicBaseUrl;
  const mk = (role: IssuingCa, x: { signer: Signer; cert: Buffer }) =>
    new Issuer({
      role,
      signer: x.signer,
      certificate: x.cert,
      organization: config.organization,
      crlUrl: base ? crlUrl(base, role) : undefined,
      ocspUrl: base ? ocspUrl(base) : undefined,
      validityDays: config.validityDays,
    });
  return Object.freeze({ device: mk('device', device), infrastructure: mk('infrastructure', infra) });
}

/** True when a CA hierarchy exists in `dir`. */
export async function caExists(dir: string): Promise<boolean> {
  return exists(join(dir, CERT_FILES.root));
}

/**
 * Creates the hierarchy in `dir` with keys in `keys`. Never overwrites: if any CA file or key exists it
 * refuses with CA_EXISTS, so a half-present CA is reported rather than silently replaced.
 */
export async function createCa(dir: string, keys: KeyStore, config: CaConfig): Promise<CertificateAuthority> {
  for (const f of Object.values(CERT_FILES)) {
    if (await exists(join(dir, f)))
      throw new PkiError('CA_EXISTS', `a CA exists already in ${dir}; refusing to overwrite`);
  }
  for (const k of Object.values(KEY_NAMES)) {
    if (await keys.has(k))
      throw new PkiError('CA_EXISTS', `CA key ${k} exists already; refusing to overwrite`);
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const org = config.organization;
  const rootSigner = await keys.create(KEY_NAMES.root, config.algorithm);
  const root = buildCaCertificate({
    subject: { commonName: `${org} Root CA`, organization: org },
    subjectSpki: rootSigner.spki,
    issuerSigner: rootSigner,
    pathLen: 1,
    validityDays: config.rootValidityDays,
  });
  const inter = async (role: IssuingCa, cn: string) => {
    const signer = await keys.create(KEY_NAMES[role], config.algorithm);
    const cert = buildCaCertificate({
      subject: { commonName: cn, organization: org },
      subjectSpki: signer.spki,
      issuerSigner: rootSigner,
      issuerCertificate: root,
      pathLen: 0,
      validityDays: config.intermediateValidityDays,
    });
    return { signer, cert };
  };
  const device = await inter('device', `${org} Device CA`);
  const infra = await inter('infrastructure', `${org} Infrastructure CA`);
  // Intermediates first, root last: caExists() keys on the root file, so a crash mid-way leaves no root
  // and the next createCa reports the leftover keys instead of pretending a CA exists.
  await writeAtomic(join(dir, CERT_FILES.device), certToPem(device.cert), 0o644);
  await writeAtomic(join(dir, CERT_FILES.infrastructure), certToPem(infra.cert), 0o644);
  await writeAtomic(join(dir, CERT_FILES.root), certToPem(root), 0o644);
  return new CertificateAuthority(root, makeIssuers(config, device, infra), rootSigner);
}

/** Loads the hierarchy and checks that each certificate matches its key and chains to the root. */
export async function loadCa(dir: string, keys: KeyStore, config: CaConfig): Promise<CertificateAuthority> {
  if (!(await caExists(dir))) throw new PkiError('CA_MISSING', `no CA in ${dir}: run \`fleet init\` first`);
  const readCert = async (role: keyof typeof CERT_FILES) => {
    const pem = await readFile(join(dir, CERT_FILES[role]), 'utf8');
    const d = der.fromPemAll(pem, 'CERTIFICATE')[0];
    if (!d) throw new PkiError('CA_INVALID', `${CERT_FILES[role]} holds no certificate`);
    return d;
  };
  const root = await readCert('root');
  const rootX = new X509Certificate(root);
  const load = async (role: IssuingCa) => {
    const cert = await readCert(role);
    const signer = await keys.load(KEY_NAMES[role]);
    const x = new X509Certificate(cert);
    if (!x.verify(rootX.publicKey))
      throw new PkiError('CA_INVALID', `the ${role} CA is not signed by the root`);
    if (!x.publicKey.export({ type: 'spki', format: 'der' }).equals(signer.spki)) {
      throw new PkiError('CA_INVALID', `the ${role} CA certificate does not match its key`);
    }
    return { signer, cert };
  };
  const device = await load('device');
  const infra = await load('infrastructure');
  // The root key stays where it is (offline in production); load it only if present.
  const rootSigner = (await keys.has(KEY_NAMES.root)) ? await keys.load(KEY_NAMES.root) : undefined;
  return new CertificateAuthority(root, makeIssuers(config, device, infra), rootSigner);
}

/** Loads the CA in `dir`, creating it first if there is none. Idempotent. */
export async function openCa(
  dir: string,
  keys: KeyStore,
  config: CaConfig,
): Promise<{ ca: CertificateAuthority; created: boolean }> {
  if (await caExists(dir)) return { ca: await loadCa(dir, keys, config), created: false };
  return { ca: await createCa(dir, keys, config), created: true };
}
