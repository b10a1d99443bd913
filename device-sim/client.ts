/**
 * A lean MQTT 3.1.1 client on `tls.connect` and mqtt-packet, built for measuring: each stage of a connect
 * (TCP, TLS handshake, CONNACK) is timed on the monotonic clock, and every way a connect can fail is named.
 * MQTT.js reports a TLS 1.3 handshake the server rejected only as `close` (the alert arrives after the
 * client thinks it is done), so this client keeps its own timeout and classifies a close by the stage it
 * happened in.
 *
 * Times are `process.hrtime.bigint()` nanoseconds: CLOCK_MONOTONIC, the same in every process on the
 * machine, so a publish stamped in a worker can be timed by the subscriber in the parent.
 */
import { connect as netConnect } from 'node:net';
import { type SecureContext, type TLSSocket, connect as tlsConnect } from 'node:tls';
import mqttPacket, { type Packet } from 'mqtt-packet';

export const now = (): bigint => process.hrtime.bigint();
/** Microseconds between two hrtime readings. */
export const usSince = (t0: bigint, t1: bigint = now()): number => Number(t1 - t0) / 1000;

export type Stage = 'tcp' | 'tls' | 'connack';

export interface ConnectTimings {
  /** TCP connect, from the start. */
  readonly tcpUs: number;
  /** TLS handshake, from TCP connected to secureConnect. */
  readonly tlsUs: number;
  /** CONNECT written to CONNACK read. */
  readonly connackUs: number;
  /** The whole connect, start to CONNACK. */
  readonly totalUs: number;
  readonly resumed: boolean;
}

export interface ConnectSpec {
  readonly host: string;
  readonly port: number;
  readonly servername: string;
  readonly secureContext: SecureContext;
  readonly localAddress?: string | undefined;
  /** A TLS session (ticket) to offer for resumption. */
  readonly session?: Buffer | undefined;
  readonly clientId: string;
  readonly keepaliveS: number;
  readonly timeoutMs: number;
}

const CONNACK_NAMES: Record<number, string> = {
  1: 'unacceptable_protocol',
  2: 'identifier_rejected',
  3: 'server_unavailable',
  4: 'bad_credentials',
  5: 'not_authorized',
};

export function connackCause(code: number): string {
  return `connack_${code}_${CONNACK_NAMES[code] ?? 'unknown'}`;
}

/**
 * Names a socket error by its stable code (never the message): a TLS alert from the server, a local TLS
 * failure, a refused or reset TCP connection, a source-port or file-descriptor shortage.
 */
export function classifyError(err: NodeJS.ErrnoException | undefined, stage: Stage): string {
  const code = err?.code ?? '';
  if (code === 'ECONNREFUSED') return 'tcp_refused';
  if (code === 'EADDRNOTAVAIL' || code === 'EADDRINUSE') return 'tcp_no_source_port';
  if (code === 'EMFILE' || code === 'ENFILE') return 'fd_exhausted';
  if (code === 'ETIMEDOUT') return 'tcp_timeout';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'tcp_unreachable';
  const alert = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(.+)$/.exec(code);
  if (alert) return `tls_alert_${alert[1]!.toLowerCase()}`;
  if (code.startsWith('ERR_SSL_')) return `tls_${code.slice('ERR_SSL_'.length).toLowerCase()}`;
  if (code.startsWith('ERR_TLS_')) return `tls_${code.slice('ERR_TLS_'.length).toLowerCase()}`;
  // The server's certificate failed our verification (OpenSSL X509 verify codes).
  if (/CERT|SIGNATURE|ISSUER|SELF_SIGNED|LEAF/.test(code)) return `tls_server_${code.toLowerCase()}`;
  if (code === 'ECONNRESET' || code === 'EPIPE')
    return stage === 'connack' ? 'reset_before_connack' : `${stage}_reset`;
  return `${stage}_error${code ? `_${code.toLowerCase()}` : ''}`;
}

export type ConnectResult =
  | { ok: true; conn: Connection; timings: ConnectTimings }
  | { ok: false; cause: string; stage: Stage; timings: Partial<ConnectTimings> };

