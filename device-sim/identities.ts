/**
 * Simulated devices' identities. Each device makes its own key pair here, as a real one would, and sends
 * a CSR to be enrolled; the key never leaves the identity directory. The directory is a cache reused across
 * runs, and its layout is plain key/certificate pairs, so the same identities can drive another broker:
 *
 *   DIR/manifest.json        what made the cache (key type, product, root fingerprint)
 *   DIR/root.crt.pem         the fleet root the certificates chain to
 *   DIR/<id>.key.pem         PKCS#8 private key, 0600
 *   DIR/<id>.crt.pem         device certificate followed by its issuing CA
 *   DIR/observer/<name>.*    the service identity of the latency subscriber
 *
 * Enrollment goes through an `Enroller`: the station batch API, or an in-process one on the CA and the
 * registry (the embedded default and tests).
 */
import { createHash, createPrivateKey, generateKeyPair, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildCsr } from '../pki/csr-build.ts';
import * as der from '../pki/der.ts';
import { exists, writeAtomic } from '../pki/files.ts';
import { SimError } from './errors.ts';
import { deviceId, type KeyType } from './scenario.ts';

export interface DeviceIdentity {
  readonly id: string;
  readonly index: number;
  readonly keyFile: string;
  readonly certFile: string;
}

export interface EnrollRequest {
  readonly id: string;
  readonly product: string;
  /** PKCS#10 DER. */
  readonly csr: Buffer;
}

export type EnrollOutcome =
  | { readonly id: string; readonly ok: true /** leaf + chain, PEM */; readonly certPem: string }
  | { readonly id: string; readonly ok: false; readonly code: string; readonly message: string };

/** Who issues the simulator's certificates. */
export interface Enroller {
  /** Enrolls a batch; one outcome per request, in any order. Idempotent for the same id and key. */
  enrollDevices(reqs: readonly EnrollRequest[]): Promise<EnrollOutcome[]>;
  /** Issues a service certificate (the latency subscriber); leaf + chain PEM. */
  enrollService(id: string, csr: Buffer): Promise<string>;
  /** The fleet root, PEM. */
  rootPem(): Promise<string>;
}

// ------------------------------------------------------------------------------------------------ keys

export function generateDeviceKey(type: KeyType): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _pub: KeyObject, priv: KeyObject) => (err ? reject(err) : resolve(priv));
    if (type === 'P-256') generateKeyPair('ec', { namedCurve: 'prime256v1' }, done);
    else if (type === 'Ed25519') generateKeyPair('ed25519', {}, done);
    else generateKeyPair('rsa', { modulusLength: 2048 }, done);
  });
}

// ------------------------------------------------------------------------------------------------ cache

interface Manifest {
  version: 1;
  keyType: KeyType;
  product: string;
  rootSha256: string;
  createdAt: string;
}

export function pemSha256(pem: string): string {
  const d = der.fromPemAll(pem, 'CERTIFICATE')[0];
  if (!d) throw new SimError('SIM_IDENTITIES_INVALID', 'the root file holds no PEM CERTIFICATE');
  return createHash('sha256').update(d).digest('hex');
}

async function runPool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(lanes);
}

export interface EnsureOptions {
  readonly dir: string;
  readonly devices: number;
  readonly idPrefix: string;
  readonly product: string;
  readonly keyType: KeyType;
  readonly enroller: Enroller;
  /** Send every identity, cached or not, through enrollment again (idempotent: same key, same certificate). */
  readonly reenroll?: boolean;
  /** Enrollment batch size. */
  readonly batchSize?: number;
  readonly onProgress?: (done: number, total: number) => void;
  /** Ids to pass over (revoked in an earlier run, see `revokedIn`); the next ids take their place. */
  readonly skip?: ReadonlySet<string>;
}

/** The file in an identity directory listing the devices revoked by earlier runs, one id a line. */
export const REVOKED_FILE = 'revoked.txt';

/** Ids revoked by earlier runs with this identity directory (empty when none). */
export async function revokedIn(dir: string): Promise<Set<string>> {
  try {
    return new Set(
      (await readFile(join(dir, REVOKED_FILE), 'utf8')).split('\n').filter((l) => l.trim() !== ''),
    );
  } catch {
    return new Set();
  }
}

/** Records revoked ids, so later runs leave them out: a revoked device can never connect again. */
export async function recordRevoked(dir: string, ids: readonly string[]): Promise<void> {
  if (!ids.length) return;
  const all = await revokedIn(dir);
  for (const id of ids) all.add(id);
  await writeAtomic(join(dir, REVOKED_FILE), `${[...all].join('\n')}\n`, 0o644);
}

