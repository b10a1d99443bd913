/**
 * The broker's public face: `buildBroker(config, deps)` wires aedes over mTLS with identity binding, the
 * topic policy, live revocation, presence, limits and metrics; `main.ts` only starts it.
 *
 * aedes' defaults let everyone in, so every hook is replaced here and fails closed: a hook that throws,
 * or a client without an authenticated session, is refused.
 */
import type { X509Certificate } from 'node:crypto';
import { hostname } from 'node:os';
import { type TLSSocket, type Server as TlsServer, createServer as tlsCreateServer } from 'node:tls';
import { Aedes, type AedesOptions, type Client } from 'aedes';
import pino, { type Logger } from 'pino';
import type { CertificateAuthority } from '../pki/ca.ts';
import type { Identity } from '../pki/ids.ts';
import {
  ConnectRefused,
  checkIdentity,
  checkSubject,
  identityOfSocket,
  PEER,
  type PeerVerdict,
  SubjectCache,
} from './auth.ts';
import { ClientCertVerifier } from './client-verify.ts';
import { CONNACK } from './errors.ts';
import { type FastConnectClient, installFastConnect, plainCleanConnect } from './fast-connect.ts';
import { type FastDeliverClient, installFastDeliver } from './fast-deliver.ts';
import { FlapDetector, TokenBucket, WindowCounter } from './limits.ts';
import { type AuthFailureReason, type BrokerMetrics, createMetrics, serveMetrics } from './metrics.ts';
import { createMq } from './mq.ts';
import { attachBackpressure } from './mq-backpressure.ts';
import { type BoundPolicy, bindPolicy, loadPolicyFile, type Policy } from './policy.ts';
import { PresenceBatcher } from './presence.ts';
import { proxyProtocolListener, reportRefusals } from './proxy-protocol.ts';
import type { BrokerRegistry, StatusChange, SubjectInfo } from './registry.ts';
import { type Effect, RevocationState, subjectKey } from './revocation.ts';
import {
  defaultServerNames,
  issueServerCredentials,
  readServerCredentials,
  type ServerCredentials,
  secureContextOptions,
  serverOptions,
  type TlsSettings,
  watchFiles,
} from './tls.ts';

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
   * from it (behind HAProxy's send-proxy-v2). Off: no header is ever read. On: one is required.
   */
  readonly proxyProtocol: boolean;
}