export interface ConnectionEvents {
  /** A packet other than CONNACK/PINGRESP (PUBACK, SUBACK, PUBLISH). */
  onPacket?(conn: Connection, packet: Packet): void;
  /** The connection closed after CONNACK and we did not close it: the server did (or the network). */
  onDrop?(conn: Connection, cause: string, atNs: bigint): void;
}

/** A live MQTT connection (after CONNACK 0). */
export class Connection {
  /** The newest TLS session the server gave us (TLS 1.3 tickets arrive after the handshake). */
  session: Buffer | undefined;
  closedByUs = false;
  closed = false;
  private lastWrite = now();
  private keepalive: NodeJS.Timeout | undefined;
  events: ConnectionEvents = {};

  constructor(
    readonly socket: TLSSocket,
    readonly clientId: string,
    keepaliveS: number,
  ) {
    // Ping at half the keepalive when nothing else was sent [MQTT-3.1.2-23].
    const half = Math.max(1000, (keepaliveS * 1000) / 2);
    this.keepalive = setInterval(() => {
      if (usSince(this.lastWrite) / 1000 >= half * 0.9) this.write(PINGREQ);
    }, half);
    this.keepalive.unref();
  }

  write(buf: Buffer): boolean {
    this.lastWrite = now();
    return this.socket.write(buf);
  }

  get backlogBytes(): number {
    return this.socket.writableLength;
  }

  /** Leaves politely with DISCONNECT. */
  end(): void {
    this.closedByUs = true;
    this.stopTimers();
    if (!this.socket.destroyed) this.socket.end(DISCONNECT);
  }

  /** Drops the connection at once (an outage, as the broker sees it): no DISCONNECT. */
  destroy(): void {
    this.closedByUs = true;
    this.stopTimers();
    this.socket.destroy();
  }

  stopTimers(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = undefined;
  }
}

const PINGREQ = Buffer.from([0xc0, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);

export function pubackPacket(messageId: number): Buffer {
  return Buffer.from([0x40, 0x02, messageId >> 8, messageId & 0xff]);
}

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/**
 * A PUBLISH packet [MQTT-3.3], written by hand: on the hot path this is a few copies, where a general
 * encoder would build an object per message.
 */
export function publishPacket(topic: Buffer, payload: Buffer, qos: 0 | 1, messageId: number): Buffer {
  const varLen = 2 + topic.length + (qos ? 2 : 0);
  const rl = remainingLength(varLen + payload.length);
  const out = Buffer.allocUnsafe(1 + rl.length + varLen + payload.length);
  let p = 0;
  out[p++] = 0x30 | (qos << 1);
  rl.copy(out, p);
  p += rl.length;
  out.writeUInt16BE(topic.length, p);
  p += 2;
  topic.copy(out, p);
  p += topic.length;
  if (qos) {
    out.writeUInt16BE(messageId, p);
    p += 2;
  }
  payload.copy(out, p);
  return out;
}

export function subscribePacket(filter: string, qos: 0 | 1, messageId = 1): Buffer {
  return mqttPacket.generate({ cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos }] });
}

/**
 * Connects one client: TCP, TLS (mutual), CONNECT, CONNACK. Always settles, within `timeoutMs`.
 */
