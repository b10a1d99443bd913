/**
 * Benchmark load generator (its own process, started by broker.bench.ts). Raw TLS and prebuilt MQTT
 * CONNECT packets, TLS contexts built before the clock starts, bounded loops, loopback only. Commands
 * arrive over IPC; each replies with its measurements.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import mqttPacket from 'mqtt-packet';
import type { Fixture } from './broker.bench.ts';

const dir = process.argv[process.argv.indexOf('--dir') + 1]!;
const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const fx = JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8')) as Fixture;
const now = () => performance.timeOrigin + performance.now();
const DISCONNECT = Buffer.from([0xe0, 0x00]);

const contexts: SecureContext[] = fx.devices.map((d) =>
  createSecureContext({ cert: d.cert, key: d.key, ca: fx.rootPem }),
);
const connects = fx.devices.map((d) =>
  mqttPacket.generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId: d.id,
    keepalive: 600,
  }),
);
const sessions: (Buffer | undefined)[] = [];

interface One {
  ms: number;
  code: number;
  reused: boolean;
  sock: TLSSocket;
}

function once(i: number, resume: boolean, hold = false): Promise<One> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const sock = connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      secureContext: contexts[i]!,
      ...(resume && sessions[i] ? { session: sessions[i] } : {}),
    });
    sock.setNoDelay(true);
    sock.on('session', (s) => {
      sessions[i] = s;
    });
    sock.once('secureConnect', () => sock.write(connects[i]!));
    sock.once('data', (d: Buffer) => {
      const ms = performance.now() - t0;
      const code = d[0] === 0x20 ? d[3]! : -1;
      const reused = sock.isSessionReused();
      if (!hold) sock.end(DISCONNECT);
      resolve({ ms, code, reused, sock });
    });
    sock.on('error', (e) => reject(e));
  });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}

/**
 * `n` connects, `concurrency` at a time, cycling through the identities from `offset` on (the last
 * 10 identities are left to the throughput publishers).
 */
async function closedLoop(n: number, concurrency: number, resume: boolean, offset = 0) {
  let next = 0;
  let reused = 0;
  let failed = 0;
  // Worker w uses only identities ≡ w (mod concurrency): one identity never has two connects at once.
  const span = Math.floor((fx.devices.length - 10 - offset) / concurrency) * concurrency;
  const worker = async (w: number) => {
    for (let r = 0; ; r++) {
      if (next++ >= n) return;
      const i = offset + ((w + concurrency * r) % span);
      try {
        const res = await once(i, resume);
        if (res.code !== 0) failed++;
        if (res.reused) reused++;
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return { n, reused, failed };
}

/** Open loop: one connect every 1000/rate ms regardless of completions; latency per connect. */
async function paced(n: number, rate: number) {
  const lat: number[] = [];
  let failed = 0;
  const gap = 1000 / rate;
  const start = performance.now();
  const all: Promise<void>[] = [];
  for (let k = 0; k < n; k++) {
    const wait = start + k * gap - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    all.push(
      once(k % fx.devices.length, false).then(
        (r) => {
          if (r.code === 0) lat.push(r.ms);
          else failed++;
        },
        () => {
          failed++;
        },
      ),
    );
  }
  await Promise.all(all);
  return { n, failed, p50: pct(lat, 50), p99: pct(lat, 99) };
}

const held = new Map<string, TLSSocket>();
async function hold(n: number) {
  let failed = 0;
  for (let base = 0; base < n; base += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - base) }, async (_, j) => {
        const i = base + j;
        try {
          const r = await once(i, false, true);
          if (r.code === 0) held.set(fx.devices[i]!.id, r.sock);
          else failed++;
        } catch {
          failed++;
        }
      }),
    );
  }
  return { held: held.size, failed };
}

function release() {
  for (const s of held.values()) s.destroy();
  held.clear();
  return { ok: true };
}

/** Resolves with the absolute time the held connection of `id` closed. */
function watchClose(id: string) {
  const s = held.get(id);
  if (!s) return { closedAt: Number.NaN };
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ closedAt: Number.NaN }), 5000);
    s.once('close', () => {
      clearTimeout(timer);
      held.delete(id);
      resolve({ closedAt: now() });
    });
  });
}

process.on(
  'message',
  async (m: {
    cmd: string;
    n?: number;
    rate?: number;
    concurrency?: number;
    id?: string;
    resume?: boolean;
    offset?: number;
  }) => {
    let out: unknown;
    if (m.cmd === 'closedLoop')
      out = await closedLoop(m.n!, m.concurrency ?? 4, m.resume ?? false, m.offset ?? 0);
    else if (m.cmd === 'paced') out = await paced(m.n!, m.rate!);
    else if (m.cmd === 'hold') out = await hold(m.n!);
    else if (m.cmd === 'release') out = release();
    else if (m.cmd === 'watchClose') out = await watchClose(m.id!);
    process.send?.({ cmd: m.cmd, out });
  },
);
process.send?.({ ready: true });
