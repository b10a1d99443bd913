import { once } from 'node:events';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { Aedes } from 'aedes';
import mqemitter from 'mqemitter';
import mqtt from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { attachBackpressure, type Backpressure } from '../broker/aedes/backpressure.ts';
import { createMq, FleetMq, type MqMessage } from '../broker/mq.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// ---------------------------------------------------------------------------------------------------------
describe('FleetMq delivers exactly as mqemitter does', () => {
  function rng(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s / 4294967296;
    };
  }
  const WORDS = ['a', 'b', '$SYS', '', 'c'];
  const pick = (r: () => number) => WORDS[Math.floor(r() * WORDS.length)]!;
  function filter(r: () => number): string {
    const n = 1 + Math.floor(r() * 3);
    const l: string[] = [];
    for (let i = 0; i < n; i++) {
      const x = r();
      l.push(i === n - 1 && x < 0.2 ? '#' : x < 0.45 ? '+' : pick(r));
    }
    const f = l.join('/');
    return f === '' ? filter(r) : f;
  }
  function topic(r: () => number): string {
    const n = 1 + Math.floor(r() * 4);
    return Array.from({ length: n }, () => pick(r)).join('/');
  }

  it('for random +, # and $SYS filters and topics, the same listeners get each message', async () => {
    const r = rng(7);
    const ours = createMq({ concurrency: 100 });
    const theirs = mqemitter({ concurrency: 100, matchEmptyLevels: true });
    const got = { ours: [] as string[], theirs: [] as string[] };
    for (let i = 0; i < 60; i++) {
      const f = filter(r);
      ours.on(f, (m: MqMessage, done) => {
        got.ours.push(`${i}:${f}<-${m.topic}`);
        done();
      });
      theirs.on(f, (m: { topic: string }, done: () => void) => {
        got.theirs.push(`${i}:${f}<-${m.topic}`);
        done();
      });
    }
    for (let n = 0; n < 500; n++) {
      const t = topic(r);
      if (t === '') continue;
      await Promise.all([
        new Promise<void>((res) => ours.emit({ topic: t }, () => res())),
        new Promise<void>((res) => theirs.emit({ topic: t }, () => res())),
      ]);
    }
    expect(got.ours.length).toBeGreaterThan(500);
    expect(got.ours.sort()).toEqual(got.theirs.sort());
  });

  it('removeListener takes effect by its callback, and emit after close fails', async () => {
    const mq = new FleetMq();
    let n = 0;
    const fn = (_m: MqMessage, done: () => void) => {
      n++;
      done();
    };
    await new Promise<void>((res) => mq.on('a/+', fn, res));
    mq.emit({ topic: 'a/b' });
    await new Promise<void>((res) => mq.removeListener('a/+', fn, res));
    mq.emit({ topic: 'a/b' });
    expect(n).toBe(1);
    await new Promise<void>((res) => mq.close(res));
    const err = await new Promise<unknown>((res) => mq.emit({ topic: 'a/b' }, res));
    expect(err).toMatchObject({ code: 'BROKER_MQ_CLOSED' });
  });

  it('queues beyond its concurrency in order, signals overload above the high-water mark and drain below the low', async () => {
    const mq = new FleetMq({ concurrency: 2, highWaterMark: 10, lowWaterMark: 4 });
    const order: number[] = [];
    const held: (() => void)[] = [];
    mq.on('t', (m, done) => {
      order.push(m.seq as number);
      held.push(() => done());
    });
    const signals: boolean[] = [];
    mq.onPressure((o) => signals.push(o));
    let completed = 0;
    for (let i = 0; i < 20; i++) mq.emit({ topic: 't', seq: i }, () => completed++);
    expect(mq.current).toBe(2);
    expect(mq.length).toBe(18);
    expect(mq.isOverloaded()).toBe(true);
    expect(signals).toEqual([true]);
    // Release deliveries one at a time; each frees a slot for the next queued message, in order.
    for (let k = 0; k < 100 && held.length; k++) held.shift()!();
    expect(completed).toBe(20);
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(mq.isOverloaded()).toBe(false);
    expect(signals).toEqual([true, false]);
  });

  it('listeners that complete synchronously do not recurse (100,000 queued messages)', () => {
    const mq = new FleetMq({ concurrency: 1, highWaterMark: 1_000_000 });
    let n = 0;
    const slow: (() => void)[] = [];
    mq.on('t', (_m, done) => {
      if (n++ === 0) slow.push(() => done());
      else done();
    });
    for (let i = 0; i < 100_000; i++) mq.emit({ topic: 't' });
    expect(mq.length).toBe(99_999);
    slow[0]!();
    expect(n).toBe(100_000);
    expect(mq.pending).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Real aedes on a real TCP socket (loopback), FleetMq and the backpressure gate.

interface Harness {
  broker: Aedes;
  server: Server;
  port: number;
  mq: FleetMq;
  bp: Backpressure;
  published: () => number;
}

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function startBroker(
  opts: Parameters<typeof attachBackpressure>[2] & { hwm?: number } = {},
): Promise<Harness> {
  const mq = createMq({ concurrency: 100, highWaterMark: opts.hwm ?? 10_000 });
  const broker = await Aedes.createBroker({ mq });
  const bp = attachBackpressure(broker as never, mq, opts);
  let published = 0;
  broker.on('publish', (p) => {
    if (!p.topic.startsWith('$SYS')) published++;
  });
  const server = createServer({ noDelay: true }, broker.handle);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  cleanup.push(async () => {
    await new Promise<void>((r) => broker.close(() => r()));
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { broker, server, port, mq, bp, published: () => published };
}

/** A raw MQTT subscriber whose reading can be paused, counting messages per publisher and order. */
async function rawSubscriber(port: number, filter: string) {
  const sock: Socket = tcpConnect({ port, host: '127.0.0.1' });
  cleanup.push(async () => {
    sock.destroy();
  });
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const state = { received: 0, outOfOrder: 0, last: new Map<string, number>(), suback: false };
  parser.on('packet', (p) => {
    if (p.cmd === 'suback') state.suback = true;
    if (p.cmd !== 'publish') return;
    state.received++;
    const [who, seq] = String(p.payload).split(':');
    const prev = state.last.get(who!) ?? -1;
    if (Number(seq) !== prev + 1) state.outOfOrder++;
    state.last.set(who!, Number(seq));
  });
  sock.on('data', (d) => parser.parse(d));
  sock.write(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clientId: 'sub',
      clean: true,
      keepalive: 0,
    }),
  );
  sock.write(
    mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 0 }] }),
  );
  await waitFor(() => state.suback, 5000, 'SUBACK');
  return { sock, state };
}

