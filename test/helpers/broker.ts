/**
 * Test helpers for the broker: a real CA made at test time, credentials for every kind of identity (and
 * the bad ones the refusal matrix needs), a running broker on a free port, and clients (MQTT.js, raw TLS
 * with mqtt-packet, mosquitto_pub/sub).
 */
import { execFile } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import pino from 'pino';
import postgres from 'postgres';
import {
  type Broker,
  type BrokerConfig,
  type BrokerDeps,
  brokerConfig,
  buildBroker,
} from '../../broker/index.ts';
import { type BrokerRegistry, fromRegistry, type SubjectStatus } from '../../broker/registry.ts';
import { type CertificateAuthority, createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import type { IdentityKind } from '../../pki/ids.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { buildCaCertificate, certToPem, type ProfileName } from '../../pki/x509.ts';
import { type IssueSubject, openRegistry, type Registry } from '../../registry/index.ts';

export interface Credentials {
  readonly cert: string;
  readonly key: string;
  readonly serial: string;
  readonly id: string;
}

export function tempDir(prefix = 'fleet-broker-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function makeCa(dir: string, organization = 'Fleet'): Promise<CertificateAuthority> {
  const keys = new FileKeyStore(join(dir, 'keys'), 'test passphrase 0123456789');
  return createCa(join(dir, 'ca'), keys, { ...DEFAULT_CA_CONFIG, organization });
}

function newKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    spki: publicKey.export({ type: 'spki', format: 'der' }),
  };
}

/** A certificate and key for `id` from `ca`, with the profile's defaults unless told otherwise. */
export function issue(
  ca: CertificateAuthority,
  profile: ProfileName,
  id: string,
  opts: { notBefore?: Date; notAfter?: Date; dns?: string[] } = {},
): Credentials {
  const k = newKey();
  const issued = ca.issue({
    profile,
    id,
    spki: k.spki,
    ...(profile === 'broker' ? { dns: opts.dns ?? ['localhost'] } : {}),
    ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
    ...(opts.notAfter ? { notAfter: opts.notAfter } : {}),
  });
  return { cert: certToPem(issued.der), key: k.key, serial: issued.serial, id };
}

/** A CA certificate (signed by the fleet root) with its key, to present as a client. */
export function caCertificateAsClient(ca: CertificateAuthority): Credentials {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const cert = buildCaCertificate({
    subject: { commonName: 'rogue', organization: 'Fleet' },
    subjectSpki: spki,
    issuerSigner: ca.rootSigner!,
    issuerCertificate: ca.root,
    pathLen: 0,
    validityDays: 30,
  });
  return {
    cert: certToPem(cert),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    serial: '',
    id: 'rogue',
  };
}

// ------------------------------------------------------------------------------------------------ registry

/**
 * The real registry: PGlite in memory, or a fresh database on the PostgreSQL server DATABASE_URL points at
 * (dropped by cleanup()). `connect()` opens another connection to the same database, as another node or
 * the operator has (on PGlite, which is single connection, it is the same registry).
 */
export async function openTestRegistry(prefix = 'fleet_broker'): Promise<{
  registry: Registry;
  connect(): Promise<Registry>;
  cleanup(): Promise<void>;
}> {
  const base = process.env.DATABASE_URL;
  if (!base) {
    const registry = await openRegistry();
    return { registry, connect: async () => registry, cleanup: () => registry.close() };
  }
  const dbName = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
  const url = new URL(base);
  url.pathname = `/${dbName}`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${dbName}`);
  await admin.end();
  const registry = await openRegistry({ databaseUrl: url.toString() });
  const others: Registry[] = [];
  return {
    registry,
    async connect() {
      const r = await openRegistry({ databaseUrl: url.toString() });
      others.push(r);
      return r;
    },
    async cleanup() {
      for (const r of others) await r.close();
      await registry.close();
      const a = postgres(base, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${dbName} with (force)`);
      await a.end();
    },
  };
}

export type EnrollOptions = {
  notBefore?: Date;
  notAfter?: Date;
  fleet?: string;
  product?: string;
  role?: string;
};

