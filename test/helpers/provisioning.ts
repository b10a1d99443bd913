/**
 * Test harness for the provisioning service: a throwaway CA (the project's own CA code), a registry on
 * PGlite or on a fresh PostgreSQL database, the service on real listeners (port 0), and mTLS clients with
 * certificates issued at test time. Nothing here is committed key material.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import postgres from 'postgres';
import { Agent, request } from 'undici';
import type { Identity, IdentityKind } from '../../pki/ids.ts';
import { certToPem } from '../../pki/x509.ts';
import { buildProvisioning, type Provisioning, type ProvisioningConfig } from '../../provisioning/index.ts';
import { Issuance } from '../../provisioning/issuance.ts';
import { openRegistry, type Registry } from '../../registry/index.ts';
import { csrPem, makeTestCa, nodeCsr, type TestCa } from './pki.ts';

export interface Backend {
  name: string;
  open(): Promise<Registry>;
  /** The database URL the backend uses (PostgreSQL only), for child processes. */
  url?: string;
  cleanup(): Promise<void>;
}

export function pgliteBackend(): Backend {
  return { name: 'PGlite', open: () => openRegistry(), cleanup: async () => {} };
}

/** A fresh database per run on the server DATABASE_URL points at, dropped at the end (reruns start clean). */
export function postgresBackend(databaseUrl: string, tag = 'prov'): Backend {
  const dbName = `fleet_${tag}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const url = new URL(databaseUrl);
  url.pathname = `/${dbName}`;
  let created = false;
  const backend: Backend = {
    name: 'PostgreSQL',
    url: url.toString(),
    async open() {
      if (!created) {
        const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
        await admin.unsafe(`create database ${dbName}`);
        await admin.end();
        created = true;
      }
      return openRegistry({ databaseUrl: url.toString() });
    },
    async cleanup() {
      if (!created) return;
      const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
      await admin.unsafe(`drop database if exists ${dbName} with (force)`);
      await admin.end();
    },
  };
  return backend;
}

export function backends(tag?: string): Backend[] {
  const list = [pgliteBackend()];
  const url = process.env['DATABASE_URL'];
  if (url) list.push(postgresBackend(url, tag));
  return list;
}

export interface Creds {
  kind: IdentityKind;
  id: string;
  serial: string;
  /** Leaf then its issuing CA. */
  certPem: string;
  keyPem: string;
  certPath: string;
  keyPath: string;
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test convenience
  json: any;
}

export interface Harness {
  ca: TestCa;
  registry: Registry;
  prov: Provisioning;
  apiUrl: string;
  publicUrl: string;
  /** The bootstrap operator (issued directly, like `fleet init`). */
  operator: Creds;
  /** Credentials for a principal issued straight through Issuance (no API). */
  issueDirect(kind: 'station' | 'operator' | 'service', id: string, extra?: object): Promise<Creds>;
  /** A key pair and its CSR PEM (node:crypto). */
  keyAndCsr(cn?: string): { keyPem: string; csrPem: string };
  /** Writes credentials to files (for curl and openssl). */
  files(creds: { certPem: string; keyPem: string }, name: string): Promise<{ cert: string; key: string }>;
  /** An mTLS request with `creds` (or none) trusting only the fleet root. */
  call(
    creds: Creds | null,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  agent(creds: Creds | null): Agent;
  close(): Promise<void>;
}

let seq = 0;
export function uid(prefix: string): string {
  seq += 1;
  return `${prefix}-${process.pid}-${seq}-${Math.random().toString(36).slice(2, 6)}`;
}

export async function startHarness(
  backend: Backend,
  config: Partial<ProvisioningConfig> = {},
): Promise<Harness> {
  const ca = await makeTestCa();
  const registry = await backend.open();
  const logger = pino({ level: process.env['FLEET_TEST_LOG'] ?? 'silent' });
  const prov = await buildProvisioning(
    {
      host: 'localhost',
      apiPort: 0,
      publicPort: 0,
      brokerUrl: 'mqtts://localhost:8883',
      ...config,
    },
    { ca: ca.ca, registry, logger },
  );
  const ports = await prov.listen();
  const issuance = new Issuance(ca.ca, registry);
  const agents = new Map<string, Agent>();

  const keyAndCsr = (cn?: string) => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    return {
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      csrPem: csrPem(nodeCsr(privateKey, cn)),
    };
  };
  const files = async (c: { certPem: string; keyPem: string }, name: string) => ({
    cert: await ca.write(`${name}.crt.pem`, c.certPem),
    key: await ca.write(`${name}.key.pem`, c.keyPem),
  });
  const issueDirect = async (kind: 'station' | 'operator' | 'service', id: string, extra: object = {}) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const r = await issuance.issuePrincipal(
      { kind, id, ...extra } as Parameters<Issuance['issuePrincipal']>[0],
      { spki: publicKey.export({ type: 'spki', format: 'der' }) },
      'system:test',
    );
    const certPem = certToPem(r.der) + r.chain.map(certToPem).join('');
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const f = await files({ certPem, keyPem }, `${kind}-${id}`);
    return { kind, id, serial: r.serial, certPem, keyPem, certPath: f.cert, keyPath: f.key };
  };
  const agent = (creds: Creds | null) => {
    const key = creds ? creds.serial : 'anonymous';
    let a = agents.get(key);
    if (!a) {
      a = new Agent({
        connect: {
          ca: ca.ca.rootPem,
          ...(creds ? { cert: creds.certPem, key: creds.keyPem } : {}),
          servername: 'localhost',
        },
      });
      agents.set(key, a);
    }
    return a;
  };
  const apiUrl = `https://localhost:${ports.apiPort}`;
  const call: Harness['call'] = async (creds, method, path, body, headers = {}) => {
    const isJson = body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body);
    const res = await request(`${apiUrl}${path}`, {
      method: method as 'GET',
      dispatcher: agent(creds),
      headers: { ...(isJson ? { 'content-type': 'application/json' } : {}), ...headers },
      body: isJson ? JSON.stringify(body) : (body as string | Buffer | undefined),
    });
    const text = await res.body.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, headers: res.headers, text, json };
  };
  const operator = await issueDirect('operator', uid('admin'));
  return {
    ca,
    registry,
    prov,
    apiUrl,
    publicUrl: `http://localhost:${ports.publicPort}`,
    operator,
    issueDirect,
    keyAndCsr,
    files,
    call,
    agent,
    async close() {
      for (const a of agents.values()) await a.close().catch(() => {});
      await prov.close();
      await registry.close();
      await ca.cleanup();
    },
  };
}

