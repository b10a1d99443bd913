/**
 * Benchmark load process (started by mq-throughput.ts): 10 publishers → 1 subscriber on raw TCP sockets
 * with pre-encoded PUBLISH packets, so the broker is measured and not MQTT.js. The subscriber counts every
 * PUBLISH by scanning frames (and PUBACKs them at QoS 1), and checks per-publisher order by a sequence
 * number in the payload. Every loop is bounded in count and time. Loopback only.
 *
 * IPC protocol: sends { type: 'ready' } once all clients are connected and subscribed, waits for 'go',
 * then sends { type: 'result', ... } and exits.
 */
import { readFileSync } from 'node:fs';
import { type Socket, connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import mqtt from 'mqtt-packet';
import type { Fixture } from './broker.bench.ts';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}
const port = arg('port', 1883);
const qos = arg('qos', 0) as 0 | 1;
const publishers = arg('publishers', 10);
const perPublisher = arg('messages', 50_000);
const payloadBytes = Math.max(8, arg('payload', 32));
const deadlineMs = arg('deadline', 60_000);
const stallMs = arg('stall', 5_000);
const BATCH = 64;
const WINDOW = 10_000; // QoS 1 unacked per publisher: well under the 16-bit message id space
const total = publishers * perPublisher;

/**
 * `--tls <fixture dir>` (broker.bench.ts): mTLS with the fixture's identities, as the Fleet broker's policy
 * wants them: the last `publishers` devices publish to `devices/<id>/telemetry`, the bench service
 * subscribes to `devices/+/telemetry/#`. Without it: plain TCP, `bench-pub-<i>` to `bench/p<i>/telemetry`.
 */
const tlsIdx = process.argv.indexOf('--tls');
const fx =
  tlsIdx > 0
    ? (JSON.parse(readFileSync(join(process.argv[tlsIdx + 1]!, 'fixture.json'), 'utf8')) as Fixture)
    : undefined;
type Who = { clientId: string; cert?: string; key?: string };
const subscriberWho: Who = fx ? { clientId: fx.service.id, ...fx.service } : { clientId: 'bench-sub' };
const publisherWho = (i: number): Who & { topic: string } => {
  if (!fx) return { clientId: `bench-pub-${i}`, topic: `bench/p${i}/telemetry` };
  const d = fx.devices[fx.devices.length - publishers + i]!;
  return { clientId: d.id, cert: d.cert, key: d.key, topic: `devices/${d.id}/telemetry` };
};
const subscribeFilter = fx ? 'devices/+/telemetry/#' : 'bench/#';

function open(who: Who): Promise<{ sock: Socket; rest: Buffer }> {
  const clientId = who.clientId;
  return new Promise((resolve, reject) => {
    const sock = fx
      ? tlsConnect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          cert: who.cert,
          key: who.key,
          ca: fx.rootPem,
        })
      : tcpConnect({ host: '127.0.0.1', port, noDelay: true });
    sock.setNoDelay(true);
    const timer = setTimeout(() => reject(new Error(`${clientId}: no CONNACK`)), 10_000);
    sock.once('error', reject);
    sock.write(
      mqtt.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clean: true,
        clientId,
        keepalive: fx ? 600 : 0,
      }),
    );
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 4) {
        clearTimeout(timer);
        sock.removeListener('data', onData);
        if (buf[0] !== 0x20 || buf[3] !== 0) return reject(new Error(`${clientId}: CONNACK refused`));
        resolve({ sock, rest: buf.subarray(4) });
      }
    };
    sock.on('data', onData);
  });
}

/** Calls onFrame(type, flags, buf, start, end) for each complete frame; returns the unconsumed tail. */
function scan(
  buf: Buffer,
  onFrame: (type: number, flags: number, b: Buffer, bodyStart: number, end: number) => void,
): Buffer {
  let pos = 0;
  const len = buf.length;
  while (pos + 2 <= len) {
    let mult = 1;
    let rl = 0;
    let i = pos + 1;
    let complete = false;
    for (let k = 0; k < 4 && i < len; k++, i++) {
      const byte = buf[i]!;
      rl += (byte & 0x7f) * mult;
      mult *= 128;
      if ((byte & 0x80) === 0) {
        complete = true;
        i++;
        break;
      }
    }
    if (!complete || i + rl > len) break;
    onFrame(buf[pos]! >> 4, buf[pos]! & 0x0f, buf, i, i + rl);
    pos = i + rl;
  }
  return pos === len ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
}

