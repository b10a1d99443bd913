/**
 * The PROXY protocol (HAProxy's spec, versions 1 and 2) in front of the broker's TLS listener.
 *
 * Behind a TCP load balancer that passes TLS through, every connection comes from the balancer; the
 * balancer writes a PROXY header naming the device's real address before the first TLS byte. This module
 * reads that header from the raw TCP socket, hands the rest of the stream (the TLS ClientHello) to the
 * TLS server, and makes the device's address the TLS socket's `remoteAddress`, so presence, logs and the
 * clone detector see the device and not the balancer.
 *
 * Opt-in and all-or-nothing: when enabled, only the configured balancers may connect (anyone else is
 * refused and closed at accept, before a byte is read: a header from them would be a forged address) and
 * each of their connections must start with a valid header; when disabled no header is ever read (a
 * device cannot forge one). A refused connection is a typed ProxyHeaderError, logged and counted by reason.
 */
import { BlockList, isIP, isIPv4, isIPv6, type Socket } from 'node:net';
import type { TLSSocket, Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { rawSocketOf } from './aedes/tls-socket.ts';
import { BrokerError } from './errors.ts';

export type ProxyHeaderFailure =
  /** The connection did not start with a PROXY signature (v1 `PROXY ` or the v2 12-byte signature). */
  | 'missing'
  /** A signature, but the rest does not follow the spec (bad address, port, family, command, no CRLF). */
  | 'malformed'
  /** Longer than a v1 line (107 bytes) or than this listener accepts for v2. */
  | 'too_long'
  /** The header did not arrive completely within the time allowed. */
  | 'timeout'
  /** The peer closed (or reset) before the header was complete. */
  | 'incomplete'
  /**
   * The peer is not a configured balancer: nothing it sends is read, a header included (it could claim
   * any address), and it is closed at accept.
   */
  | 'untrusted';

/** Every refused PROXY header is BROKER_PROXY_HEADER_INVALID; `details.reason` says which check failed. */
export class ProxyHeaderError extends BrokerError {
  readonly reason: ProxyHeaderFailure;
  constructor(reason: ProxyHeaderFailure, problem: string) {
    super('BROKER_PROXY_HEADER_INVALID', `PROXY protocol header refused: ${problem}`, {
      details: { reason },
    });
    this.name = 'ProxyHeaderError';
    this.reason = reason;
  }
}

/** What a header said. `source` is absent for LOCAL / UNKNOWN (the balancer's own connection, e.g. a health check). */
export interface ProxyHeader {
  readonly version: 1 | 2;
  readonly command: 'proxy' | 'local';
  readonly source?: { readonly address: string; readonly port: number; readonly family: 'IPv4' | 'IPv6' };
  readonly destination?: { readonly address: string; readonly port: number };
}

export type ParseResult =
  | { readonly done: false }
  | { readonly done: true; readonly header: ProxyHeader; readonly length: number };

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** v2 signature, §2.2. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** §2.1: "a maximum of 107 characters" including the CRLF. */
const V1_MAX = 107;
/** The 16-byte fixed part of a v2 header. */
const V2_FIXED = 16;
/** Default cap on a v2 header (fixed part + addresses + TLVs); HAProxy's are well under 1 KiB. */
export const DEFAULT_MAX_V2_BYTES = 4096;

const fail = (reason: ProxyHeaderFailure, problem: string): never => {
  throw new ProxyHeaderError(reason, problem);
};

/** True while `buf` is still a prefix of `sig` or starts with all of it. */
function matchesPrefix(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.subarray(0, n).equals(sig.subarray(0, n));
}

/**
 * Parses a PROXY header at the start of `buf`. Returns `{ done: false }` while more bytes are needed,
 * the header and its length once complete, and throws ProxyHeaderError as soon as the bytes cannot be one.
 */
export function parseProxyHeader(buf: Buffer, maxV2Bytes = DEFAULT_MAX_V2_BYTES): ParseResult {
  if (buf.length === 0) return { done: false };
  if (matchesPrefix(buf, V2_SIGNATURE)) {
    return buf.length < V2_FIXED ? { done: false } : parseV2(buf, maxV2Bytes);
  }
  if (matchesPrefix(buf, V1_PREFIX)) {
    return buf.length < V1_PREFIX.length ? { done: false } : parseV1(buf);
  }
  return fail('missing', 'the connection does not start with a PROXY protocol header');
}

const PORT = /^(0|[1-9][0-9]{0,4})$/;

function parseV1(buf: Buffer): ParseResult {
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0) {
    if (buf.length >= V1_MAX) fail('too_long', `a v1 header is at most ${V1_MAX} bytes`);
    // A bare LF or any control byte before the CRLF can never become valid.
    for (let i = V1_PREFIX.length; i < buf.length; i++) {
      const b = buf[i]!;
      if ((b < 0x20 && b !== 0x0d) || b > 0x7e || (b === 0x0d && i < buf.length - 1)) {
        fail('malformed', 'a v1 header holds a byte that is not printable ASCII');
      }
    }
    return { done: false };
  }
  if (end + 2 > V1_MAX) fail('too_long', `a v1 header is at most ${V1_MAX} bytes`);
  const line = buf.toString('latin1', 0, end);
  if (/[^\x20-\x7e]/.test(line)) fail('malformed', 'a v1 header holds a byte that is not printable ASCII');
  const parts = line.split(' ');
  const proto = parts[1];
  if (proto === 'UNKNOWN') {
    // §2.1: the receiver must ignore anything after UNKNOWN up to the CRLF and use the real addresses.
    return { done: true, header: { version: 1, command: 'local' }, length: end + 2 };
  }
  if (proto !== 'TCP4' && proto !== 'TCP6')
    fail('malformed', `v1 protocol ${JSON.stringify(proto)} is not TCP4, TCP6 or UNKNOWN`);
  if (parts.length !== 6)
    fail('malformed', 'a v1 header has exactly: PROXY, protocol, two addresses, two ports');
  const [, , src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const isFamily = proto === 'TCP4' ? isIPv4 : isIPv6;
  if (!isFamily(src) || !isFamily(dst))
    fail('malformed', `v1 addresses are not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`);
  const sp = v1Port(sport);
  const dp = v1Port(dport);
  return {
    done: true,
    header: {
      version: 1,
      command: 'proxy',
      source: { address: src, port: sp, family: proto === 'TCP4' ? 'IPv4' : 'IPv6' },
      destination: { address: dst, port: dp },
    },
    length: end + 2,
  };
}

function v1Port(s: string): number {
  const n = PORT.test(s) ? Number(s) : Number.NaN;
  if (!(n >= 0 && n <= 65535)) fail('malformed', `v1 port ${JSON.stringify(s)} is not 0-65535`);
  return n;
}

function parseV2(buf: Buffer, maxBytes: number): ParseResult {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 0x2) fail('malformed', `v2 version nibble is ${verCmd >> 4}, not 2`);
  const cmd = verCmd & 0x0f;
  if (cmd !== 0x0 && cmd !== 0x1) fail('malformed', `v2 command ${cmd} is neither LOCAL (0) nor PROXY (1)`);
  const famByte = buf[13]!;
  const family = famByte >> 4;
  const transport = famByte & 0x0f;
  if (family > 3 || transport > 2)
    fail('malformed', `v2 address family byte 0x${famByte.toString(16)} is not defined`);
  const len = buf.readUInt16BE(14);
  const total = V2_FIXED + len;
  if (total > maxBytes) fail('too_long', `a v2 header of ${total} bytes is over this listener's ${maxBytes}`);
  if (buf.length < total) return { done: false };
  // §2.2: LOCAL is the balancer's own connection (a health check): use the real addresses, skip the block.
  if (cmd === 0x0) return { done: true, header: { version: 2, command: 'local' }, length: total };
  // PROXY over a TCP listener: only STREAM (or UNSPEC, which the receiver treats as LOCAL) makes sense.
  if (family === 0x0 || transport === 0x0) {
    return { done: true, header: { version: 2, command: 'local' }, length: total };
  }
  if (transport !== 0x1) fail('malformed', 'v2 PROXY over DGRAM on a TCP listener');
  const a = buf.subarray(V2_FIXED, total);
  if (family === 0x1) {
    if (a.length < 12) fail('malformed', `v2 INET addresses need 12 bytes, got ${a.length}`);
    return {
      done: true,
      header: {
        version: 2,
        command: 'proxy',
        source: { address: ipv4(a, 0), port: a.readUInt16BE(8), family: 'IPv4' },
        destination: { address: ipv4(a, 4), port: a.readUInt16BE(10) },
      },
      length: total,
    };
  }
  if (family === 0x2) {
    if (a.length < 36) fail('malformed', `v2 INET6 addresses need 36 bytes, got ${a.length}`);
    return {
      done: true,
      header: {
        version: 2,
        command: 'proxy',
        source: { address: ipv6(a, 0), port: a.readUInt16BE(32), family: 'IPv6' },
        destination: { address: ipv6(a, 16), port: a.readUInt16BE(34) },
      },
      length: total,
    };
  }
  // AF_UNIX: no IP address to report; keep the balancer's.
  if (a.length < 216) fail('malformed', `v2 UNIX addresses need 216 bytes, got ${a.length}`);
  return { done: true, header: { version: 2, command: 'local' }, length: total };
}

