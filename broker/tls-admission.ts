/**
 * TLS admission: the first steps of every connection, before aedes reads a byte. A plain TCP listener
 * (the gate) accepts every connection and hands it to the TLS server only once it is admitted and has sent
 * its first byte; the TLS server never listens itself.
 *
 * 1. Accept: a connection is closed at accept, before any TLS byte (a fast refusal to retry, not a wait in
 *    the kernel's accept queue), when its source is over its own share (handshakes in flight per source,
 *    a token bucket per source) or the node is at its cap of handshakes in flight. The source's share is
 *    checked first, so one source cannot spend the shared budget: unauthenticated connections cost an
 *    attacker a slot of their own address, not the fleet's (issue 9 item 4).
 * 2. First byte: a connection has `firstByteTimeoutMs` (far less than a handshake) to send its first byte;
 *    a client sends its ClientHello as soon as TCP is up, so only a silent connection waits that long.
 *    Then the node's connect rate (a token bucket) is spent, or the connection is closed, still before
 *    any handshake work: the bucket meters handshakes, and a silent connection cannot drain it.
 * 3. Handshake: bounded in time (`handshakeTimeout`); every connection handed to TLS ends it in exactly one
 *    of 'secureConnection' or 'tlsClientError', which frees its slots. Node's tls.Server leaves a socket
 *    whose handshake timed out open until the peer goes away (https.Server closes it): every path that
 *    ends a connection before aedes has it closes the socket here (issue 9 item 3).
 * 4. Client certificate: decided once per distinct certificate (client-verify.ts), its validity against the
 *    clock on every connection, resumed or not; the verdict (with the identity it carries) stays on the
 *    socket for CONNECT (authenticate.ts), and the socket is handed to aedes. A client refused for its
 *    certificate (or for having none) is logged at warn with its source address, rate-limited.
 *
 * With the PROXY protocol on, only the configured balancers may connect; the gate reads their header
 * first (proxy-protocol.ts), and the header's source is then the source admission counts.
 */
import type { X509Certificate } from 'node:crypto';
import { type Server as NetServer, createServer as netCreateServer, type Socket } from 'node:net';
import {
  type TLSSocket,
  type TlsOptions,
  type Server as TlsServer,
  createServer as tlsCreateServer,
} from 'node:tls';
import type { Logger } from 'pino';
import { rawSocketOf } from './aedes/tls-socket.ts';
import { type CheckResult, ClientCertVerifier } from './client-verify.ts';
import { SourceAdmission, sourceKey, TokenBucket } from './limits.ts';
import type { BrokerMetrics } from './metrics.ts';
import {
  adoptProxiedSource,
  ProxyHeaderError,
  readProxyHeader,
  reportRefusals,
  trustedBalancers,
} from './proxy-protocol.ts';

/** What the TLS layer decided about a connection's peer certificate (client-verify.ts), kept on the socket. */
export const PEER = Symbol('fleet.peer');
export type PeerVerdict = Extract<CheckResult, { ok: true }>;
export type PeerSocket = TLSSocket & { [PEER]?: PeerVerdict };

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

/** Who verifies client certificates, and the trust list the secure context gets for it. */
export interface ClientVerification {
  readonly verifier: ClientCertVerifier;
  /** The secure context's `ca`: name-only stand-ins when verifying in JS, the fleet's CAs otherwise. */
  readonly trustPem: string;
  readonly inJs: boolean;
}

/** See BrokerConfig.tls.clientVerification. */
export function clientVerification(trustPem: string, mode: 'cached' | 'openssl'): ClientVerification {
  const verifier = new ClientCertVerifier(trustPem);
  const inJs = mode === 'cached';
  return { verifier, trustPem: inJs ? verifier.caListPem : trustPem, inJs };
}