/** Issues a certificate for `kind:id` and records it (and its subject) in the registry, as provisioning does. */
export async function enroll(
  registry: Registry,
  ca: CertificateAuthority,
  kind: IdentityKind,
  id: string,
  opts: EnrollOptions = {},
): Promise<Credentials> {
  const k = newKey();
  const issued = ca.issue({
    profile: kind,
    id,
    spki: k.spki,
    ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
    ...(opts.notAfter ? { notAfter: opts.notAfter } : {}),
  });
  const subject: IssueSubject =
    kind === 'device'
      ? { kind, id, product: opts.product ?? 'p1', fleet: opts.fleet ?? 'f1' }
      : kind === 'service'
        ? { kind, id, role: opts.role ?? null }
        : { kind, id };
  await registry.recordIssued({
    subject,
    certificate: {
      serial: issued.serial,
      issuerCa: issued.issuerCa,
      der: issued.der,
      fingerprintSha256: issued.fingerprint,
      spkiSha256: issued.spkiSha256,
      notBefore: issued.notBefore,
      notAfter: issued.notAfter,
    },
    actor: 'operator:test',
  });
  return { cert: certToPem(issued.der), key: k.key, serial: issued.serial, id };
}

/**
 * Rotation as EST simplereenroll records it: a new key and certificate for the same device, the old one
 * superseded (usable until the new one first connects or `graceMs` ends; the registry's default otherwise).
 */
export async function reenroll(
  registry: Registry,
  ca: CertificateAuthority,
  old: Credentials,
  opts: { graceMs?: number } = {},
): Promise<Credentials> {
  const k = newKey();
  const issued = ca.issue({ profile: 'device', id: old.id, spki: k.spki });
  await registry.supersede(
    old.serial,
    {
      serial: issued.serial,
      issuerCa: issued.issuerCa,
      der: issued.der,
      fingerprintSha256: issued.fingerprint,
      spkiSha256: issued.spkiSha256,
      notBefore: issued.notBefore,
      notAfter: issued.notAfter,
    },
    { actor: `device:${old.id}`, ...(opts.graceMs !== undefined ? { graceMs: opts.graceMs } : {}) },
  );
  return { cert: certToPem(issued.der), key: k.key, serial: issued.serial, id: old.id };
}

export const setStatus = (registry: Registry, kind: IdentityKind, id: string, status: SubjectStatus) =>
  registry.setStatus({ kind, id, status, actor: 'operator:test' });

// ------------------------------------------------------------------------------------------------ broker

export const silentLogger = () => pino({ level: process.env.FLEET_TEST_LOG ?? 'silent' });

export type BrokerOverrides = Parameters<typeof brokerConfig>[0];

/** What a test may hand a broker besides the CA: the registry, and a cluster's mq and persistence. */
export interface TestBrokerDeps {
  readonly mq?: BrokerDeps['mq'];
  readonly persistence?: BrokerDeps['persistence'];
  readonly logger?: BrokerDeps['logger'];
}

export async function startBroker(
  ca: CertificateAuthority,
  registry: Registry | BrokerRegistry,
  overrides: BrokerOverrides = {},
  deps: TestBrokerDeps = {},
): Promise<{ broker: Broker; port: number; config: BrokerConfig }> {
  const config = brokerConfig({
    host: '127.0.0.1',
    port: 0,
    nodeId: 'test-node',
    ...overrides,
    metrics: { port: null, ...overrides.metrics },
  });
  const r = 'getDevice' in registry ? fromRegistry(registry) : registry;
  const broker = buildBroker(config, {
    ca,
    registry: r,
    logger: deps.logger ?? silentLogger(),
    ...(deps.mq ? { mq: deps.mq } : {}),
    ...(deps.persistence ? { persistence: deps.persistence } : {}),
  });
  const { port } = await broker.start();
  return { broker, port, config };
}

// ------------------------------------------------------------------------------------------------ clients

export type ConnectOutcome =
  | { outcome: 'connected'; client: MqttClient }
  | { outcome: 'connack'; code: number }
  | { outcome: 'closed'; error?: string };

