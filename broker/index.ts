/**
 * The broker's public face: `buildBroker(config, deps)` wires aedes over mTLS from the named steps of a
 * connection, as aedes lists its `connectActions`; `main.ts` only starts it.
 *
 *   tls-admission.ts    accept-time admission, the handshake and its accounting, the client certificate
 *   authenticate.ts     CONNECT: identity, client id, revoked set, registry status, session (sessions.ts)
 *   authorize.ts        publish, subscribe and delivery by the session's policy
 *   live-revocation.ts  the revoked set, its change feed and resync, closing live sessions
 *   aedes/              aedes itself, and every read or patch of a library's private fields (aedes',
 *                       mqtt-packet's, Node's TLSSocket._parent)
 *
 * aedes' defaults let everyone in, so every hook is replaced and fails closed: a hook that throws, or a
 * client without an authenticated session, is refused.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Server as TlsServer } from 'node:tls';
import type { Aedes, AedesOptions, Client } from 'aedes';
import pino, { type Logger } from 'pino';
import type { CertificateAuthority } from '../pki/ca.ts';
import { createEngine } from './aedes/engine.ts';
import { connectHooks } from './authenticate.ts';
import { authorizeHooks } from './authorize.ts';
import { FlapDetector } from './limits.ts';
import { LiveRevocation, RevocationState } from './live-revocation.ts';
import { type BrokerMetrics, createMetrics, serveMetrics } from './metrics.ts';
import { createMq } from './mq.ts';
import { loadPolicyFile, type Policy } from './policy.ts';
import { PresenceBatcher } from './presence.ts';
import { trustedBalancers } from './proxy-protocol.ts';
import type { BrokerRegistry } from './registry.ts';
import { ServerCertificate, type ServerCredentials } from './server-certificate.ts';
import { SessionTable } from './sessions.ts';
import { SubjectCache, warmSubjectCache } from './subject-cache.ts';
import { clientVerification, tlsAdmission } from './tls-admission.ts';

export type { BrokerRegistry } from './registry.ts';

export interface BrokerConfig {
  /** Listen address; `::` accepts IPv4 and IPv6. */
  readonly host: string;
  /** MQTT over TLS port (default 8883); 0 picks a free port. */
  readonly port: number;
  /** This node's name in presence records and the server certificate's CN (default: the host name). */
  readonly nodeId: string;
  readonly tls: {
    /** PEM chain (server certificate + issuing CA) and key; when absent one is issued at start. */
    readonly certFile?: string | undefined;
    readonly keyFile?: string | undefined;
    /** Extra DNS names / IPs for an issued server certificate (localhost, loopback and the host name always). */
    readonly serverNames: readonly string[];
    readonly handshakeTimeoutMs: number;
    /**
     * Time from accept to the connection's first TLS byte, far less than a handshake's: a client writes its
     * ClientHello as soon as TCP is up, so only a silent connection waits this long, and it holds a
     * handshake slot no longer than this (issue 9 item 4).
     */
    readonly firstByteTimeoutMs: number;
    readonly sessionTimeoutS: number;
    /** 48 bytes shared by all nodes so a ticket resumes on any node. */
    readonly ticketKeys?: Buffer | undefined;
    /** How often the cert/key files are polled for changes. */
    readonly watchIntervalMs: number;
    /**
     * Who verifies client certificates: 'cached' (default) verifies each distinct certificate once in JS
     * and caches the verdict by fingerprint, OpenSSL building no chain (client-verify.ts says why that is
     * safe; ≈ 15–20 % of a full connect); 'openssl' lets OpenSSL verify the chain on every full handshake.
     */
    readonly clientVerification: 'cached' | 'openssl';
  };
  readonly limits: {
    readonly maxConnections: number;
    /** New connections admitted per second (token bucket); 0 disables. */
    readonly connectRatePerS: number;
    readonly connectBurst: number;
    /**
     * TLS handshakes allowed in progress at once; a connection past it is closed at accept, before any
     * TLS byte, so in a reconnect storm the excess gets a fast refusal to retry instead of waiting in the
     * kernel's accept queue until it times out (the event loop finishes fewer handshakes than arrive).
     */
    readonly maxHandshakesInFlight: number;
    /**
     * Per source (an IPv4 address, an IPv6 /64), checked before the totals above so that one source
     * cannot spend them: handshakes in flight, and a token bucket of new connections (issue 9 item 4).
     * Devices behind one NAT address share these; raise them for such a site (0 disables either).
     */
    readonly maxHandshakesPerSource: number;
    readonly connectRatePerSourcePerS: number;
    readonly connectBurstPerSource: number;
    /** listen(2) backlog: room for a storm's burst of SYNs while handshakes are admitted. */
    readonly listenBacklog: number;
    readonly maxPacketBytes: number;
    /** CONNECT keepalive below this is refused; 0 (none) or above max runs with the max as idle limit. */
    readonly keepaliveMinS: number;
    readonly keepaliveMaxS: number;
    /** Time allowed from TCP accept to CONNECT. */
    readonly connectTimeoutMs: number;
    /** This many ACL denials within the window disconnects the client. */
    readonly aclDenialLimit: number;
    readonly aclDenialWindowMs: number;
  };
  readonly revocation: { readonly resyncMs: number };
  /**
   * The message queue (FleetMq from mq.ts, unless deps.mq is given) and backpressure: stop reading from
   * publishers while the queue or a subscriber's socket backlog is over its mark.
   */
  readonly mq: {
    readonly highWaterMark: number;
    readonly backpressure: boolean;
    readonly maxSubscriberBacklogBytes: number;
    readonly slowSubscriberTimeoutMs: number;
  };
  readonly presence: { readonly flushMs: number; readonly lastSeenMs: number; readonly maxBatch: number };
  /** Prometheus endpoint; port null disables it, 0 picks a free port. */
  readonly metrics: { readonly port: number | null; readonly host: string };
  /** Policy file (JSON or YAML); the repo's default policy when absent. */
  readonly policyFile?: string | undefined;
  /**
   * Skip aedes' `$SYS/<id>/new/clients` and `…/disconnect/clients` notices. They cost a publish through
   * the emitter per connect and disconnect and nobody may subscribe to `$SYS` here; aedes also uses the
   * first to close the same client id on other brokers sharing the emitter, so keep them (false) when
   * several nodes share one Redis mq.
   */
  readonly skipSysConnectNotices: boolean;
  /**
   * Read a PROXY protocol (v1/v2) header before TLS on every connection and take the device's address
   * from it (behind HAProxy's send-proxy-v2). Off: no header is ever read. On: only the balancers in
   * `proxyTrustedBalancers` may connect, and each of their connections must start with a header.
   */
  readonly proxyProtocol: boolean;
  /** The balancers' addresses or CIDR blocks whose PROXY headers are believed; required with proxyProtocol. */
  readonly proxyTrustedBalancers: readonly string[];
}