export function connectMqtt(spec: ConnectSpec, events: ConnectionEvents = {}): Promise<ConnectResult> {
  return new Promise((resolve) => {
    const t0 = now();
    let tTcp: bigint | undefined;
    let tTls: bigint | undefined;
    let stage: Stage = 'tcp';
    let settled = false;
    let lastError: NodeJS.ErrnoException | undefined;
    let conn: Connection | undefined;
    let session: Buffer | undefined;
    const parser = mqttPacket.parser({ protocolVersion: 4 });

    const partial = (): Partial<ConnectTimings> => ({
      ...(tTcp ? { tcpUs: usSince(t0, tTcp) } : {}),
      ...(tTcp && tTls ? { tlsUs: usSince(tTcp, tTls) } : {}),
    });
    const fail = (cause: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      raw.destroy();
      resolve({ ok: false, cause, stage, timings: partial() });
    };
    // The timeout is judged after the event loop's poll phase (setImmediate): when this process was busy
    // and the next stage's I/O is already waiting, it is processed first, so a connect that completed
    // while the loop was late is not counted as a timeout of the stage it had already left.
    const timer = setTimeout(() => setImmediate(() => fail(timeoutCause())), spec.timeoutMs);
    const timeoutCause = () => {
      if (stage !== 'tls') return `timeout_${stage}`;
      // TCP is up; did the server answer the ClientHello at all? Silence means the server never got to
      // it in time (its event loop or accept queue), not a slow handshake on our side.
      return raw.bytesRead === 0 ? 'timeout_tls_server_silent' : 'timeout_tls';
    };

    // Our own TCP socket under TLS, to see the raw bytes the server sent: a connection closed before the
    // server sent a single TLS byte was refused at admission (rate limit, connection cap), not in TLS.
    const raw = netConnect({
      host: spec.host,
      port: spec.port,
      ...(spec.localAddress ? { localAddress: spec.localAddress } : {}),
    });
    const socket = tlsConnect({
      socket: raw,
      servername: spec.servername,
      secureContext: spec.secureContext,
      ...(spec.session ? { session: spec.session } : {}),
      // Never relaxed: the simulator verifies the broker like a device would.
      rejectUnauthorized: true,
    });
    raw.on('connect', () => {
      tTcp = now();
      stage = 'tls';
      // Without it Nagle and delayed ACK add ≈ 40 ms to small writes (benchmarking.md).
      raw.setNoDelay(true);
    });
    // Errors surface on the TLS socket; the raw one must not throw unhandled.
    raw.on('error', (e: NodeJS.ErrnoException) => {
      lastError ??= e;
    });
    const refusedBeforeTls = () => stage === 'tls' && raw.bytesRead === 0;
    socket.on('session', (s: Buffer) => {
      session = s;
      if (conn) conn.session = s;
    });
    socket.on('secureConnect', () => {
      tTls = now();
      stage = 'connack';
      socket.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: true,
          clientId: spec.clientId,
          keepalive: spec.keepaliveS,
        }),
      );
    });
    parser.on('packet', (packet: Packet) => {
      if (!settled) {
        if (packet.cmd !== 'connack') return fail('protocol_unexpected_packet');
        const code = packet.returnCode ?? 0;
        if (code !== 0) return fail(connackCause(code));
        settled = true;
        clearTimeout(timer);
        const t3 = now();
        conn = new Connection(socket, spec.clientId, spec.keepaliveS);
        conn.session = session;
        conn.events = events;
        resolve({
          ok: true,
          conn,
          timings: {
            tcpUs: usSince(t0, tTcp!),
            tlsUs: usSince(tTcp!, tTls!),
            connackUs: usSince(tTls!, t3),
            totalUs: usSince(t0, t3),
            resumed: socket.isSessionReused(),
          },
        });
        return;
      }
      if (packet.cmd === 'pingresp') return;
      conn?.events.onPacket?.(conn, packet);
    });
    parser.on('error', () => {
      if (!settled) fail('protocol_malformed');
      else socket.destroy();
    });
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      lastError = e;
      if (settled) return;
      const c = classifyError(e, stage);
      fail(refusedBeforeTls() && (c === 'tls_reset' || c.startsWith('tls_error')) ? 'refused_before_tls' : c);
    });
    socket.on('close', () => {
      if (!settled) {
        // A TLS 1.3 server that rejects our certificate sends its alert after our Finished: we may see
        // only a close, after secureConnect, before CONNACK.
        fail(
          refusedBeforeTls()
            ? 'refused_before_tls'
            : lastError
              ? classifyError(lastError, stage)
              : stage === 'connack'
                ? 'closed_before_connack'
                : `closed_during_${stage}`,
        );
        return;
      }
      if (conn && !conn.closed) {
        conn.closed = true;
        conn.stopTimers();
        if (!conn.closedByUs) {
          const cause = lastError
            ? `dropped_${classifyError(lastError, 'connack').replace(/^reset_before_connack$/, 'reset')}`
            : 'dropped_by_server';
          conn.events.onDrop?.(conn, cause, now());
        }
      }
    });
  });
}