/** Connects with MQTT.js and reports how it ended. A TLS refusal may emit only `close` (TLS 1.3). */
export function tryConnect(
  port: number,
  ca: CertificateAuthority,
  creds: Credentials | undefined,
  opts: IClientOptions = {},
): Promise<ConnectOutcome> {
  return new Promise((resolve) => {
    const client = mqtt.connect({
      protocol: 'mqtts',
      host: 'localhost',
      port,
      ca: ca.rootPem,
      ...(creds ? { cert: creds.cert, key: creds.key } : {}),
      clientId: opts.clientId ?? creds?.id ?? 'nobody',
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...opts,
    });
    let settled = false;
    const settle = (o: ConnectOutcome) => {
      if (settled) return;
      settled = true;
      if (o.outcome !== 'connected') client.end(true);
      resolve(o);
    };
    client.once('connect', () => settle({ outcome: 'connected', client }));
    client.once('error', (err: Error & { code?: number | string }) => {
      if (typeof err.code === 'number') settle({ outcome: 'connack', code: err.code });
      else settle({ outcome: 'closed', error: String(err.code ?? err.message) });
    });
    client.once('close', () => settle({ outcome: 'closed' }));
  });
}

/** Resolves when the client's connection closes, or rejects after `ms`. */
export function closedWithin(client: MqttClient, ms: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`still connected after ${ms} ms`)), ms);
    client.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - t0);
    });
  });
}

/**
 * One CONNECT over a raw TLS socket (mqtt-packet), to control TLS session resumption exactly. Resolves
 * with the CONNACK return code (or undefined when the connection closed first), whether the TLS session
 * was resumed, and the session to resume next time.
 */
export function rawConnect(
  port: number,
  ca: CertificateAuthority,
  creds: Credentials,
  opts: { session?: Buffer; clientId?: string; maxVersion?: 'TLSv1.2' | 'TLSv1.3' } = {},
): Promise<{ returnCode: number | undefined; reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve) => {
    let session: Buffer | undefined;
    let returnCode: number | undefined;
    const sock = tlsConnect({
      host: '127.0.0.1',
      servername: 'localhost',
      port,
      ca: ca.rootPem,
      cert: creds.cert,
      key: creds.key,
      ...(opts.session ? { session: opts.session } : {}),
      ...(opts.maxVersion ? { maxVersion: opts.maxVersion } : {}),
    });
    sock.on('session', (s) => {
      session = s;
    });
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') {
        returnCode = p.returnCode;
        // Stay a moment for a TLS 1.3 session ticket, then leave politely.
        setTimeout(() => {
          if (!sock.destroyed) sock.end(mqttPacket.generate({ cmd: 'disconnect' }));
        }, 50);
      }
    });
    sock.on('data', (d) => parser.parse(d));
    sock.on('secureConnect', () => {
      sock.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: true,
          clientId: opts.clientId ?? creds.id,
          keepalive: 30,
        }),
      );
    });
    const reused = () => sock.isSessionReused();
    let wasReused = false;
    sock.on('secureConnect', () => {
      wasReused = reused();
    });
    sock.on('error', () => {});
    sock.on('close', () => resolve({ returnCode, reused: wasReused, session }));
  });
}

/** Writes credentials and the root to files for the mosquitto clients. */
export function writeCredentialFiles(dir: string, ca: CertificateAuthority, creds: Credentials) {
  const base = join(dir, `${creds.id}-${creds.serial.slice(0, 8)}`);
  writeFileSync(`${base}.crt`, creds.cert);
  writeFileSync(`${base}.key`, creds.key, { mode: 0o600 });
  writeFileSync(join(dir, 'root.crt'), ca.rootPem);
  return { cert: `${base}.crt`, key: `${base}.key`, cafile: join(dir, 'root.crt') };
}

