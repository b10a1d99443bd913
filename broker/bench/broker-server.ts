/**
 * Benchmark server process (started by broker.bench.ts). `--mode fleet` runs buildBroker() with the
 * real registry (PGlite in memory, devices recorded from the fixture); `--mode bare` is the baseline: a
 * bare Node TLS server with the same certificates and options that answers any CONNECT with CONNACK
 * `20 02 00 00`. Prints one JSON line `{ "port": … }` when listening. IPC: `{ revoke: id }` revokes a
 * device and replies with the absolute time the revocation was committed.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createServer } from 'node:tls';
import pino from 'pino';
import { DEFAULT_CA_CONFIG, loadCa } from '../../pki/ca.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { openRegistry } from '../../registry/index.ts';
import { brokerConfig, buildBroker } from '../index.ts';
import { fromRegistry } from '../registry.ts';
import type { Fixture } from './broker.bench.ts';

const mode = process.argv[process.argv.indexOf('--mode') + 1] ?? 'fleet';
const dir = process.argv[process.argv.indexOf('--dir') + 1]!;
const fx = JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8')) as Fixture;
const now = () => performance.timeOrigin + performance.now();

// BENCH_PROFILE=<dir>: CPU profiles of the phases the bench brackets with { profile: 'start' } and
// { profile: 'stop', name }, taken with the inspector (reliable in a forked child, unlike --cpu-prof).
const profileDir = process.env.BENCH_PROFILE;
const inspector = profileDir ? new Session() : undefined;
if (inspector) {
  inspector.connect();
  inspector.post('Profiler.enable');
  inspector.post('Profiler.setSamplingInterval', { interval: 200 });
}
process.on('message', (m: { profile?: 'start' | 'stop'; name?: string }) => {
  if (!inspector || !m.profile) return;
  if (m.profile === 'start') inspector.post('Profiler.start', () => process.send?.({ profiling: true }));
  else
    inspector.post('Profiler.stop', (err, res) => {
      if (!err)
        writeFileSync(join(profileDir!, `${m.name}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      process.send?.({ profiled: m.name });
    });
});

if (mode === 'bare') {
  const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
  const server = createServer(
    {
      cert: readFileSync(fx.serverCert),
      key: readFileSync(fx.serverKey),
      ca: fx.trustPem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      handshakeTimeout: 10_000,
      noDelay: true,
    },
    (sock) => {
      sock.once('data', () => sock.write(CONNACK));
      sock.on('error', () => {});
      sock.on('end', () => sock.end());
    },
  );
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    process.stdout.write(`${JSON.stringify({ port: typeof a === 'object' && a ? a.port : 0 })}\n`);
  });
} else {
  const ca = await loadCa(fx.caDir, new FileKeyStore(fx.keysDir, fx.passphrase), DEFAULT_CA_CONFIG);
  const registry = await openRegistry();
  const certificate = (r: Fixture['records'][number]) => ({
    serial: r.serial,
    issuerCa: r.issuerCa as 'device',
    der: Buffer.from(r.der, 'base64'),
    fingerprintSha256: r.fingerprint,
    spkiSha256: r.spkiSha256,
    notBefore: new Date(r.notBefore),
    notAfter: new Date(r.notAfter),
  });
  // The first-sight identities (broker.bench.ts: BENCH_CONNECTS … + BENCH_COLD) are enrolled after the
  // broker started and warmed its subject cache, as devices enrolled while it runs: their first connect
  // asks the registry. Every other device was enrolled before the start.
  const coldFrom = Number(process.env.BENCH_CONNECTS ?? 1000);
  const coldTo = coldFrom + Number(process.env.BENCH_COLD ?? 200);
  const isCold = (r: Fixture['records'][number]) => {
    const n = Number(r.id.slice('bench-'.length));
    return n >= coldFrom && n < coldTo;
  };
  const record = async (rs: Fixture['records']) => {
    for (let i = 0; i < rs.length; i += 500) {
      await registry.recordIssuedBatch(
        rs.slice(i, i + 500).map((r) => ({
          subject: { kind: 'device' as const, id: r.id, product: 'bench', fleet: 'bench' },
          certificate: certificate(r),
          actor: 'operator:bench',
        })),
      );
    }
  };
  await record(fx.records.filter((r) => !isCold(r)));
  await registry.recordIssued({
    subject: { kind: 'service', id: fx.service.id, role: null },
    certificate: certificate(fx.service.record),
    actor: 'operator:bench',
  });
  const broker = buildBroker(
    brokerConfig({
      host: '127.0.0.1',
      port: 0,
      nodeId: 'bench',
      tls: { certFile: fx.serverCert, keyFile: fx.serverKey },
      // Every simulated device dials from 127.0.0.1: no per-source bound either.
      limits: {
        connectRatePerS: 0,
        maxConnections: 19_000,
        maxHandshakesPerSource: 0,
        connectRatePerSourcePerS: 0,
      },
      ...(process.env.BENCH_MQ_HWM ? { mq: { highWaterMark: Number(process.env.BENCH_MQ_HWM) } } : {}),
      // Diagnostic only: presence writes postponed (they stay queued in memory), to see their share.
      ...(process.env.BENCH_PRESENCE_FLUSH_MS
        ? {
            presence: {
              flushMs: Number(process.env.BENCH_PRESENCE_FLUSH_MS),
              lastSeenMs: 3_600_000,
              maxBatch: 1_000_000,
            },
          }
        : {}),
      metrics: { port: null },
    }),
    { ca, registry: fromRegistry(registry), logger: pino({ level: 'error' }, pino.destination(2)) },
  );
  const { port } = await broker.start();
  await broker.subjectsWarmed;
  await record(fx.records.filter(isCold));
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  process.on('message', (m: { revoke?: string }) => {
    if (!m.revoke) return;
    const t0 = now();
    registry
      .setStatus({ kind: 'device', id: m.revoke, status: 'revoked', actor: 'operator:bench' })
      .then(() => process.send?.({ revoked: m.revoke, t0, committed: now() }));
  });
}
// { eld: 'start' | 'stop' }: the event-loop delay histogram over a phase, p50/p99/max in ms.
let eld: ReturnType<typeof monitorEventLoopDelay> | undefined;
process.on('message', (m: { eld?: 'start' | 'stop' }) => {
  if (m.eld === 'start') {
    eld = monitorEventLoopDelay({ resolution: 1 });
    eld.enable();
    process.send?.({ eld: 'start' });
  } else if (m.eld === 'stop' && eld) {
    eld.disable();
    const ms = (ns: number) => ns / 1e6;
    process.send?.({
      eld: 'stop',
      out: { p50: ms(eld.percentile(50)), p99: ms(eld.percentile(99)), max: ms(eld.max) },
    });
  }
});

// BENCH_MEMLOG=1: the process's memory every 250 ms on stderr (where a burst's RSS goes).
if (process.env.BENCH_MEMLOG) {
  setInterval(() => {
    const m = process.memoryUsage();
    const mb = (x: number) => (x / 2 ** 20).toFixed(0);
    process.stderr.write(
      `mem rss ${mb(m.rss)} heap ${mb(m.heapUsed)}/${mb(m.heapTotal)} external ${mb(m.external)} buffers ${mb(m.arrayBuffers)}\n`,
    );
  }, 250).unref();
}
process.on('SIGTERM', () => process.exit(0));
process.on('message', (m) => {
  if (m === 'exit') process.exit(0);
});