/** Creates a station through the operator API and issues its certificate for a key made here. */
export async function createStation(
  h: Harness,
  opts: { id?: string; products: string[]; hourlyQuota?: number | null },
): Promise<Creds> {
  const id = opts.id ?? uid('station');
  const created = await h.call(h.operator, 'POST', '/v1/stations', {
    id,
    products: opts.products,
    ...(opts.hourlyQuota !== undefined ? { hourlyQuota: opts.hourlyQuota } : {}),
  });
  if (created.status !== 201) throw new Error(`station create: ${created.status} ${created.text}`);
  const { keyPem, csrPem } = h.keyAndCsr(id);
  const issued = await h.call(h.operator, 'POST', `/v1/stations/${id}/certificates`, { csr: csrPem });
  if (issued.status !== 201) throw new Error(`station issue: ${issued.status} ${issued.text}`);
  const certPem = issued.json.certificate + issued.json.chain.join('');
  const f = await h.files({ certPem, keyPem }, `station-${id}`);
  return {
    kind: 'station',
    id,
    serial: issued.json.serial,
    certPem,
    keyPem,
    certPath: f.cert,
    keyPath: f.key,
  };
}

/** Credentials of an enrolled device from an enrollment answer. */
export async function deviceCreds(
  h: Harness,
  answer: { deviceId: string; serial: string; certificate: string; chain: string[] },
  keyPem: string,
): Promise<Creds> {
  const certPem = answer.certificate + answer.chain.join('');
  const f = await h.files({ certPem, keyPem }, `device-${answer.deviceId}-${answer.serial.slice(0, 8)}`);
  return {
    kind: 'device',
    id: answer.deviceId,
    serial: answer.serial,
    certPem,
    keyPem,
    certPath: f.cert,
    keyPath: f.key,
  };
}

export async function writeTemp(h: Harness, name: string, data: string | Buffer): Promise<string> {
  const p = join(h.ca.dir, name);
  await writeFile(p, data);
  return p;
}

export type { Identity };
