/**
 * Issuing benchmark (`npm run bench:issue`): certificates per second on one core, beside the raw ECDSA
 * P-256 signing rate of node:crypto.sign measured in the same run (the ceiling for issuing).
 *
 *   raw sign        node:crypto.sign over a certificate-sized TBS
 *   (a) issue       Issuer.issue alone: assemble + sign + encode                       target ≥ 25 % of raw
 *   csr check       checkCsr of pre-generated CSRs (parse + proof-of-possession verify)
 *   (b) csr+issue   checkCsr + Issuer.issue
 *   (b) whole path  checkCsr + Issuer.issue + registry insert (batched, and one by one)  target ≥ 3,000/s
 *                   on PGlite (always) and PostgreSQL (when DATABASE_URL is set)
 *
 * Each measure runs ROUNDS times (rounds interleave the measures, so a busy moment hits all alike) and is
 * reported as the median with min and max, plus process CPU µs per certificate. With PostgreSQL the
 * database's own CPU is in another process and not counted. Options (env): BENCH_SECONDS (per measure and
 * round, default 1.5), BENCH_ROUNDS (default 3), BENCH_BATCH (registry batch size, default 500).
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newCertificateRow } from '../../provisioning/issuance.ts';
import { type CaConfig, createCa, DEFAULT_CA_CONFIG } from '../ca.ts';
import { checkCsr } from '../csr.ts';
import { buildCsr } from '../csr-build.ts';
import { FileKeyStore } from '../keystore.ts';
import { type IssuedCertificate, type Issuer, readCertificate } from '../x509.ts';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 1.5);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const BATCH = Number(process.env['BENCH_BATCH'] ?? 500);
const DATABASE_URL = process.env['DATABASE_URL'];
const CSR_POOL = 4000;

// ------------------------------------------------------------------ fixtures (before any clock starts)

interface Fixture {
  csr: Buffer;
  spki: Buffer;
}

function makeFixtures(n: number): Fixture[] {
  const out: Fixture[] = [];
  for (let i = 0; i < n; i++) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    // The CN is rewritten per issue below; checkCsr is called without an expected id so any CN does.
    out.push({
      csr: buildCsr(privateKey, `bench-${i}`),
      spki: publicKey.export({ type: 'spki', format: 'der' }),
    });
  }
  return out;
}

// ------------------------------------------------------------------ measuring

interface Sample {
  rate: number;
  cpuUsPerOp: number;
  ops: number;
}

/** Runs `step` (which does `k` operations and returns k) until SECONDS pass; sync or async. */
async function measure(
  step: () => number | Promise<number>,
  /** Awaited inside the clock: work the steps left in flight. */
  finish?: () => Promise<unknown>,
): Promise<Sample> {
  // Warm-up: JIT and caches, not counted.
  const warmEnd = performance.now() + 150;
  while (performance.now() < warmEnd) await step();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  let ops = 0;
  while (performance.now() < end) ops += await step();
  await finish?.();
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { rate: ops / elapsed, cpuUsPerOp: (cpu.user + cpu.system) / ops, ops };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fleet-bench-'));
  const config: CaConfig = { ...DEFAULT_CA_CONFIG, organization: 'Fleet Bench' };
  const ca = await createCa(
    join(dir, 'ca'),
    new FileKeyStore(join(dir, 'keys'), 'bench-passphrase-0123456789'),
    config,
  );
  const issuer: Issuer = ca.issuers.device;
  process.stdout.write(`generating ${CSR_POOL} P-256 CSRs… `);
  const fixtures = makeFixtures(CSR_POOL);
  process.stdout.write('done\n');

  // Raw ceiling: the same key and a TBS of the size a device certificate has.
  const sample = issuer.issue({ profile: 'device', id: 'sample-device-000001', spki: fixtures[0]!.spki });
  const tbs = Buffer.from(readCertificate(sample.der).tbsCertificate.der);
  const { privateKey: rawKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

  let cursor = 0;
  let serialNo = 0;
  const runTag = Date.now().toString(36);
  const nextId = () => `bench-${runTag}-${serialNo++}`;
  const nextFixture = () => fixtures[cursor++ % fixtures.length]!;

  const issueOne = (f: Fixture, id: string): IssuedCertificate =>
    issuer.issue({ profile: 'device', id, spki: f.spki });

  type Measure = { name: string; run: () => Promise<Sample>; close?: () => Promise<void> };
  const measures: Measure[] = [
    {
      name: 'raw node:crypto.sign P-256',
      run: () =>
        measure(() => {
          for (let i = 0; i < 64; i++) sign('sha256', tbs, rawKey);
          return 64;
        }),
    },
    {
      name: '(a) Issuer.issue (sign + encode)',
      run: () =>
        measure(() => {
          for (let i = 0; i < 64; i++) issueOne(nextFixture(), nextId());
          return 64;
        }),
    },
    {
      name: 'csr check alone (checkCsr)',
      run: () =>
        measure(() => {
          for (let i = 0; i < 64; i++) checkCsr(nextFixture().csr);
          return 64;
        }),
    },
    {
      name: '(b) checkCsr + issue',
      run: () =>
        measure(() => {
          for (let i = 0; i < 64; i++) {
            const f = nextFixture();
            const c = checkCsr(f.csr);
            issuer.issue({ profile: 'device', id: nextId(), spki: c.spki });
          }
          return 64;
        }),
    },
  ];

  // Registry: the whole path. Loaded only if it exists, so this file also runs before it does.
  type Reg = {
    recordIssued(r: unknown): Promise<unknown>;
    recordIssuedBatch(r: unknown[]): Promise<unknown[]>;
    close(): Promise<void>;
  };
  let openRegistry: ((o: { databaseUrl?: string; dataDir?: string }) => Promise<Reg>) | undefined;
  try {
    const mod = (await import('../../registry/index.ts')) as unknown as { openRegistry: typeof openRegistry };
    openRegistry = mod.openRegistry;
  } catch (e) {
    console.log(`registry not available (${(e as Error).message}); (b) measures CSR check + issue only`);
  }

  const record = (c: IssuedCertificate) => ({
    subject: { kind: 'device', id: c.subjectId, product: 'bench-product', fleet: 'bench-fleet' },
    certificate: newCertificateRow(c),
    enrolledBy: null,
    actor: 'station:bench',
  });

  if (openRegistry) {
    const targets: { label: string; opts: { databaseUrl?: string; dataDir?: string } }[] = [
      { label: 'PGlite', opts: { dataDir: join(dir, 'pglite') } },
    ];
    if (DATABASE_URL) targets.push({ label: 'PostgreSQL', opts: { databaseUrl: DATABASE_URL } });
    for (const target of targets) {
      const reg = await openRegistry(target.opts);
      measures.push(
        {
          name: `(b) whole path, ${target.label}, batches of ${BATCH}`,
          run: () =>
            measure(async () => {
              const recs = [];
              for (let i = 0; i < BATCH; i++) {
                const c = checkCsr(nextFixture().csr);
                recs.push(record(issuer.issue({ profile: 'device', id: nextId(), spki: c.spki })));
              }
              await reg.recordIssuedBatch(recs);
              return BATCH;
            }),
          close: () => reg.close(),
        },
        {
          name: `(b) whole path, ${target.label}, one insert each`,
          run: () =>
            measure(async () => {
              const c = checkCsr(nextFixture().csr);
              await reg.recordIssued(record(issuer.issue({ profile: 'device', id: nextId(), spki: c.spki })));
              return 1;
            }),
        },
      );
      if (target.label === 'PostgreSQL') {
        // The database works in its own process, so the next batch can be checked and signed while the
        // previous one is written: at most one insert in flight, as a streaming batch endpoint would do.
        let inFlight: Promise<unknown> | undefined;
        measures.push({
          name: `(b) whole path, ${target.label}, batches, pipelined`,
          run: () =>
            measure(
              async () => {
                const recs = [];
                for (let i = 0; i < BATCH; i++) {
                  const c = checkCsr(nextFixture().csr);
                  recs.push(record(issuer.issue({ profile: 'device', id: nextId(), spki: c.spki })));
                }
                await inFlight;
                inFlight = reg.recordIssuedBatch(recs);
                return BATCH;
              },
              async () => {
                await inFlight;
                inFlight = undefined;
              },
            ),
        });
      }
    }
  }

  const results = new Map<string, Sample[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const m of measures) {
      const s = await m.run();
      results.set(m.name, [...(results.get(m.name) ?? []), s]);
      process.stdout.write(`round ${round + 1}/${ROUNDS} ${m.name}: ${fmt(s.rate)}/s\n`);
    }
  }
  for (const m of measures) await m.close?.();

  const cpuOf = (name: string) => median(results.get(name)!.map((s) => s.cpuUsPerOp));
  const rawMedian = median(results.get(measures[0]!.name)!.map((s) => s.rate));
  const rawCpu = cpuOf(measures[0]!.name);
  console.log(
    `\nNode ${process.version}, ${SECONDS}s per measure, median of ${ROUNDS} interleaved rounds [min–max], one thread.`,
  );
  console.log(
    'On a shared, busy machine the wall-clock rate swings; CPU µs per certificate (this process only) is the',
  );
  console.log('steadier figure, and "per CPU-second" = 1e6 / that is the rate one free core would give.\n');
  console.log(
    `${'measure'.padEnd(48)} ${'per second'.padStart(10)}  ${'[min – max]'.padEnd(18)} ${'% raw'.padStart(6)} ${'CPU µs/op'.padStart(9)} ${'per CPU-s'.padStart(9)} ${'% raw'.padStart(6)}`,
  );
  for (const m of measures) {
    const ss = results.get(m.name)!;
    const rates = ss.map((s) => s.rate);
    const med = median(rates);
    const cpu = cpuOf(m.name);
    const range = `[${fmt(Math.min(...rates))} – ${fmt(Math.max(...rates))}]`;
    console.log(
      [
        m.name.padEnd(48),
        fmt(med).padStart(10),
        ` ${range.padEnd(18)}`,
        `${((100 * med) / rawMedian).toFixed(0)}%`.padStart(6),
        cpu.toFixed(1).padStart(9),
        fmt(1e6 / cpu).padStart(9),
        `${((100 * rawCpu) / cpu).toFixed(0)}%`.padStart(6),
      ].join(' '),
    );
  }
  const issueUs = cpuOf('(a) Issuer.issue (sign + encode)');
  const csrUs = cpuOf('csr check alone (checkCsr)');
  const pct = (x: number) => `${((100 * x) / (csrUs + issueUs)).toFixed(0)}%`;
  console.log(
    `\ncost split per certificate (CPU): CSR check ${csrUs.toFixed(1)} µs (${pct(csrUs)}), issue ${issueUs.toFixed(1)} µs (${pct(issueUs)}), of which the raw signature ${rawCpu.toFixed(1)} µs`,
  );
  console.log(
    `sample certificate: ${sample.der.length} bytes, sha256 ${createHash('sha256').update(sample.der).digest('hex').slice(0, 16)}…`,
  );
  await rm(dir, { recursive: true, force: true });
}

await main();