export function mosquitto(
  tool: 'mosquitto_pub' | 'mosquitto_sub',
  args: string[],
  timeoutMs = 10_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(tool, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

// ------------------------------------------------------------------------------------------------ fixture

/** A broker a fixture started: its port, and clients bound to it. */
export interface StartedBroker {
  readonly broker: Broker;
  readonly port: number;
  readonly config: BrokerConfig;
  /** MQTT.js with the fixture's root; how the attempt ended. */
  tryConnect(creds: Credentials | undefined, opts?: IClientOptions): Promise<ConnectOutcome>;
  /** As tryConnect, and throws unless connected. */
  connect(creds: Credentials, opts?: IClientOptions): Promise<MqttClient>;
  /** Stops it (once: the fixture's cleanup skips a broker stopped here). */
  stop(): Promise<void>;
}

/**
 * What every broker test starts from: a temp dir, the fleet's CA made now by the project's CA code, the
 * real registry, brokers on free ports, and factories for identities and clients. `start()` is separate
 * so a test can enroll and set statuses before its broker starts; the first broker started is
 * `broker`/`port`, and the fixture's own `tryConnect`/`connect` dial it.
 */
export interface BrokerFixture extends Omit<StartedBroker, 'stop' | 'config'> {
  readonly dir: string;
  readonly ca: CertificateAuthority;
  readonly registry: Registry;
  /** Starts a broker on the fixture's CA and (unless `deps.registry`) its registry. */
  start(
    overrides?: BrokerOverrides,
    deps?: TestBrokerDeps & { registry?: Registry | BrokerRegistry },
  ): Promise<StartedBroker>;
  /** Another connection to the fixture's database (openTestRegistry's connect()). */
  openRegistry(): Promise<Registry>;
  /** Another CA in the temp dir: another fleet, or (same organization) the same names with other keys. */
  makeCa(name: string, organization?: string): Promise<CertificateAuthority>;
  /** Issues and records a certificate for `kind:id` in the fixture's registry, as provisioning does. */
  enroll(kind: IdentityKind, id: string, opts?: EnrollOptions): Promise<Credentials>;
  /** A certificate from the fixture's CA that the registry does not know. */
  issue(profile: ProfileName, id: string, opts?: Parameters<typeof issue>[3]): Credentials;
  setStatus(kind: IdentityKind, id: string, status: SubjectStatus): ReturnType<typeof setStatus>;
  /** EST simplereenroll of a device in the fixture's registry (see reenroll()). */
  reenroll(old: Credentials, opts?: { graceMs?: number }): Promise<Credentials>;
  /** Stops every broker still running, closes the registry, removes the temp dir. */
  cleanup(): Promise<void>;
}

export async function brokerFixture(opts: { prefix?: string } = {}): Promise<BrokerFixture> {
  const tmp = tempDir(opts.prefix);
  const ca = await makeCa(`${tmp.dir}/fleet`);
  const db = await openTestRegistry();
  const started: StartedBroker[] = [];
  const running = new Set<StartedBroker>();
  const first = () => {
    const b = started[0];
    if (!b) throw new Error('brokerFixture: no broker started yet (call start())');
    return b;
  };
  return {
    dir: tmp.dir,
    ca,
    registry: db.registry,
    get broker() {
      return first().broker;
    },
    get port() {
      return first().port;
    },
    async start(overrides = {}, deps = {}) {
      const { broker, port, config } = await startBroker(ca, deps.registry ?? db.registry, overrides, deps);
      let stopping: Promise<void> | undefined;
      const handle: StartedBroker = {
        broker,
        port,
        config,
        tryConnect: (creds, o = {}) => tryConnect(port, ca, creds, o),
        async connect(creds, o = {}) {
          const r = await tryConnect(port, ca, creds, o);
          if (r.outcome !== 'connected') throw new Error(`${creds.id} did not connect: ${JSON.stringify(r)}`);
          return r.client;
        },
        stop() {
          running.delete(handle);
          stopping ??= broker.stop();
          return stopping;
        },
      };
      started.push(handle);
      running.add(handle);
      return handle;
    },
    tryConnect: (creds, o) => first().tryConnect(creds, o),
    connect: (creds, o) => first().connect(creds, o),
    openRegistry: () => db.connect(),
    makeCa: (name, organization) => makeCa(`${tmp.dir}/${name}`, organization),
    enroll: (kind, id, o) => enroll(db.registry, ca, kind, id, o),
    issue: (profile, id, o) => issue(ca, profile, id, o),
    setStatus: (kind, id, status) => setStatus(db.registry, kind, id, status),
    reenroll: (old, o) => reenroll(db.registry, ca, old, o),
    async cleanup() {
      for (const b of [...running]) await b.stop();
      await db.cleanup();
      tmp.remove();
    },
  };
}