export interface TlsAdmissionDeps {
  /** The TLS server's options (server-certificate.ts). */
  readonly serverOptions: TlsOptions;
  readonly limits: {
    readonly maxConnections: number;
    /** New connections admitted per second (token bucket); 0 disables. */
    readonly connectRatePerS: number;
    readonly connectBurst: number;
    readonly maxHandshakesInFlight: number;
    /** Handshakes in flight from one source (an IPv4 address, an IPv6 /64); 0 disables. */
    readonly maxHandshakesPerSource: number;
    /** New connections admitted per second from one source (token bucket); 0 disables. */
    readonly connectRatePerSourcePerS: number;
    readonly connectBurstPerSource: number;
  };
  /** Time from accept (or from the end of a PROXY header) to the first TLS byte. */
  readonly firstByteTimeoutMs: number;
  readonly verifier: Pick<ClientCertVerifier, 'check'>;
  /**
   * Read a PROXY protocol header before TLS from the `trusted` balancers (addresses and CIDR blocks),
   * allowing it `timeoutMs`, and refuse every other peer at accept; undefined: never read one.
   */
  readonly proxyProtocol: { readonly timeoutMs: number; readonly trusted: readonly string[] } | undefined;
  /** Gets each connection whose handshake completed and whose certificate was admitted. */
  readonly handOff: (sock: PeerSocket) => void;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
}

export interface TlsAdmission {
  readonly server: TlsServer;
  /** What listens: the gate in front of the TLS server. */
  readonly listener: NetServer;
  /** Closes every connection not yet handed to aedes (at stop: they would hold the listener's close). */
  closePending(): void;
  /** Connections admitted and not yet through their handshake (tests). */
  readonly inFlight: () => number;
}

/** Marks admission leaves on the raw socket, read back through the TLS socket built on it. */
type RawSocket = Socket & { fleetHandshakeDone?: () => void };