const ipv4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/** Canonical text (RFC 5952: lowercase, longest zero run as `::`), and IPv4-mapped as Node prints it. */
function ipv6(b: Buffer, o: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(o + i * 2));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[o + 12]}.${b[o + 13]}.${b[o + 14]}.${b[o + 15]}`;
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

// ------------------------------------------------------------------------------------------ on a socket

/** The header a raw socket arrived with, for the TLS socket built on it. */
const PROXIED = Symbol('fleet.proxyHeader');
type ProxiedSocket = Socket & { [PROXIED]?: ProxyHeader };

/** The PROXY header a connection came with, if it came through a PROXY-protocol listener. */
export function proxyHeaderOf(sock: Socket): ProxyHeader | undefined {
  return (sock as ProxiedSocket)[PROXIED] ?? rawSocketOf<ProxiedSocket>(sock)?.[PROXIED];
}

/** Makes `sock` report the proxied source as its peer (remoteAddress, remotePort, remoteFamily). */
export function presentSource(sock: Socket, h: ProxyHeader): void {
  const s = h.source;
  if (!s) return;
  Object.defineProperties(sock, {
    remoteAddress: { value: s.address, configurable: true },
    remotePort: { value: s.port, configurable: true },
    remoteFamily: { value: s.family, configurable: true },
  });
}

/**
 * The balancers whose PROXY headers are believed: addresses and CIDR blocks (`10.0.0.7`, `10.0.0.0/24`,
 * `2001:db8::/64`). Anyone else who reaches the port could otherwise claim any address (issue 9 item 8).
 * Throws on an entry that is neither; an IPv4-mapped IPv6 peer (`::ffff:10.0.0.7`, what a `::` listener
 * reports for IPv4) is matched as the IPv4 address it is.
 */
export function trustedBalancers(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new BlockList();
  for (const e of entries) {
    const [addr = '', bits, extra] = e.split('/');
    const v = isIP(addr);
    const type = v === 4 ? 'ipv4' : 'ipv6';
    const max = v === 4 ? 32 : 128;
    if (v === 0 || extra !== undefined)
      throw new Error(`${JSON.stringify(e)} is not an IP address or CIDR block`);
    if (bits === undefined) list.addAddress(addr, type);
    else {
      const n = /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
      if (!(n >= 0 && n <= max)) throw new Error(`${JSON.stringify(e)}: the prefix length must be 0-${max}`);
      list.addSubnet(addr, n, type);
    }
  }
  return (address) => {
    if (!address) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    const a = mapped ? mapped[1]! : address;
    const v = isIP(a);
    return v !== 0 && list.check(a, v === 4 ? 'ipv4' : 'ipv6');
  };
}

export interface ReadHeaderOptions {
  /** Time allowed for the whole header to arrive (a balancer writes it at once, before any TLS byte). */
  readonly timeoutMs: number;
  readonly maxV2Bytes?: number;
}

/**
 * Reads the PROXY header at the start of `sock` (a raw TCP socket from a trusted balancer). Calls `done`
 * with the header once it is complete, the bytes after it put back on the socket for TLS and the socket
 * reporting the proxied source as its peer; or `refused` with the typed error, once (the caller closes).
 */
export function readProxyHeader(
  sock: Socket,
  opts: ReadHeaderOptions,
  done: (header: ProxyHeader) => void,
  refused: (err: ProxyHeaderError) => void,
): void {
  const maxV2 = opts.maxV2Bytes ?? DEFAULT_MAX_V2_BYTES;
  let buf: Buffer = Buffer.alloc(0);
  let settled = false;
  const timer = setTimeout(
    () => refuse(new ProxyHeaderError('timeout', `no complete header within ${opts.timeoutMs} ms`)),
    opts.timeoutMs,
  );
  timer.unref();
  const cleanup = () => {
    settled = true;
    clearTimeout(timer);
    sock.off('readable', onReadable);
    sock.off('end', onEnd);
    sock.off('close', onEnd);
    sock.off('error', onEnd);
  };
  const refuse = (err: ProxyHeaderError) => {
    if (settled) return;
    cleanup();
    refused(err);
  };
  const onEnd = () =>
    refuse(new ProxyHeaderError('incomplete', 'the connection closed before the header was complete'));
  const onReadable = () => {
    let chunk: Buffer | null;
    // biome-ignore lint/suspicious/noAssignInExpressions: the stream read loop
    while (!settled && (chunk = sock.read() as Buffer | null) !== null) {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let r: ParseResult;
      try {
        r = parseProxyHeader(buf, maxV2);
      } catch (err) {
        return refuse(err as ProxyHeaderError);
      }
      if (!r.done) continue;
      cleanup();
      // The rest is the start of the TLS handshake: put it back for the TLS socket (it reads a wrapped
      // socket's buffered bytes first).
      if (buf.length > r.length) sock.unshift(buf.subarray(r.length));
      (sock as ProxiedSocket)[PROXIED] = r.header;
      presentSource(sock, r.header);
      done(r.header);
      return;
    }
  };
  sock.on('readable', onReadable);
  sock.on('end', onEnd);
  sock.on('close', onEnd);
  sock.on('error', onEnd);
}

/**
 * Makes every TLS socket of `tls` built on a proxied raw socket report the proxied source: the TLS socket
 * reads its peer address from the kernel, so give it the header's before anything (aedes, logs, presence)
 * reads it.
 */
export function adoptProxiedSource(tls: TlsServer): void {
  const adopt = (sock: TLSSocket) => {
    const h = proxyHeaderOf(sock);
    if (h) presentSource(sock, h);
  };
  tls.prependListener('secureConnection', adopt);
  tls.prependListener('tlsClientError', (_err: Error, sock: TLSSocket) => adopt(sock));
}

const REFUSED_METRIC = 'fleet_broker_proxy_header_refused_total';

/** Counts refusals by reason on the broker's metrics registry and logs the peer's address. */
export function reportRefusals(
  registry: Registry,
  log: Logger,
): (err: ProxyHeaderError, socket: Socket) => void {
  const counter =
    (registry.getSingleMetric(REFUSED_METRIC) as Counter<'reason'> | undefined) ??
    new Counter({
      name: REFUSED_METRIC,
      help: 'Connections refused by the PROXY protocol: not from a trusted balancer, or a header missing or malformed, by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
  return (err, sock) => {
    counter.inc({ reason: err.reason });
    const fields = {
      event: 'proxy_header_refused',
      code: err.code,
      reason: err.reason,
      detail: err.message,
      peer: sock.remoteAddress,
    };
    // Anyone can reach the port: a warning per untrusted connection would let them flood the log (the
    // counter shows a balancer missing from the list). A trusted balancer sending a bad header is a fault.
    if (err.reason === 'untrusted') log.debug(fields, 'connection refused: not from a trusted balancer');
    else log.warn(fields, 'connection refused: bad PROXY protocol header');
  };
}