export const DEFAULT_BROKER_CONFIG: BrokerConfig = Object.freeze({
  host: '::',
  port: 8883,
  nodeId: hostname(),
  tls: Object.freeze({
    serverNames: [],
    handshakeTimeoutMs: 10_000,
    firstByteTimeoutMs: 2_000,
    sessionTimeoutS: 3600,
    watchIntervalMs: 5_000,
    clientVerification: 'cached',
  }),
  limits: Object.freeze({
    maxConnections: 18_000,
    connectRatePerS: 500,
    connectBurst: 1000,
    maxHandshakesInFlight: 256,
    maxHandshakesPerSource: 32,
    connectRatePerSourcePerS: 50,
    connectBurstPerSource: 100,
    listenBacklog: 4096,
    maxPacketBytes: 256 * 1024,
    keepaliveMinS: 5,
    keepaliveMaxS: 1200,
    connectTimeoutMs: 10_000,
    aclDenialLimit: 10,
    aclDenialWindowMs: 60_000,
  }),
  revocation: Object.freeze({ resyncMs: 30_000 }),
  mq: Object.freeze({
    highWaterMark: 10_000,
    backpressure: true,
    maxSubscriberBacklogBytes: 4 * 1024 * 1024,
    slowSubscriberTimeoutMs: 10_000,
  }),
  presence: Object.freeze({ flushMs: 1000, lastSeenMs: 60_000, maxBatch: 500 }),
  metrics: Object.freeze({ port: 9464, host: '::' }),
  skipSysConnectNotices: true,
  proxyProtocol: false,
  proxyTrustedBalancers: Object.freeze([]),
});

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? Partial<T[K]> : T[K] };