// ---- subscriber
const expected = new Uint32Array(publishers);
let received = 0;
let outOfOrder = 0;
let tLastRecv = 0;
let lastProgress = performance.now();
const sub = await open(subscriberWho);
let subscribed = false;
let subTail = sub.rest;
const subAckBufs: Buffer[] = [];
sub.sock.on('data', (d: Buffer) => {
  subTail = scan(subTail.length ? Buffer.concat([subTail, d]) : d, (type, flags, b, s, e) => {
    if (type === 9) {
      if (b[e - 1] === 0x80) throw new Error(`SUBACK refused ${subscribeFilter}`);
      subscribed = true;
      return;
    }
    if (type !== 3) return;
    const q = (flags >> 1) & 3;
    let p = s + 2 + b.readUInt16BE(s);
    if (q > 0) {
      subAckBufs.push(Buffer.from([0x40, 0x02, b[p]!, b[p + 1]!]));
      p += 2;
    }
    if (e - p >= 8) {
      const pub = b.readUInt32BE(p);
      const seq = b.readUInt32BE(p + 4);
      if (pub < publishers) {
        if (seq !== expected[pub]) outOfOrder++;
        expected[pub] = seq + 1;
      }
    }
    received++;
  });
  if (subAckBufs.length) sub.sock.write(Buffer.concat(subAckBufs.splice(0)));
  tLastRecv = performance.now();
  lastProgress = tLastRecv;
});
sub.sock.write(
  mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: subscribeFilter, qos }] }),
);
for (let i = 0; i < 500 && !subscribed; i++) await new Promise((r) => setTimeout(r, 10));
if (!subscribed) throw new Error('no SUBACK');

// ---- publishers
interface Pub {
  sock: Socket;
  sent: number;
  acked: number;
  tail: Buffer;
  template: Buffer;
  idOffset: number;
  payloadOffset: number;
}
const pubs: Pub[] = [];
for (let i = 0; i < publishers; i++) {
  const who = publisherWho(i);
  const { sock, rest } = await open(who);
  const template = mqtt.generate({
    cmd: 'publish',
    topic: who.topic,
    payload: Buffer.alloc(payloadBytes),
    qos,
    messageId: qos > 0 ? 1 : undefined,
    retain: false,
    dup: false,
  });
  const payloadOffset = template.length - payloadBytes;
  template.writeUInt32BE(i, payloadOffset);
  const pub: Pub = {
    sock,
    sent: 0,
    acked: 0,
    tail: rest,
    template,
    idOffset: payloadOffset - 2,
    payloadOffset,
  };
  sock.on('data', (d: Buffer) => {
    pub.tail = scan(pub.tail.length ? Buffer.concat([pub.tail, d]) : d, (type) => {
      if (type === 4) pub.acked++;
    });
    if (qos > 0) pump(pub);
  });
  sock.on('error', () => {});
  pubs.push(pub);
}

let running = false;
function pump(p: Pub): void {
  if (!running) return;
  const size = p.template.length;
  while (p.sent < perPublisher) {
    const room = qos > 0 ? WINDOW - (p.sent - p.acked) : BATCH;
    const k = Math.min(BATCH, perPublisher - p.sent, room);
    if (k <= 0) return; // wait for PUBACKs
    const buf = Buffer.allocUnsafe(k * size);
    for (let j = 0; j < k; j++) {
      const off = j * size;
      p.template.copy(buf, off);
      const seq = p.sent + j;
      buf.writeUInt32BE(seq, off + p.payloadOffset + 4);
      if (qos > 0) buf.writeUInt16BE((seq % 65535) + 1, off + p.idOffset);
    }
    p.sent += k;
    if (!p.sock.write(buf)) {
      p.sock.once('drain', () => pump(p));
      return;
    }
  }
}

process.send?.({ type: 'ready' });
await new Promise<void>((resolve) => process.once('message', () => resolve()));

const tStart = performance.now();
lastProgress = tStart;
running = true;
for (const p of pubs) pump(p);
await new Promise<void>((resolve) => {
  const t = setInterval(() => {
    const now = performance.now();
    if (received >= total || now - tStart > deadlineMs || now - lastProgress > stallMs) {
      clearInterval(t);
      resolve();
    }
  }, 20);
});
const elapsed = (tLastRecv - tStart) / 1000;
process.send?.({
  type: 'result',
  qos,
  sent: pubs.reduce((a, p) => a + p.sent, 0),
  total,
  received,
  lost: total - received,
  outOfOrder,
  pubacks: pubs.reduce((a, p) => a + p.acked, 0),
  seconds: elapsed,
  msgPerSec: received / elapsed,
  timedOut: received < total,
});
for (const p of pubs) p.sock.destroy();
sub.sock.destroy();
setTimeout(() => process.exit(0), 100);
