/**
 * The PROXY protocol in front of the broker's TLS listener, as HAProxy's send-proxy-v2 uses it: the
 * header's source address reaches presence; a missing or malformed header is refused with a typed error
 * and counted; and a broker without the option never reads one. Real TLS, the real registry.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Broker, brokerConfig } from '../broker/index.ts';
import {
  type ProxyHeaderError,
  type ProxyHeaderFailure,
  parseProxyHeader,
} from '../broker/proxy-protocol.ts';
import type { Registry } from '../registry/index.ts';
import { type BrokerFixture, brokerFixture, type Credentials, type StartedBroker } from './helpers/broker.ts';

// ------------------------------------------------------------------------------------------ headers

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v2(opts: {
  verCmd?: number;
  fam?: number;
  addr?: Buffer;
  tlv?: Buffer;
  declaredLength?: number;
}): Buffer {
  const body = Buffer.concat([opts.addr ?? Buffer.alloc(0), opts.tlv ?? Buffer.alloc(0)]);
  const fixed = Buffer.alloc(4);
  fixed[0] = opts.verCmd ?? 0x21;
  fixed[1] = opts.fam ?? 0x11;
  fixed.writeUInt16BE(opts.declaredLength ?? body.length, 2);
  return Buffer.concat([V2_SIG, fixed, body]);
}

function inet4(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  src.split('.').forEach((o, i) => {
    b[i] = Number(o);
  });
  dst.split('.').forEach((o, i) => {
    b[4 + i] = Number(o);
  });
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

function inet6(src: number[], dst: number[], sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  for (let i = 0; i < 8; i++) {
    b.writeUInt16BE(src[i] ?? 0, i * 2);
    b.writeUInt16BE(dst[i] ?? 0, 16 + i * 2);
  }
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return b;
}

const v2Inet4 = (src: string, sport = 40000) => v2({ addr: inet4(src, '10.0.0.5', sport, 8883) });
const v1 = (line: string) => Buffer.from(line, 'latin1');

describe('parseProxyHeader reads', () => {
  it.each([
    [
      'a v1 TCP4 line',
      v1('PROXY TCP4 198.51.100.7 10.0.0.5 40000 8883\r\n'),
      { version: 1, command: 'proxy', source: { address: '198.51.100.7', port: 40000, family: 'IPv4' } },
    ],
    [
      'a v1 TCP6 line',
      v1('PROXY TCP6 2001:db8::7 2001:db8::1 40001 8883\r\n'),
      { version: 1, command: 'proxy', source: { address: '2001:db8::7', port: 40001, family: 'IPv6' } },
    ],
    [
      'v1 UNKNOWN as the balancer’s own connection',
      v1('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'),
      { version: 1, command: 'local' },
    ],
    [
      'a v2 PROXY INET header',
      v2Inet4('198.51.100.7'),
      { version: 2, command: 'proxy', source: { address: '198.51.100.7', port: 40000, family: 'IPv4' } },
    ],
    [
      'a v2 PROXY INET6 header in canonical text',
      v2({
        fam: 0x21,
        addr: inet6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5, 8883),
      }),
      { version: 2, command: 'proxy', source: { address: '2001:db8::7', port: 5, family: 'IPv6' } },
    ],
    [
      'a v2 header with TLVs after the addresses',
      v2({
        addr: inet4('203.0.113.1', '10.0.0.5', 1, 8883),
        tlv: Buffer.from([0x04, 0x00, 0x02, 0xab, 0xcd]),
      }),
      { version: 2, command: 'proxy', source: { address: '203.0.113.1', port: 1, family: 'IPv4' } },
    ],
    ['a v2 LOCAL header (a health check)', v2({ verCmd: 0x20, fam: 0x00 }), { version: 2, command: 'local' }],
  ])('%s', (_name, bytes, expected) => {
    const tail = Buffer.from([0x16, 0x03, 0x01]); // the start of a ClientHello stays after the header
    const r = parseProxyHeader(Buffer.concat([bytes, tail]));
    expect(r.done).toBe(true);
    if (!r.done) return;
    expect(r.header).toMatchObject(expected);
    expect(r.length).toBe(bytes.length);
  });

  it.each([
    ['v1', v1('PROXY TCP4 198.51.100.7 10.0.0.5 40000 8883\r\n')],
    ['v2', v2Inet4('198.51.100.7')],
  ])('a %s header delivered one byte at a time, completing only with its last byte', (_v, bytes) => {
    for (let n = 1; n < bytes.length; n++) expect(parseProxyHeader(bytes.subarray(0, n)).done).toBe(false);
    expect(parseProxyHeader(bytes).done).toBe(true);
  });
});

describe('parseProxyHeader refuses, with a typed error and a reason,', () => {
  it.each<[string, Buffer, ProxyHeaderFailure]>([
    ['a TLS ClientHello with no header', Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5]), 'missing'],
    ['an MQTT CONNECT with no header', Buffer.from([0x10, 0x12, 0x00, 0x04]), 'missing'],
    ['a v1 address that is not IPv4', v1('PROXY TCP4 999.1.1.1 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a v1 TCP6 line with IPv4 addresses', v1('PROXY TCP6 1.2.3.4 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a v1 port over 65535', v1('PROXY TCP4 1.2.3.4 10.0.0.5 65536 2\r\n'), 'malformed'],
    ['a v1 port with a sign', v1('PROXY TCP4 1.2.3.4 10.0.0.5 -1 2\r\n'), 'malformed'],
    ['a v1 line with a missing field', v1('PROXY TCP4 1.2.3.4 10.0.0.5 1\r\n'), 'malformed'],
    ['a v1 line with an unknown protocol', v1('PROXY UDP4 1.2.3.4 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a v1 line with a double space', v1('PROXY TCP4  1.2.3.4 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a v1 line ending in a bare LF', v1('PROXY TCP4 1.2.3.4 10.0.0.5 1 2\n'), 'malformed'],
    ['a v1 line with a NUL', v1('PROXY TCP4 1.2.3.4\u0000 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a v1 line longer than 107 bytes', v1(`PROXY TCP4 ${'1'.repeat(120)}`), 'too_long'],
    ['a v2 header of version 1', v2({ verCmd: 0x11, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }), 'malformed'],
    [
      'a v2 header with command 2',
      v2({ verCmd: 0x22, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }),
      'malformed',
    ],
    [
      'a v2 header with an undefined family',
      v2({ fam: 0x41, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }),
      'malformed',
    ],
    ['v2 INET addresses that are too short', v2({ addr: Buffer.alloc(8) }), 'malformed'],
    ['v2 INET6 addresses that are too short', v2({ fam: 0x21, addr: Buffer.alloc(20) }), 'malformed'],
    ['a v2 PROXY over DGRAM', v2({ fam: 0x12, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }), 'malformed'],
    ['a v2 header declaring 60,000 bytes', v2({ declaredLength: 60_000 }), 'too_long'],
  ])('%s', (_name, bytes, reason) => {
    let err: ProxyHeaderError | undefined;
    try {
      parseProxyHeader(bytes);
    } catch (e) {
      err = e as ProxyHeaderError;
    }
    expect(err).toMatchObject({ code: 'BROKER_PROXY_HEADER_INVALID', reason });
  });
});

// ------------------------------------------------------------------------------------------ on the wire

let f: BrokerFixture;
let reg: Registry;
let proxied: StartedBroker;
let plain: StartedBroker;

beforeAll(async () => {
  f = await brokerFixture({ prefix: 'fleet-proxy-' });
  reg = f.registry;
  proxied = await f.start({
    nodeId: 'node-proxied',
    proxyProtocol: true,
    proxyTrustedBalancers: ['127.0.0.1'],
    presence: { flushMs: 50 },
    tls: { handshakeTimeoutMs: 2000 },
  });
  plain = await f.start({ nodeId: 'node-plain', presence: { flushMs: 50 } });
});

afterAll(async () => {
  await f?.cleanup();
});

/**
 * Writes `header` on a fresh TCP connection, then runs TLS and an MQTT CONNECT over the same connection,
 * as a device behind HAProxy would. Resolves with the CONNACK code, or how it ended without one.
 */