async function mqttClient(port: number, clientId: string) {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  cleanup.push(async () => {
    await c.endAsync(true);
  });
  return c;
}

describe('aedes with FleetMq and backpressure (real TCP, MQTT.js publishers)', () => {
  it('delivers every message of every publisher, in each publisher’s order', async () => {
    const h = await startBroker();
    const sub = await rawSubscriber(h.port, 'devices/+/telemetry');
    const N = 2000;
    const pubs = await Promise.all([0, 1, 2].map((i) => mqttClient(h.port, `pub${i}`)));
    pubs.forEach((c, i) => {
      // One QoS per publisher: MQTT orders messages per publisher and QoS [MQTT-4.6.0-6].
      for (let s = 0; s < N; s++)
        c.publish(`devices/p${i}/telemetry`, `p${i}:${s}`, { qos: (i % 2) as 0 | 1 });
    });
    await waitFor(() => sub.state.received >= 3 * N, 30_000, 'all messages');
    expect(sub.state.received).toBe(3 * N);
    expect(sub.state.outOfOrder).toBe(0);
  });

  it('a slow subscriber pauses publishers, then they resume and nothing is lost', async () => {
    const h = await startBroker({ maxSubscriberBacklogBytes: 32 * 1024, hwm: 2000 });
    const events: string[] = [];
    const sub = await rawSubscriber(h.port, 'flood/#');
    const pub = await mqttClient(h.port, 'flooder');
    sub.sock.pause(); // the subscriber stops reading: the kernel buffers fill, then the broker's socket buffer
    const N = 20_000;
    const payload = 'x'.repeat(1000);
    const flood = async () => {
      for (let sent = 0; sent < N; sent++) {
        pub.publish('flood/a', `pub:${sent}:${payload}`, { qos: 0 });
        if (sent % 200 === 0) await sleep(0);
      }
    };
    void flood();
    // Until the kernel's socket buffers are full the gate opens and closes as the subscriber's socket
    // drains into them; then it stays closed and the broker stops reading the publisher.
    let last = -1;
    for (let i = 0; i < 200 && !(h.bp.paused && h.published() === last); i++) {
      last = h.published();
      await sleep(250);
    }
    events.push('paused');
    expect(h.bp.paused).toBe(true);
    expect(h.bp.stats.congestedNow).toBe(1);
    expect(h.published()).toBe(last);
    expect(h.published()).toBeLessThan(N);
    const subConn = (h.broker as unknown as { clients: Record<string, { conn: Socket }> }).clients.sub!.conn;
    // Bounded: the limit plus what was in flight (mq concurrency 100 × ~1 KB), not the flood.
    expect(subConn.writableLength).toBeLessThan(32 * 1024 + 100 * 1100);
    expect(h.mq.pending).toBeLessThanOrEqual(2000 + 100);

    sub.sock.resume();
    await waitFor(() => sub.state.received >= N, 60_000, 'every message after resuming');
    events.push('resumed');
    expect(h.bp.paused).toBe(false);
    expect(h.bp.stats.pauses).toBeGreaterThanOrEqual(1);
    expect(sub.state.received).toBe(N);
    expect(sub.state.outOfOrder).toBe(0);
    expect(events).toEqual(['paused', 'resumed']);
  });

  it('a subscriber that never drains is dropped after slowSubscriberTimeoutMs and publishers resume', async () => {
    const dropped: string[] = [];
    const h = await startBroker({
      maxSubscriberBacklogBytes: 64 * 1024,
      slowSubscriberTimeoutMs: 300,
      onEvent: (e) => {
        if (e.type === 'slow_subscriber_dropped') dropped.push(String(e.clientId));
      },
    });
    const sub = await rawSubscriber(h.port, 'flood/#');
    sub.sock.pause();
    const pub = await mqttClient(h.port, 'flooder2');
    const big = Buffer.alloc(4000, 1);
    for (let i = 0; i < 5000; i++) pub.publish('flood/b', big, { qos: 0 });
    await waitFor(() => dropped.length === 1, 20_000, 'the slow subscriber to be dropped');
    expect(dropped).toEqual(['sub']);
    await waitFor(() => !h.bp.paused, 5000, 'the gate to open');
    await waitFor(() => h.published() === 5000, 20_000, 'the publisher to be read to the end');
  });
});