/** Merges overrides onto the defaults and freezes the result. */
export function brokerConfig(o: DeepPartial<BrokerConfig> = {}): BrokerConfig {
  const d = DEFAULT_BROKER_CONFIG;
  const c: BrokerConfig = {
    ...d,
    ...o,
    tls: Object.freeze({ ...d.tls, ...o.tls }),
    limits: Object.freeze({ ...d.limits, ...o.limits }),
    revocation: Object.freeze({ ...d.revocation, ...o.revocation }),
    mq: Object.freeze({ ...d.mq, ...o.mq }),
    presence: Object.freeze({ ...d.presence, ...o.presence }),
    metrics: Object.freeze({ ...d.metrics, ...o.metrics }),
  } as BrokerConfig;
  if (Boolean(c.tls.certFile) !== Boolean(c.tls.keyFile)) {
    throw new Error('broker config: tls.certFile and tls.keyFile go together');
  }
  if (c.limits.keepaliveMinS > c.limits.keepaliveMaxS) {
    throw new Error('broker config: limits.keepaliveMinS is above limits.keepaliveMaxS');
  }
  // Fail closed: with no balancer named, a PROXY header could only be believed from anyone.
  if (c.proxyProtocol && c.proxyTrustedBalancers.length === 0) {
    throw new Error('broker config: proxyProtocol needs proxyTrustedBalancers (the balancers’ addresses)');
  }
  try {
    trustedBalancers(c.proxyTrustedBalancers);
  } catch (err) {
    throw new Error(`broker config: proxyTrustedBalancers: ${(err as Error).message}`);
  }
  return Object.freeze(c);
}

export interface BrokerDeps {
  /** The fleet CA: its trust list verifies clients; its infrastructure CA issues the server certificate. */
  readonly ca: CertificateAuthority;
  readonly registry: BrokerRegistry;
  readonly policy?: Policy;
  readonly logger?: Logger;
  /** An mqemitter-compatible emitter (the fast mq with backpressure, or Redis for several nodes). */
  readonly mq?: AedesOptions['mq'];
  readonly persistence?: AedesOptions['persistence'];
  readonly metrics?: BrokerMetrics;
}

export { type Session, sessionOf } from './sessions.ts';
export { handshakeFailure } from './tls-admission.ts';

export interface Broker {
  readonly config: BrokerConfig;
  readonly aedes: Aedes;
  readonly server: TlsServer;
  readonly metrics: BrokerMetrics;
  readonly revocation: RevocationState;
  readonly log: Logger;
  /** Listens; resolves with the bound ports. */
  start(): Promise<{ port: number; metricsPort: number | undefined }>;
  stop(): Promise<void>;
  /** Re-reads the certificate files (or issues a fresh certificate) and swaps them in; sessions stay. */
  reloadCertificate(): boolean;
  /** Reloads the revoked set from the registry now and drops live sessions it refuses. */
  resync(): Promise<void>;
  /** Live authenticated sessions by `kind:id`. */
  readonly sessions: ReadonlyMap<string, Client>;
  /**
   * Resolves with the number of subjects once the subject cache is warmed from the registry (started by
   * start(), in the background: connects meanwhile ask the registry as usual).
   */
  readonly subjectsWarmed: Promise<number>;
  readonly credentials: ServerCredentials;
}

