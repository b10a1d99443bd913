/**
 * TLS admission: the first steps of every connection, before aedes reads a byte.
 *
 * 1. Accept: past the cap of handshakes in flight, or over the connect rate, a connection is closed at
 *    accept, before any TLS byte (a fast refusal to retry, not a wait in the kernel's accept queue).
 * 2. Handshake: bounded in time (`handshakeTimeout`); every admitted connection ends it in exactly one of
 *    'secureConnection' or 'tlsClientError', which frees its slot; failures are counted by outcome.
 * 3. Client certificate: decided once per distinct certificate (client-verify.ts), its validity against the
 *    clock on every connection, resumed or not; the verdict (with the identity it carries) stays on the
 *    socket for CONNECT (authenticate.ts), and the socket is handed to aedes. A client refused for its
 *    certificate (or for having none) is logged at warn with its source address, rate-limited.
 *
 * With the PROXY protocol on, a plain TCP listener reads the header first (proxy-protocol.ts).
 */
import type { X509Certificate } from 'node:crypto';
import type { Server as NetServer, Socket } from 'node:net';
import {
  type TLSSocket,
  type TlsOptions,
  type Server as TlsServer,
  createServer as tlsCreateServer,
} from 'node:tls';
import type { Logger } from 'pino';
import { rawSocketOf } from './aedes/tls-socket.ts';
import { type CheckResult, ClientCertVerifier } from './client-verify.ts';
import { TokenBucket } from './limits.ts';
import type { BrokerMetrics } from './metrics.ts';
import { proxyProtocolListener, reportRefusals } from './proxy-protocol.ts';

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
  };
  readonly verifier: Pick<ClientCertVerifier, 'check'>;
  /** Read a PROXY protocol header before TLS, allowing it this long; undefined: never read one. */
  readonly proxyProtocol: { readonly timeoutMs: number } | undefined;
  /** Gets each connection whose handshake completed and whose certificate was admitted. */
  readonly handOff: (sock: PeerSocket) => void;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
}

export interface TlsAdmission {
  readonly server: TlsServer;
  /** What listens: the TLS server, or the PROXY protocol listener in front of it. */
  readonly listener: TlsServer | NetServer;
}

/** Marks admission leaves on the raw socket, read back through the TLS socket built on it. */
type RawSocket = Socket & { fleetRefused?: boolean; fleetHandshakeDone?: () => void };

export function tlsAdmission(d: TlsAdmissionDeps): TlsAdmission {
  const { limits: lim, verifier, handOff, metrics, log } = d;
  const admission = new TokenBucket(lim.connectRatePerS, lim.connectBurst);
  const server = tlsCreateServer(d.serverOptions);
  server.maxConnections = lim.maxConnections;
  server.on('drop', () => metrics.admissionRefused.inc({ reason: 'max_connections' }));
  // Admission before the handshake: a refused connection costs an accept and a close, not a handshake.
  let handshakesInFlight = 0;
  server.prependListener('connection', (sock: RawSocket) => {
    const refusal =
      handshakesInFlight >= lim.maxHandshakesInFlight
        ? 'handshakes_in_flight'
        : !admission.take()
          ? 'rate_limited'
          : undefined;
    if (refusal) {
      metrics.admissionRefused.inc({ reason: refusal });
      sock.fleetRefused = true;
      sock.destroy();
      return;
    }
    // Every admitted connection ends its handshake in exactly one of 'secureConnection' or
    // 'tlsClientError' (which also reports a peer that hangs up or times out before finishing).
    handshakesInFlight++;
    let counted = true;
    sock.fleetHandshakeDone = () => {
      if (counted) {
        counted = false;
        handshakesInFlight--;
      }
    };
  });
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
  const listener = d.proxyProtocol
    ? proxyProtocolListener(server, {
        timeoutMs: d.proxyProtocol.timeoutMs,
        onRefused: reportRefusals(metrics.registry, log),
      })
    : server;
  server.on('tlsClientError', (err: NodeJS.ErrnoException, sock) => {
    const raw = rawSocketOf<RawSocket>(sock);
    raw?.fleetHandshakeDone?.();
    if (raw?.fleetRefused) return;
    const outcome = handshakeFailure(err);
    metrics.handshakes.inc({ outcome });
    if (CERTIFICATE_REFUSALS.has(outcome)) logRefusal(outcome, sock.remoteAddress);
    else log.debug({ event: 'tls_handshake_failed', outcome, code: err.code, remote: sock.remoteAddress });
  });
  return { server, listener };
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