export interface IdentitySet {
  readonly dir: string;
  readonly rootPem: string;
  readonly devices: readonly DeviceIdentity[];
  /** The observer's service identity, when there is one. */
  readonly observer: { id: string; keyFile: string; certFile: string } | undefined;
  /** How many devices were enrolled in this call (0 when all came from the cache). */
  readonly enrolled: number;
}

export const OBSERVER_ID = 'sim-observer';

/**
 * Makes sure `devices` identities exist in the cache: keys made here, missing certificates enrolled in
 * batches. Keys are written before their CSR is sent, so a run killed mid-enrollment resends the same CSR
 * next time and gets the same certificate back.
 */
export async function ensureIdentities(o: EnsureOptions): Promise<IdentitySet> {
  await mkdir(o.dir, { recursive: true, mode: 0o700 });
  const rootPem = await o.enroller.rootPem();
  const rootSha256 = pemSha256(rootPem);
  const manifestFile = join(o.dir, 'manifest.json');
  if (await exists(manifestFile)) {
    let m: Manifest;
    try {
      m = JSON.parse(await readFile(manifestFile, 'utf8')) as Manifest;
    } catch (cause) {
      throw new SimError('SIM_IDENTITIES_INVALID', `${manifestFile} is not valid JSON`, { cause });
    }
    if (m.rootSha256 !== rootSha256) {
      throw new SimError(
        'SIM_IDENTITIES_STALE',
        `the identities in ${o.dir} were enrolled under another CA; remove the directory or pick another with --identities`,
      );
    }
    if (m.keyType !== o.keyType) {
      throw new SimError(
        'SIM_IDENTITIES_STALE',
        `the identities in ${o.dir} have ${m.keyType} keys, not ${o.keyType}; pick another directory for ${o.keyType}`,
      );
    }
  } else {
    const m: Manifest = {
      version: 1,
      keyType: o.keyType,
      product: o.product,
      rootSha256,
      createdAt: new Date().toISOString(),
    };
    await writeAtomic(manifestFile, `${JSON.stringify(m, null, 2)}\n`, 0o644);
  }
  await writeAtomic(join(o.dir, 'root.crt.pem'), rootPem, 0o644);

  const devices: DeviceIdentity[] = [];
  const todo: { ident: DeviceIdentity; key?: KeyObject }[] = [];
  const skip = o.skip ?? new Set<string>();
  // Bounded: every skipped id is one of `skip`, so at most devices + skip.size indices are looked at.
  for (let i = 0; devices.length < o.devices && i < o.devices + skip.size; i++) {
    const id = deviceId(o, i);
    if (skip.has(id)) continue;
    const ident = {
      id,
      index: i,
      keyFile: join(o.dir, `${id}.key.pem`),
      certFile: join(o.dir, `${id}.crt.pem`),
    };
    devices.push(ident);
    if (o.reenroll || !(await exists(ident.certFile))) todo.push({ ident });
  }
  // Keys: existing ones are reused (the device keeps its key), missing ones generated in parallel.
  await runPool(todo, 8, async (t) => {
    if (await exists(t.ident.keyFile)) {
      t.key = createPrivateKey(await readFile(t.ident.keyFile, 'utf8'));
    } else {
      t.key = await generateDeviceKey(o.keyType);
      await writeAtomic(t.ident.keyFile, t.key.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    }
  });
  const batch = o.batchSize ?? 500;
  let done = 0;
  for (let i = 0; i < todo.length; i += batch) {
    const slice = todo.slice(i, i + batch);
    const reqs = slice.map((t) => ({
      id: t.ident.id,
      product: o.product,
      csr: buildCsr(t.key!, t.ident.id),
    }));
    const outcomes = await o.enroller.enrollDevices(reqs);
    const byId = new Map(outcomes.map((r) => [r.id, r]));
    for (const t of slice) {
      const r = byId.get(t.ident.id);
      if (!r?.ok) {
        const why = r && !r.ok ? `${r.code}: ${r.message}` : 'no answer for it';
        const hint =
          r && !r.ok && r.code === 'DEVICE_KEY_CONFLICT'
            ? `; the id was enrolled from another identity directory: use that one (--identities), or another --id-prefix`
            : '';
        throw new SimError('SIM_ENROLL_FAILED', `enrolling ${t.ident.id} failed (${why})${hint}`, {
          details: { id: t.ident.id, ...(r && !r.ok ? { code: r.code } : {}) },
        });
      }
      await writeAtomic(t.ident.certFile, r.certPem, 0o644);
    }
    done += slice.length;
    o.onProgress?.(done, todo.length);
  }

  const observer = await ensureObserver(o.dir, o.enroller);
  return { dir: o.dir, rootPem, devices, observer, enrolled: todo.length };
}

async function ensureObserver(dir: string, enroller: Enroller): Promise<IdentitySet['observer']> {
  const odir = join(dir, 'observer');
  const keyFile = join(odir, `${OBSERVER_ID}.key.pem`);
  const certFile = join(odir, `${OBSERVER_ID}.crt.pem`);
  if ((await exists(keyFile)) && (await exists(certFile))) return { id: OBSERVER_ID, keyFile, certFile };
  await mkdir(odir, { recursive: true, mode: 0o700 });
  const key = await generateDeviceKey('P-256');
  await writeAtomic(keyFile, key.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  try {
    const pem = await enroller.enrollService(OBSERVER_ID, buildCsr(key, OBSERVER_ID));
    await writeAtomic(certFile, pem, 0o644);
    return { id: OBSERVER_ID, keyFile, certFile };
  } catch {
    // Without a service certificate the run still measures connects and publishes; the report says
    // that delivery latency was not measured.
    return undefined;
  }
}

/**
 * Reads an existing directory of key/certificate pairs (`<id>.key.pem` + `<id>.crt.pem`, or `<id>.key` +
 * `<id>.crt`), for example to drive mosquitto with the same identities. Ids are the file names, sorted.
 */
export async function readIdentityDir(
  dir: string,
  opts: { devices: number; rootPem?: string | undefined },
): Promise<IdentitySet> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    throw new SimError('SIM_IDENTITIES_INVALID', `cannot read the identity directory ${dir}`, { cause });
  }
  const keys = new Map<string, string>();
  const certs = new Map<string, string>();
  for (const n of names) {
    const k = /^(.+?)\.key(\.pem)?$/.exec(n);
    const c = /^(.+?)\.(crt|cert)(\.pem)?$/.exec(n);
    if (k) keys.set(k[1]!, join(dir, n));
    else if (c && c[1] !== 'root' && c[1] !== 'ca') certs.set(c[1]!, join(dir, n));
  }
  const revoked = await revokedIn(dir);
  const ids = [...keys.keys()].filter((id) => certs.has(id) && !revoked.has(id)).sort();
  const lonely = [...keys.keys()].filter((id) => !certs.has(id));
  if (ids.length < opts.devices) {
    throw new SimError(
      'SIM_IDENTITIES_INVALID',
      `${dir} holds ${ids.length} key/certificate pairs but ${opts.devices} devices were asked for` +
        (lonely.length ? ` (keys without a certificate: ${lonely.slice(0, 3).join(', ')}...)` : ''),
    );
  }
  let rootPem = opts.rootPem;
  if (!rootPem) {
    for (const f of ['root.crt.pem', 'root.crt', 'ca.crt', 'ca.pem']) {
      if (await exists(join(dir, f))) {
        rootPem = await readFile(join(dir, f), 'utf8');
        break;
      }
    }
  }
  if (!rootPem)
    throw new SimError(
      'SIM_IDENTITIES_INVALID',
      `no root certificate: put root.crt.pem in ${dir} or pass --ca`,
    );
  const devices = ids.slice(0, opts.devices).map((id, index) => ({
    id,
    index,
    keyFile: keys.get(id)!,
    certFile: certs.get(id)!,
  }));
  // A certificate whose key does not match fails every connect the same way; say so before the run.
  const first = devices[0]!;
  const cert = new X509Certificate(await readFile(first.certFile));
  if (!cert.checkPrivateKey(createPrivateKey(await readFile(first.keyFile, 'utf8')))) {
    throw new SimError('SIM_IDENTITIES_INVALID', `${first.certFile} does not belong to ${first.keyFile}`);
  }
  const odir = join(dir, 'observer');
  const observer =
    (await exists(join(odir, `${OBSERVER_ID}.key.pem`))) &&
    (await exists(join(odir, `${OBSERVER_ID}.crt.pem`)))
      ? {
          id: OBSERVER_ID,
          keyFile: join(odir, `${OBSERVER_ID}.key.pem`),
          certFile: join(odir, `${OBSERVER_ID}.crt.pem`),
        }
      : undefined;
  return { dir, rootPem, devices, observer, enrolled: 0 };
}