export function buildBroker(config: BrokerConfig, deps: BrokerDeps): Broker {
  const log = deps.logger ?? pino({ name: 'broker' });
  const metrics = deps.metrics ?? createMetrics();
  const policy = deps.policy ?? loadPolicyFile(config.policyFile);
  const registry = deps.registry;
  const lim = config.limits;
  const revocation = new RevocationState();
  const subjects = new SubjectCache(registry);
  const sessions = new SessionTable();

  const verification = clientVerification(deps.ca.trustPem, config.tls.clientVerification);
  const certificate = new ServerCertificate({
    ca: deps.ca,
    nodeId: config.nodeId,
    tls: config.tls,
    settings: {
      trustPem: verification.trustPem,
      verifyClientsInJs: verification.inJs,
      handshakeTimeoutMs: config.tls.handshakeTimeoutMs,
      sessionTimeoutS: config.tls.sessionTimeoutS,
      ticketKeys: config.tls.ticketKeys,
    },
    log,
  });

  const presence = new PresenceBatcher(
    registry,
    { ...config.presence, brokerNode: config.nodeId },
    () => sessions.present(),
    log,
    metrics,
  );

  // aedes' own rule for its id, decided here so the denied-publish sink can name it.
  const aedesId = config.nodeId || randomUUID();
  const fleetMq = deps.mq
    ? undefined
    : createMq({ concurrency: 100, highWaterMark: config.mq.highWaterMark });
  const engine = createEngine({
    id: aedesId,
    mq: deps.mq ?? fleetMq,
    persistence: deps.persistence,
    connectTimeoutMs: lim.connectTimeoutMs,
    maxPacketBytes: lim.maxPacketBytes,
    skipSysConnectNotices: config.skipSysConnectNotices,
    backpressure:
      fleetMq && config.mq.backpressure
        ? {
            mq: fleetMq,
            maxSubscriberBacklogBytes: config.mq.maxSubscriberBacklogBytes,
            slowSubscriberTimeoutMs: config.mq.slowSubscriberTimeoutMs,
            onEvent: (e) => log.info({ event: e.type, ...e }),
          }
        : undefined,
    hooks: {
      ...connectHooks({
        limits: lim,
        policy,
        revoked: revocation,
        subjects,
        sessions,
        presence,
        flaps: new FlapDetector(),
        liveClient: (id) => engine.clientById(id),
        admitted: (identity) => live.admitted(identity),
        metrics,
        log,
      }),
      ...authorizeHooks({ deniedTopic: `$SYS/${aedesId}/fleet/denied`, metrics, log }),
    },
    log,
  });
  const aedes = engine.aedes;

  const admission = tlsAdmission({
    serverOptions: certificate.serverOptions(),
    limits: lim,
    firstByteTimeoutMs: config.tls.firstByteTimeoutMs,
    verifier: verification.verifier,
    // A balancer writes the header at once, before the device's first TLS byte: the first-byte bound.
    proxyProtocol: config.proxyProtocol
      ? { timeoutMs: config.tls.firstByteTimeoutMs, trusted: config.proxyTrustedBalancers }
      : undefined,
    handOff: (sock) => engine.handle(sock),
    metrics,
    log,
  });
  const { server, listener } = admission;

  const live = new LiveRevocation({
    registry,
    revoked: revocation,
    subjects,
    sessions,
    resyncMs: config.revocation.resyncMs,
    nodeId: config.nodeId,
    metrics,
    log,
  });

  // ----------------------------------------------------------------------------------- lifecycle

  let stopped = false;
  let warmed: (n: number) => void = () => {};
  const subjectsWarmed = new Promise<number>((resolve) => {
    warmed = resolve;
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;

  return {
    config,
    aedes,
    server,
    metrics,
    revocation,
    log,
    sessions: sessions.bySubject,
    subjectsWarmed,
    get credentials() {
      return certificate.credentials;
    },
    reloadCertificate: () => certificate.reload(server),
    resync: () => live.resync(),
    async start() {
      await live.start();
      await aedes.listen();
      live.startResync();
      presence.start();
      certificate.watch(server);
      await new Promise<void>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen({ port: config.port, host: config.host, backlog: lim.listenBacklog }, () => {
          listener.off('error', reject);
          resolve();
        });
      });
      const addr = listener.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.port;
      if (config.metrics.port !== null) {
        metricsServer = await serveMetrics(metrics, config.metrics.port, config.metrics.host);
      }
      void warmSubjectCache(subjects, registry, () => stopped, log).then(warmed);
      log.info({
        event: 'broker_started',
        port,
        metrics_port: metricsServer?.port,
        node: config.nodeId,
        revocation_generation: revocation.generation,
        certificate_serial: certificate.credentials.serial,
      });
      return { port, metricsPort: metricsServer?.port };
    },
    async stop() {
      stopped = true;
      await live.unsubscribeFeed();
      engine.backpressure?.detach();
      live.stopResync();
      certificate.unwatch();
      const closing = new Promise<void>((resolve) => listener.close(() => resolve()));
      admission.closePending();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closing;
      if (metricsServer) {
        const m = metricsServer.server;
        m.closeAllConnections();
        await new Promise<void>((resolve) => m.close(() => resolve()));
      }
      await presence.stop();
      // At most one registry page is in flight; do not leave it running into a closed registry.
      await Promise.race([subjectsWarmed, new Promise((r) => setTimeout(r, 1000).unref())]);
      log.info({ event: 'broker_stopped' });
    },
  };
}