function connectThrough(
  port: number,
  header: Buffer | undefined,
  creds: Credentials,
  localAddress?: string,
): Promise<{ returnCode?: number; tlsError?: string; closedBeforeTls?: boolean; sock: Socket }> {
  return new Promise((resolve) => {
    const raw = netConnect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) }, () => {
      if (header) raw.write(header);
      const sock = tlsConnect({
        socket: raw,
        servername: 'localhost',
        ca: f.ca.rootPem,
        cert: creds.cert,
        key: creds.key,
      });
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      parser.on('packet', (p) => {
        if (p.cmd === 'connack') resolve({ returnCode: p.returnCode, sock });
      });
      sock.on('data', (d) => parser.parse(d));
      sock.on('secureConnect', () =>
        sock.write(
          mqttPacket.generate({
            cmd: 'connect',
            protocolId: 'MQTT',
            protocolVersion: 4,
            clean: true,
            clientId: creds.id,
            keepalive: 30,
          }),
        ),
      );
      sock.on('error', (e: NodeJS.ErrnoException) => resolve({ tlsError: e.code ?? e.message, sock }));
      sock.on('close', () => resolve({ closedBeforeTls: !sock.authorized, sock }));
    });
    raw.on('error', () => {});
  });
}

/** Writes raw bytes and resolves when the broker closes the connection (or rejects after `ms`). */
function closedAfterWriting(port: number, bytes: Buffer, ms = 3000, localAddress?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) }, () =>
      s.write(bytes),
    );
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`still open after ${ms} ms`));
    }, ms);
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function refusedCount(broker: Broker, reason: ProxyHeaderFailure): Promise<number> {
  const m = await broker.metrics.registry.getSingleMetric('fleet_broker_proxy_header_refused_total')?.get();
  return m?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

async function presenceOf(id: string, until: (p: { remoteAddress: string | null }) => boolean) {
  const t = Date.now() + 3000;
  for (;;) {
    const p = (await reg.getDevice(id))?.presence;
    if (p && until(p)) return p;
    if (Date.now() > t) return p;
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('a broker with the PROXY protocol on', () => {
  it.each([
    ['v2', 'dev-proxy-v2', v2Inet4('198.51.100.7', 40000), '198.51.100.7'],
    ['v1', 'dev-proxy-v1', v1('PROXY TCP4 203.0.113.44 10.0.0.5 51000 8883\r\n'), '203.0.113.44'],
    [
      'v2 over IPv6',
      'dev-proxy-v6',
      v2({
        fam: 0x21,
        addr: inet6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42], [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 7, 8883),
      }),
      '2001:db8::42',
    ],
  ])('records the device address from a %s header in presence', async (_v, id, header, address) => {
    const creds = await f.enroll('device', id);
    const r = await connectThrough(proxied.port, header, creds);
    expect(r.returnCode).toBe(0);
    expect(proxied.broker.sessions.get(`device:${id}`)).toBeDefined();
    const p = await presenceOf(id, (p) => p.remoteAddress === address);
    expect(p).toMatchObject({ connected: true, remoteAddress: address, brokerNode: 'node-proxied' });
    r.sock.destroy();
  });

  it('keeps the balancer’s own address for a LOCAL header (health checks) and still runs TLS after it', async () => {
    const creds = await f.enroll('device', 'dev-proxy-local');
    const r = await connectThrough(proxied.port, v2({ verCmd: 0x20, fam: 0x00 }), creds);
    expect(r.returnCode).toBe(0);
    const p = await presenceOf('dev-proxy-local', (p) => p.remoteAddress !== null);
    expect(p?.remoteAddress).toMatch(/127\.0\.0\.1$/);
    r.sock.destroy();
  });

  it.each<[string, Buffer, ProxyHeaderFailure]>([
    ['a malformed v1 header', v1('PROXY TCP4 999.1.1.1 10.0.0.5 1 2\r\n'), 'malformed'],
    ['a malformed v2 header', v2({ verCmd: 0x22, addr: inet4('1.2.3.4', '5.6.7.8', 1, 2) }), 'malformed'],
    [
      'a TLS ClientHello without a header (a device bypassing the balancer)',
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05]),
      'missing',
    ],
    ['an oversized v2 header', v2({ declaredLength: 60_000 }), 'too_long'],
  ])('refuses %s, closing the connection and counting it', async (_name, bytes, reason) => {
    const before = await refusedCount(proxied.broker, reason);
    await closedAfterWriting(proxied.port, bytes);
    expect(await refusedCount(proxied.broker, reason)).toBe(before + 1);
  });

  it('refuses a connection whose header never completes, after the timeout', async () => {
    const before = await refusedCount(proxied.broker, 'timeout');
    await closedAfterWriting(proxied.port, v1('PROXY TCP4 1.2.3.4'), 5000);
    expect(await refusedCount(proxied.broker, 'timeout')).toBe(before + 1);
  });

  it('refuses a device that connects straight to it with TLS (no header): it cannot reach CONNECT', async () => {
    const creds = await f.enroll('device', 'dev-proxy-direct');
    const r = await connectThrough(proxied.port, undefined, creds);
    expect(r.returnCode).toBeUndefined();
    expect(proxied.broker.sessions.has('device:dev-proxy-direct')).toBe(false);
  });
});