export function tlsAdmission(d: TlsAdmissionDeps): TlsAdmission {
  const { limits: lim, verifier, handOff, metrics, log } = d;
  const admission = new TokenBucket(lim.connectRatePerS, lim.connectBurst);
  const sources = new SourceAdmission(
    lim.maxHandshakesPerSource,
    lim.connectRatePerSourcePerS,
    lim.connectBurstPerSource,
  );
  const server = tlsCreateServer(d.serverOptions);
  const proxy = d.proxyProtocol;
  const trusted = proxy ? trustedBalancers(proxy.trusted) : undefined;
  const proxyRefused = proxy ? reportRefusals(metrics.registry, log) : undefined;
  if (proxy) adoptProxiedSource(server);

  /** Raw sockets admitted and not yet through the handshake: each holds a global and a per-source slot. */
  const pending = new Set<RawSocket>();

  const refuse = (sock: Socket, reason: string) => {
    metrics.admissionRefused.inc({ reason });
    sock.destroy();
  };

  /** Step 1: admission, by the source the connection is counted as (the PROXY header's, if any). */
  const admit = (sock: RawSocket): boolean => {
    const key = sourceKey(sock.remoteAddress);
    const own = sources.admit(key);
    if (own) {
      refuse(sock, own);
      return false;
    }
    if (pending.size >= lim.maxHandshakesInFlight) {
      sources.release(key);
      refuse(sock, 'handshakes_in_flight');
      return false;
    }
    pending.add(sock);
    let held = true;
    sock.fleetHandshakeDone = () => {
      if (!held) return;
      held = false;
      pending.delete(sock);
      sources.release(key);
    };
    // A socket destroyed anywhere before its handshake ends (refused, timed out, reset) frees its slots.
    sock.once('close', sock.fleetHandshakeDone);
    return true;
  };

  /** Step 2: the first byte within `firstByteTimeoutMs`, then the socket is the TLS server's. */
  const awaitFirstByte = (sock: RawSocket) => {
    const toTls = () => {
      clearTimeout(timer);
      sock.off('readable', onReadable);
      sock.off('end', onEnd);
      // The node's connect rate meters handshakes (the CPU they cost), so it is spent only by a connection
      // that starts one: a silent connection cannot drain it, and a refusal still costs no handshake.
      if (!admission.take()) return refuse(sock, 'rate_limited');
      server.emit('connection', sock);
    };
    const onReadable = () => {
      if (sock.readableLength > 0) toTls();
      // At EOF with nothing buffered: reading lets the stream emit 'end'.
      else sock.read(0);
    };
    // The peer half-closed without a byte: nothing will come.
    const onEnd = () => {
      clearTimeout(timer);
      metrics.handshakes.inc({ outcome: 'reset' });
      sock.destroy();
    };
    const timer = setTimeout(() => {
      sock.off('readable', onReadable);
      metrics.handshakes.inc({ outcome: 'first_byte_timeout' });
      log.debug({ event: 'tls_first_byte_timeout', remote: sock.remoteAddress });
      sock.destroy();
    }, d.firstByteTimeoutMs);
    timer.unref();
    // Bytes after a PROXY header are already buffered.
    if (sock.readableLength > 0) return toTls();
    sock.on('readable', onReadable);
    sock.on('end', onEnd);
  };

  const listener = netCreateServer({ noDelay: true }, (raw: RawSocket) => {
    // Until TLS has it, a reset is only the end of the connection ('close' frees its slots).
    raw.on('error', () => {});
    if (!proxy) {
      if (admit(raw)) awaitFirstByte(raw);
      return;
    }
    if (!trusted?.(raw.remoteAddress)) {
      proxyRefused?.(
        new ProxyHeaderError('untrusted', `${raw.remoteAddress} is not a configured balancer`),
        raw,
      );
      raw.destroy();
      return;
    }
    readProxyHeader(
      raw,
      { timeoutMs: proxy.timeoutMs },
      () => {
        if (admit(raw)) awaitFirstByte(raw);
      },
      (err) => {
        proxyRefused?.(err, raw);
        raw.destroy();
      },
    );
  });
  listener.maxConnections = lim.maxConnections;
  listener.on('drop', () => metrics.admissionRefused.inc({ reason: 'max_connections' }));

  // Step 3: every connection handed to TLS ends its handshake in exactly one of these two.
  const handshakeOk = metrics.handshakes.labels({ outcome: 'ok' });
  const logRefusal = refusalLogger(log);
  server.on('secureConnection', (sock: PeerSocket) => {
    rawSocketOf<RawSocket>(sock)?.fleetHandshakeDone?.();
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
      logRefusal(peer.refused, sock.remoteAddress);
      sock.destroy();
      return;
    }
    handshakeOk.inc();
    sock[PEER] = peer;
    handOff(sock);
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, sock: TLSSocket) => {
    rawSocketOf<RawSocket>(sock)?.fleetHandshakeDone?.();
    const outcome = handshakeFailure(err);
    metrics.handshakes.inc({ outcome });
    if (CERTIFICATE_REFUSALS.has(outcome)) logRefusal(outcome, sock.remoteAddress);
    else log.debug({ event: 'tls_handshake_failed', outcome, code: err.code, remote: sock.remoteAddress });
    // Node destroys the socket after an OpenSSL error but not after a handshake timeout (or a peer that
    // closed mid-handshake): close it here, whatever the cause, so no socket outlives its handshake.
    sock.destroy();
  });
  return {
    server,
    listener,
    closePending() {
      for (const sock of pending) sock.destroy();
    },
    inFlight: () => pending.size,
  };
}

/** Handshake outcomes that are a refused client certificate (or none), logged for the operator. */
const CERTIFICATE_REFUSALS = new Set([
  'no_certificate',
  'unknown_ca',
  'certificate_expired',
  'certificate_not_yet_valid',
  'bad_certificate',
]);

/**
 * A client refused at the TLS layer for its certificate, logged at warn so that whoever wonders why a
 * client cannot connect sees why, with its source address (the metrics count every one). At most one line
 * per outcome every `everyMs`, saying how many more were refused meanwhile: a storm of bad clients cannot
 * flood the log.
 */
export function refusalLogger(log: Logger, everyMs = 10_000) {
  const last = new Map<string, { at: number; more: number }>();
  return (outcome: string, remote: string | undefined) => {
    const now = Date.now();
    const seen = last.get(outcome);
    if (seen && now - seen.at < everyMs) {
      seen.more++;
      return;
    }
    last.set(outcome, { at: now, more: 0 });
    log.warn(
      { event: 'tls_client_refused', outcome, remote, more_since_last: seen?.more ?? 0 },
      outcome === 'no_certificate'
        ? 'refused a client without a certificate (devices and services present the one Fleet issued them)'
        : 'refused a client certificate',
    );
  };
}