export const DEFAULT_BROKER_CONFIG: BrokerConfig = Object.freeze({
  host: '::',
  port: 8883,
  nodeId: hostname(),
  tls: Object.freeze({
    serverNames: [],
    handshakeTimeoutMs: 10_000,
    sessionTimeoutS: 3600,
    watchIntervalMs: 5_000,
    clientVerification: 'cached',
  }),
  limits: Object.freeze({
    maxConnections: 18_000,
    connectRatePerS: 500,
    connectBurst: 1000,
    maxHandshakesInFlight: 256,
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

/** What an authenticated connection carries: derived once at CONNECT, read by every later hook. */
export interface Session {
  readonly identity: Identity;
  readonly info: SubjectInfo;
  readonly policy: BoundPolicy;
  readonly remoteAddress: string | undefined;
  readonly key: string;
  readonly denials: WindowCounter;
  /** Set when the broker closes the connection for revocation: its will is not published then. */
  kicked: boolean;
}

const SESSION = Symbol('fleet.session');
const KEEPALIVE_REFUSED = Symbol('fleet.keepaliveRefused');
type FleetClient = Client & {
  [SESSION]?: Session;
  [KEEPALIVE_REFUSED]?: boolean;
  will?: unknown;
  _will?: { topic: string } | null;
  _parser?: { _parseLength(): boolean; packet: { length: number }; _emitError(e: Error): void };
};

/** The session of an authenticated client, if any. */
export function sessionOf(client: Client | null | undefined): Session | undefined {
  return client ? (client as FleetClient)[SESSION] : undefined;
}

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

/** Maps an OpenSSL handshake error code (stable, unlike its text) to a small label set. */
export function handshakeFailure(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'no_certificate';
  if (/UNKNOWN_CA|UNABLE_TO_GET_ISSUER|SELF_SIGNED|CERTIFICATE_VERIFY_FAILED/.test(code)) return 'unknown_ca';
  if (/EXPIRED/.test(code)) return 'certificate_expired';
  if (/NOT_YET_VALID/.test(code)) return 'certificate_not_yet_valid';
  if (/UNSUPPORTED_CERTIFICATE|BAD_CERTIFICATE|UNSUITABLE|PURPOSE/.test(code)) return 'bad_certificate';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || /timed? ?out/i.test(code)) return 'timeout';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (/VERSION|PROTOCOL/.test(code)) return 'protocol';
  return 'other';
}

export function buildBroker(config: BrokerConfig, deps: BrokerDeps): Broker {
  const log = deps.logger ?? pino({ name: 'broker' });
  const metrics = deps.metrics ?? createMetrics();
  const policy = deps.policy ?? loadPolicyFile(config.policyFile);
  const registry = deps.registry;
  const revocation = new RevocationState();
  const subjects = new SubjectCache(registry);
  const sessions = new Map<string, FleetClient>();
  const bySerial = new Map<string, FleetClient>();
  const flaps = new FlapDetector();
  const admission = new TokenBucket(config.limits.connectRatePerS, config.limits.connectBurst);
  const lim = config.limits;
  const verifier = new ClientCertVerifier(deps.ca.trustPem);
  const cachedVerification = config.tls.clientVerification === 'cached';

  const tlsSettings: TlsSettings = {
    trustPem: cachedVerification ? verifier.caListPem : deps.ca.trustPem,
    verifyClientsInJs: cachedVerification,
    handshakeTimeoutMs: config.tls.handshakeTimeoutMs,
    sessionTimeoutS: config.tls.sessionTimeoutS,
    ticketKeys: config.tls.ticketKeys,
  };
  const loadCredentials = (): ServerCredentials =>
    config.tls.certFile && config.tls.keyFile
      ? readServerCredentials(config.tls.certFile, config.tls.keyFile)
      : issueServerCredentials(deps.ca, config.nodeId, defaultServerNames(config.tls.serverNames));
  let credentials = loadCredentials();

  const presence = new PresenceBatcher(
    registry,
    { ...config.presence, brokerNode: config.nodeId },
    function* () {
      for (const c of sessions.values()) {
        const s = c[SESSION];
        if (s) yield { kind: s.identity.kind, id: s.identity.id, remoteAddress: s.remoteAddress };
      }
    },
    log,
    metrics,
  );

  // ----------------------------------------------------------------------------------- hooks (fail closed)

  const refuse = (
    client: FleetClient,
    reason: AuthFailureReason,
    detail: string | undefined,
    identity: Identity | undefined,
    done: (err: (Error & { returnCode: number }) | null, ok: boolean | null) => void,
  ) => {
    metrics.authFailures.inc({ reason });
    log.warn(
      {
        event: 'mqtt_connect_refused',
        reason,
        detail,
        client_id: client.id,
        kind: identity?.kind,
        id: identity?.id,
        serial: identity?.serial,
        remote: (client.conn as TLSSocket).remoteAddress,
      },
      'connection refused',
    );
    const returnCode =
      reason === 'registry_unavailable' || reason === 'internal_error'
        ? CONNACK.SERVER_UNAVAILABLE
        : reason === 'keepalive_out_of_bounds'
          ? CONNACK.IDENTIFIER_REJECTED
          : CONNACK.NOT_AUTHORIZED;
    // AuthErrorCode is a const enum that tsx cannot inline: plain numbers.
    const err = Object.assign(new Error('not authorized'), { returnCode });
    done(err, null);
  };

  // Client ids that ever connected with a persistent session (clean 0): their CONNECTs, and everyone's
  // when persistence is not aedes' in-memory default, take aedes' own path (fast-connect.ts says why).
  const persistentIds = new Set<string>();
  const fastConnectEligible = (p: Parameters<typeof plainCleanConnect>[0]) =>
    !deps.persistence &&
    !(aedes as unknown as { keepaliveLimit?: number }).keepaliveLimit &&
    plainCleanConnect(p) &&
    !persistentIds.has(p.clientId!);

  const noPersistedSubscriptions = () => !deps.persistence && persistentIds.size === 0;

  const preConnect: AedesOptions['preConnect'] = (client, packet, done) => {
    try {
      if (!packet.clean && packet.clientId) persistentIds.add(packet.clientId);
      const ka = packet.keepalive ?? 0;
      if (ka !== 0 && ka < lim.keepaliveMinS) (client as FleetClient)[KEEPALIVE_REFUSED] = true;
      // [MQTT-3.1.2-24] the server may close an idle client after 1.5 × keepalive; a client asking for
      // none, or for more than the bound, gets the bound as its idle limit.
      else if (ka === 0 || ka > lim.keepaliveMaxS) packet.keepalive = lim.keepaliveMaxS;
      done(null, true);
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'preConnect', err }, 'preConnect failed');
      done(err as Error, false);
    }
  };

  const authenticate: AedesOptions['authenticate'] = (c, _username, _password, done) => {
    const client = c as FleetClient;
    let identity: Identity | undefined;
    try {
      if (client[KEEPALIVE_REFUSED]) throw new ConnectRefused('keepalive_out_of_bounds');
      identity = identityOfSocket(client.conn as TLSSocket);
      checkIdentity(identity, client.id, revocation);
      const id = identity;
      const cached = subjects.peek(id);
      if (cached) return admit(client, id, cached, done);
      subjects.get(id).then(
        (info) => {
          try {
            checkSubject(info);
            // A change may have arrived while we waited.
            checkIdentity(id, client.id, revocation);
            admit(client, id, info!, done);
          } catch (err) {
            fail(err, id);
          }
        },
        (err) => {
          log.error(
            { event: 'registry_lookup_failed', err, kind: id.kind, id: id.id },
            'registry lookup failed',
          );
          refuse(client, 'registry_unavailable', undefined, id, done);
        },
      );
    } catch (err) {
      fail(err, identity);
    }
    function fail(err: unknown, who: Identity | undefined) {
      if (err instanceof ConnectRefused) return refuse(client, err.reason, err.detail, who, done);
      log.error({ event: 'mqtt_hook_failed', hook: 'authenticate', err }, 'authenticate failed');
      refuse(client, 'internal_error', undefined, who, done);
    }
  };

  function admit(
    client: FleetClient,
    identity: Identity,
    info: SubjectInfo,
    done: (err: (Error & { returnCode: number }) | null, ok: boolean | null) => void,
  ) {
    if (client.closed) return;
    const bound = bindPolicy(policy, {
      kind: identity.kind,
      id: identity.id,
      fleet: info.fleet,
      product: info.product,
      role: info.role,
    });
    const will = client._will;
    if (will && !bound.canPublish(will.topic)) {
      return refuse(client, 'will_denied', will.topic, identity, done);
    }
    const key = subjectKey(identity.kind, identity.id);
    const existing = (aedes as unknown as { clients: Record<string, FleetClient | undefined> }).clients[
      identity.id
    ];
    const prior = existing?.[SESSION];
    if (prior && prior.identity.kind !== identity.kind) {
      // A device and a service with the same id would take each other over: the live one stays.
      return refuse(client, 'client_id_conflict', prior.identity.kind, identity, done);
    }
    const sock = client.conn as TLSSocket;
    const remoteAddress = sock.remoteAddress;
    if (existing && !existing.closed) {
      metrics.takeovers.inc();
      log.info({ event: 'mqtt_takeover', kind: identity.kind, id: identity.id, remote: remoteAddress });
    }
    if (remoteAddress) {
      const flips = flaps.record(key, remoteAddress, Date.now());
      if (flips !== undefined) {
        metrics.possibleClones.inc();
        log.warn(
          {
            event: 'possible_cloned_identity',
            kind: identity.kind,
            id: identity.id,
            serial: identity.serial,
            flips,
          },
          'identity flaps between source addresses: possibly a cloned device',
        );
      }
    }
    const session: Session = {
      identity,
      info,
      policy: bound,
      remoteAddress,
      key,
      denials: new WindowCounter(lim.aclDenialLimit, lim.aclDenialWindowMs),
      kicked: false,
    };
    client[SESSION] = session;
    sessions.set(key, client);
    bySerial.set(identity.serial, client);
    metrics.connections.inc();
    metrics.connects.inc();
    presence.connected(who(session));
    sock.once('close', () => closed(client, session));
    done(null, true);
  }

  const who = (s: Session) => ({ kind: s.identity.kind, id: s.identity.id, remoteAddress: s.remoteAddress });

  function closed(client: FleetClient, s: Session) {
    metrics.connections.dec();
    if (bySerial.get(s.identity.serial) === client) bySerial.delete(s.identity.serial);
    if (sessions.get(s.key) === client) {
      sessions.delete(s.key);
      presence.disconnected(who(s));
    }
  }

  function denied(client: FleetClient, s: Session, action: 'publish' | 'subscribe', topic: string) {
    metrics.aclDenials.inc({ action });
    log.info({ event: 'acl_denied', action, topic, kind: s.identity.kind, id: s.identity.id });
    if (s.denials.hit(Date.now())) {
      metrics.aclDisconnects.inc();
      log.warn({ event: 'acl_denials_disconnect', kind: s.identity.kind, id: s.identity.id });
      setImmediate(() => client.close());
    }
  }

  let sinkTopic = '$SYS/fleet/denied';
  const authorizePublish: AedesOptions['authorizePublish'] = (c, packet, done) => {
    try {
      const client = c as FleetClient | null;
      const s = client?.[SESSION];
      if (!client || !s) return done(new Error('no session'));
      if (packet === client.will) {
        // The last will, published as the connection ends: not for a connection closed for revocation.
        return done(!s.kicked && s.policy.canPublish(packet.topic) ? null : new Error('will not authorized'));
      }
      if (s.policy.canPublish(packet.topic)) {
        metrics.messagesIn.inc();
        return done(null);
      }
      denied(client, s, 'publish', packet.topic);
      // aedes closes the connection on any error here; a denied publish is dropped instead: it goes to a
      // $SYS topic nobody may subscribe to, not retained, so the client's QoS flow still completes.
      packet.topic = sinkTopic;
      packet.retain = false;
      packet.payload = Buffer.alloc(0);
      done(null);
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'authorizePublish', err }, 'authorizePublish failed');
      done(err as Error);
    }
  };

  const authorizeSubscribe: AedesOptions['authorizeSubscribe'] = (c, sub, done) => {
    try {
      const client = c as FleetClient;
      const s = client[SESSION];
      if (!s) return done(new Error('no session'));
      if (s.policy.canSubscribe(sub.topic)) return done(null, sub);
      denied(client, s, 'subscribe', sub.topic);
      done(null, null); // SUBACK 0x80 for this filter [MQTT-3.9.3]
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'authorizeSubscribe', err }, 'authorizeSubscribe failed');
      done(err as Error);
    }
  };

  const authorizeForward: AedesOptions['authorizeForward'] = (c, packet) => {
    const s = (c as FleetClient)[SESSION];
    if (!s || s.kicked) return null;
    metrics.messagesOut.inc();
    return packet;
  };

  // ----------------------------------------------------------------------------------- aedes + TLS

  const fleetMq = deps.mq
    ? undefined
    : createMq({ concurrency: 100, highWaterMark: config.mq.highWaterMark });
  const aedes = new Aedes({
    id: config.nodeId,
    mq: deps.mq ?? fleetMq,
    persistence: deps.persistence,
    connectTimeout: lim.connectTimeoutMs,
    maxClientsIdLength: 64,
    preConnect,
    authenticate,
    authorizePublish,
    authorizeSubscribe,
    authorizeForward,
  });
  sinkTopic = `$SYS/${aedes.id}/fleet/denied`;
  // The fast paths (fast-connect.ts, fast-deliver.ts, watchCloseCheaply) stand in for parts of aedes'
  // internals and were written and tested against aedes 1.2: with any other version aedes runs its own.
  const fastPaths = /^1\.2\./.test(String((aedes as unknown as { version?: string }).version));
  if (!fastPaths)
    log.warn({
      event: 'aedes_fast_paths_off',
      aedes_version: (aedes as unknown as { version?: string }).version,
    });
  if (config.skipSysConnectNotices) skipSysNotices(aedes);
  const backpressure =
    fleetMq && config.mq.backpressure
      ? attachBackpressure(aedes as never, fleetMq, {
          maxSubscriberBacklogBytes: config.mq.maxSubscriberBacklogBytes,
          slowSubscriberTimeoutMs: config.mq.slowSubscriberTimeoutMs,
          onEvent: (e) => log.info({ event: e.type, ...e }),
        })
      : undefined;
  aedes.on('clientError', (client, err) =>
    log.debug({ event: 'mqtt_client_error', client_id: client.id, err: err.message }),
  );
  aedes.on('connectionError', (_client, err) =>
    log.debug({ event: 'mqtt_connection_error', err: err.message }),
  );
  (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) =>
    log.error({ event: 'aedes_error', err }, 'aedes error'),
  );

  const server = tlsCreateServer(serverOptions(credentials, tlsSettings));
  server.maxConnections = lim.maxConnections;
  server.on('drop', () => metrics.admissionRefused.inc({ reason: 'max_connections' }));
  // Admission before the handshake: a refused connection costs an accept and a close, not a handshake.
  let handshakesInFlight = 0;
  server.prependListener('connection', (sock) => {
    const refusal =
      handshakesInFlight >= lim.maxHandshakesInFlight
        ? 'handshakes_in_flight'
        : !admission.take()
          ? 'rate_limited'
          : undefined;
    if (refusal) {
      metrics.admissionRefused.inc({ reason: refusal });
      (sock as { fleetRefused?: boolean }).fleetRefused = true;
      sock.destroy();
      return;
    }
    // Every admitted connection ends its handshake in exactly one of 'secureConnection' or
    // 'tlsClientError' (which also reports a peer that hangs up or times out before finishing).
    handshakesInFlight++;
    let counted = true;
    (sock as { fleetHandshakeDone?: () => void }).fleetHandshakeDone = () => {
      if (counted) {
        counted = false;
        handshakesInFlight--;
      }
    };
  });
  const handshakeOk = metrics.handshakes.labels({ outcome: 'ok' });
  server.on('secureConnection', (sock: TLSSocket & { [PEER]?: PeerVerdict }) => {
    (sock as { _parent?: { fleetHandshakeDone?: () => void } })._parent?.fleetHandshakeDone?.();
    // The peer certificate is decided here, before aedes reads a byte (client-verify.ts): once per
    // distinct certificate, its validity against the clock on every connection, resumed or not.
    let cert: X509Certificate | undefined;
    try {
      cert = sock.getPeerX509Certificate();
    } catch {
      cert = undefined;
    }
    const peer = verifier.check(cert, Date.now());
    if (!peer.ok) {
      metrics.handshakes.inc({ outcome: peer.refused });
      log.debug({ event: 'tls_client_refused', outcome: peer.refused, remote: sock.remoteAddress });
      sock.destroy();
      return;
    }
    handshakeOk.inc();
    sock[PEER] = peer;
    const client = aedes.handle(sock) as FleetClient;
    if (fastPaths) {
      installFastDeliver(client as unknown as FastDeliverClient);
      installFastConnect(
        client as unknown as FastConnectClient,
        fastConnectEligible,
        noPersistedSubscriptions,
      );
      watchCloseCheaply(client, sock);
    }
    limitPacketSize(client, lim.maxPacketBytes);
  });
  const listener = config.proxyProtocol
    ? proxyProtocolListener(server, {
        timeoutMs: config.tls.handshakeTimeoutMs,
        onRefused: reportRefusals(metrics.registry, log),
      })
    : server;
  server.on('tlsClientError', (err: NodeJS.ErrnoException, sock) => {
    const raw = (sock as { _parent?: { fleetRefused?: boolean; fleetHandshakeDone?: () => void } })._parent;
    raw?.fleetHandshakeDone?.();
    if (raw?.fleetRefused) return;
    const outcome = handshakeFailure(err);
    metrics.handshakes.inc({ outcome });
    log.debug({ event: 'tls_handshake_failed', outcome, code: err.code, remote: sock.remoteAddress });
  });

  // ----------------------------------------------------------------------------------- revocation

  function kick(client: FleetClient, why: string, since: { at?: Date | undefined; arrived: number }) {
    const s = client[SESSION];
    if (!s || s.kicked || client.closed) return;
    s.kicked = true;
    metrics.revocationKicks.inc();
    client.close(() => {
      const seconds = since.at
        ? Math.max(0, (Date.now() - since.at.getTime()) / 1000)
        : (performance.now() - since.arrived) / 1000;
      metrics.revocationLatency.observe(seconds);
      log.warn(
        {
          event: 'revocation_kick',
          reason: why,
          kind: s.identity.kind,
          id: s.identity.id,
          serial: s.identity.serial,
          close_ms: seconds * 1000,
        },
        'live connection closed: revoked or suspended',
      );
    });
  }

  function applyEffect(e: Effect, change: StatusChange, arrived: number) {
    const since = { at: change.at, arrived };
    if (e.subject) {
      const c = sessions.get(e.subject);
      if (c) kick(c, change.status, since);
      subjects.forget(change.kind, change.id);
    }
    if (e.serial) {
      const c = bySerial.get(e.serial);
      if (c) kick(c, 'certificate_revoked', since);
    }
  }

  const onChange = (change: StatusChange) => {
    const arrived = performance.now();
    try {
      const e = revocation.apply(change);
      metrics.revocationGeneration.set(revocation.generation);
      if (e) applyEffect(e, change, arrived);
    } catch (err) {
      log.error({ event: 'revocation_change_failed', err }, 'applying a status change failed');
    }
  };

  async function resync(): Promise<void> {
    try {
      const snap = await registry.revokedSet();
      const arrived = performance.now();
      if (revocation.replace(snap)) {
        metrics.revocationGeneration.set(revocation.generation);
        for (const c of [...sessions.values()]) {
          const s = c[SESSION];
          const why = s && revocation.check(s.identity);
          if (why) kick(c, why, { arrived });
        }
      }
      metrics.revocationResyncs.inc({ outcome: 'ok' });
    } catch (err) {
      metrics.revocationResyncs.inc({ outcome: 'failed' });
      log.error({ event: 'revocation_resync_failed', err }, 'revoked set resync failed');
    }
  }

  // ----------------------------------------------------------------------------------- lifecycle

  let stopped = false;
  let warmed: (n: number) => void = () => {};
  const subjectsWarmed = new Promise<number>((resolve) => {
    warmed = resolve;
  });
  async function warmSubjects(): Promise<void> {
    const t0 = performance.now();
    let n = 0;
    try {
      if (registry.activeSubjects) {
        for await (const page of registry.activeSubjects()) {
          if (stopped) break;
          subjects.prime(page);
          n += page.length;
        }
      }
      log.info({ event: 'subject_cache_warmed', subjects: n, ms: Math.round(performance.now() - t0) });
    } catch (err) {
      log.warn({ event: 'subject_cache_warm_failed', err }, 'subject cache not warmed; lookups per connect');
    }
    warmed(n);
  }

  let unsubscribe: (() => unknown) | undefined;
  let resyncTimer: NodeJS.Timeout | undefined;
  let stopWatching: (() => void) | undefined;
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;

  function reloadCertificate(): boolean {
    try {
      const next = loadCredentials();
      // Keep the ticket keys, so sessions resumed from earlier tickets still resume.
      server.setSecureContext(
        secureContextOptions(next, {
          ...tlsSettings,
          ticketKeys: tlsSettings.ticketKeys ?? server.getTicketKeys(),
        }),
      );
      credentials = next;
      log.info({ event: 'tls_certificate_reloaded', serial: next.serial, not_after: next.notAfter });
      return true;
    } catch (err) {
      log.error({ event: 'tls_certificate_reload_failed', err }, 'kept the old certificate');
      return false;
    }
  }

  const broker: Broker = {
    config,
    aedes,
    server,
    metrics,
    revocation,
    log,
    sessions,
    subjectsWarmed,
    get credentials() {
      return credentials;
    },
    reloadCertificate,
    resync,
    async start() {
      // Subscribe before loading, so nothing between the snapshot and the subscription is lost.
      unsubscribe = await registry.onChange(onChange);
      const snap = await registry.revokedSet();
      revocation.replace(snap);
      metrics.revocationGeneration.set(revocation.generation);
      await aedes.listen();
      resyncTimer = setInterval(() => void resync(), config.revocation.resyncMs);
      resyncTimer.unref();
      presence.start();
      if (config.tls.certFile && config.tls.keyFile) {
        stopWatching = watchFiles([config.tls.certFile, config.tls.keyFile], config.tls.watchIntervalMs, () =>
          reloadCertificate(),
        );
      }
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
      void warmSubjects();
      log.info({
        event: 'broker_started',
        port,
        metrics_port: metricsServer?.port,
        node: config.nodeId,
        revocation_generation: revocation.generation,
        certificate_serial: credentials.serial,
      });
      return { port, metricsPort: metricsServer?.port };
    },
    async stop() {
      stopped = true;
      await unsubscribe?.();
      backpressure?.detach();
      clearInterval(resyncTimer);
      stopWatching?.();
      const closing = new Promise<void>((resolve) => listener.close(() => resolve()));
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
  return broker;
}

/**
 * aedes watches each socket with stream.finished(), which builds an ERR_STREAM_PREMATURE_CLOSE error, stack
 * trace and all, whenever a socket closes before its writable side was ended: every DISCONNECT (aedes
 * destroys the socket) and every drop. Its callback, client.close(), ignores that argument, and aedes
 * already closes the client on 'end' and 'error'; a 'close' listener does the rest for the price of a call.
 */
function watchCloseCheaply(client: FleetClient, sock: TLSSocket): void {
  const c = client as FleetClient & { _eos?: () => void };
  if (typeof c._eos !== 'function') return;
  c._eos();
  const onClose = () => client.close();
  sock.on('close', onClose);
  c._eos = () => sock.removeListener('close', onClose);
}

/**
 * Refuses a packet whose declared length is over the limit as soon as its fixed header is read, before
 * its body is buffered.
 */
function limitPacketSize(client: FleetClient, max: number): void {
  const parser = client._parser;
  if (!parser || max <= 0) return;
  const parseLength = parser._parseLength;
  parser._parseLength = function (this: typeof parser) {
    const ok = parseLength.call(this);
    if (ok && this.packet.length > max) {
      this._emitError(new Error(`packet of ${this.packet.length} bytes is over the ${max}-byte limit`));
      return false;
    }
    return ok;
  };
}

/**
 * Drops aedes' per-connect and per-disconnect `$SYS` notices (see BrokerConfig.skipSysConnectNotices).
 * Each is a Packet allocation plus an emitter round trip on the connect path, for nobody.
 */
function skipSysNotices(aedes: Aedes): void {
  const a = aedes as unknown as {
    id: string;
    publish(p: { topic: string }, cb?: unknown, cb2?: unknown): void;
  };
  const newClients = `$SYS/${a.id}/new/clients`;
  const disconnects = `$SYS/${a.id}/disconnect/clients`;
  const publish = a.publish;
  a.publish = function (this: unknown, packet: { topic: string }, client?: unknown, done?: unknown) {
    if (packet.topic === newClients || packet.topic === disconnects) {
      const cb = typeof client === 'function' ? client : done;
      if (typeof cb === 'function') cb();
      return;
    }
    publish.call(this, packet, client, done);
  };
}