describe('PROXY headers are believed only from the configured balancers (issue 9 item 8)', () => {
  // The balancer is 127.0.0.1 (proxyTrustedBalancers); 127.0.0.9 is anyone else who reaches the port.
  it('refuses and closes a connection from elsewhere that claims an address in a valid header', async () => {
    const creds = await f.enroll('device', 'dev-proxy-forged');
    const before = await refusedCount(proxied.broker, 'untrusted');
    const r = await connectThrough(proxied.port, v2Inet4('198.51.100.66'), creds, '127.0.0.9');
    expect(r.returnCode).toBeUndefined();
    expect(r.sock.destroyed).toBe(true);
    expect(proxied.broker.sessions.has('device:dev-proxy-forged')).toBe(false);
    expect((await reg.getDevice('dev-proxy-forged'))?.presence ?? null).toBeNull();
    expect(await refusedCount(proxied.broker, 'untrusted')).toBe(before + 1);
  });

  it.each([
    ['a v1 header', v1('PROXY TCP4 203.0.113.9 10.0.0.5 1 8883\r\n')],
    ['a TLS ClientHello without a header', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05])],
    ['nothing at all (closed at accept, not after a timeout)', Buffer.alloc(0)],
  ])('refuses and closes %s from elsewhere at once', async (_name, bytes) => {
    const before = await refusedCount(proxied.broker, 'untrusted');
    await closedAfterWriting(proxied.port, bytes, 1000, '127.0.0.9');
    expect(await refusedCount(proxied.broker, 'untrusted')).toBe(before + 1);
  });

  it('counts a proxied connection by the address its header declares, not by the balancer’s', async () => {
    // One handshake in flight per source: two silent devices behind the balancer with different addresses
    // are both admitted; a second from an address already in flight is refused at once.
    const b = await f.start({
      nodeId: 'node-proxied-per-source',
      proxyProtocol: true,
      proxyTrustedBalancers: ['127.0.0.0/30'],
      limits: { maxHandshakesPerSource: 1 },
      tls: { firstByteTimeoutMs: 3000 },
    });
    const open = (claim: string) =>
      new Promise<Socket>((resolve) => {
        const s = netConnect({ host: '127.0.0.1', port: b.port }, () => {
          s.write(v2Inet4(claim));
          resolve(s);
        });
        s.on('error', () => {});
      });
    const a = await open('198.51.100.1');
    const c = await open('198.51.100.2');
    await new Promise((r) => setTimeout(r, 200));
    const closed = (s: Socket) => s.destroyed || s.readableEnded;
    expect([closed(a), closed(c)]).toEqual([false, false]);
    const before = (await b.broker.metrics.admissionRefused.get()).values.find(
      (v) => v.labels.reason === 'source_handshakes_in_flight',
    )?.value;
    await closedAfterWriting(b.port, v2Inet4('198.51.100.1'), 1000);
    const after = (await b.broker.metrics.admissionRefused.get()).values.find(
      (v) => v.labels.reason === 'source_handshakes_in_flight',
    )?.value;
    expect(after).toBe((before ?? 0) + 1);
    a.destroy();
    c.destroy();
    await b.stop();
  });

  it('refuses to start with the PROXY protocol on and no balancer named, or a bad entry', () => {
    expect(() => brokerConfig({ proxyProtocol: true })).toThrow(/proxyTrustedBalancers/);
    expect(() => brokerConfig({ proxyProtocol: true, proxyTrustedBalancers: ['10.0.0.0/33'] })).toThrow(
      /prefix length/,
    );
    expect(() => brokerConfig({ proxyProtocol: true, proxyTrustedBalancers: ['balancer.local'] })).toThrow(
      /not an IP address/,
    );
    expect(
      brokerConfig({ proxyProtocol: true, proxyTrustedBalancers: ['10.0.0.7', '2001:db8::/64'] }),
    ).toBeDefined();
  });
});

describe('a broker with the PROXY protocol off', () => {
  it('never reads a header: one sent before TLS breaks the handshake and the device is not admitted', async () => {
    const creds = await f.enroll('device', 'dev-forged-proxy');
    const r = await connectThrough(plain.port, v2Inet4('198.51.100.99'), creds);
    expect(r.returnCode).toBeUndefined();
    expect(plain.broker.sessions.has('device:dev-forged-proxy')).toBe(false);
    expect((await reg.getDevice('dev-forged-proxy'))?.presence ?? null).toBeNull();
  });

  it('takes the address from the TCP connection itself', async () => {
    const creds = await f.enroll('device', 'dev-plain');
    const r = await connectThrough(plain.port, undefined, creds);
    expect(r.returnCode).toBe(0);
    const p = await presenceOf('dev-plain', (p) => p.remoteAddress !== null);
    expect(p).toMatchObject({
      remoteAddress: expect.stringMatching(/127\.0\.0\.1$/),
      brokerNode: 'node-plain',
    });
    r.sock.destroy();
  });
});
