/**
 * Enrollment benchmark (`npm run bench:enroll`): device enrollments per second end to end — several
 * stations over mutual TLS, the provisioning service in its own process, the registry on PostgreSQL —
 * single (POST /v1/enrollments, many in flight) and batch (NDJSON), beside the raw issuing rate measured in
 * the same run (Issuer.issue, and node:crypto.sign as its ceiling). Also single-enrollment latency p50/p99,
 * alone (one in flight) and under load, and the service's CPU µs per enrollment (utime+stime from /proc).
 *
 * PostgreSQL: DATABASE_URL, or a throwaway one started with infra/pg.sh (stopped at the end). Each run uses
 * a fresh database, dropped at the end. Options (env): BENCH_SECONDS per measure and round (default 4),
 * BENCH_ROUNDS (3), BENCH_STATIONS (4), BENCH_INFLIGHT per station (32), BENCH_BATCH lines per batch (1000).
 * Figures are medians over the rounds with [min–max]. Target: ≥ 1,000 enrollments/s.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { Agent, request } from 'undici';
import { createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import * as der from '../../pki/der.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { OID } from '../../pki/oids.ts';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 4);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const STATIONS = Number(process.env['BENCH_STATIONS'] ?? 4);
const INFLIGHT = Number(process.env['BENCH_INFLIGHT'] ?? 32);
const BATCH = Number(process.env['BENCH_BATCH'] ?? 1000);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLK_TCK = 100;

// ------------------------------------------------------------------ helpers

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const spread = (xs: number[]) => `${fmt(median(xs))} [${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}]`;

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14, 15)
}

/** A CSR without a CN (the id comes from the request), so one key serves many device ids. */
function csrPem(key: KeyObject): string {
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const info = der.seq(der.uint(0), der.seq(), spki, der.ctx(0, Buffer.alloc(0)));
  return der.toPem(
    der.seq(info, der.seq(der.oid(OID.ecdsaWithSHA256)), der.bitString(sign('sha256', info, key))),
    'CERTIFICATE REQUEST',
  );
}

async function postgresUrl(): Promise<{ url: string; stop?: () => void }> {
  if (process.env['DATABASE_URL']) return { url: process.env['DATABASE_URL'] };
  process.stderr.write('bench: DATABASE_URL is not set; starting a throwaway PostgreSQL (infra/pg.sh)\n');
  const out = execFileSync('bash', [join(ROOT, 'infra/pg.sh'), 'start'], { encoding: 'utf8' });
  const url = /DATABASE_URL=(\S+)/.exec(out)![1]!;
  const pgDir = /FLEET_PG_DIR=(\S+)/.exec(out)![1]!;
  return {
    url,
    stop: () => execFileSync('bash', [join(ROOT, 'infra/pg.sh'), 'stop', pgDir], { stdio: 'ignore' }),
  };
}

// ------------------------------------------------------------------ raw issuing rate (same run)

async function rawRates(): Promise<{ sign: number[]; issue: number[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'fleet-bench-raw-'));
  try {
    const ca = await createCa(
      join(dir, 'ca'),
      new FileKeyStore(join(dir, 'keys'), 'raw-bench-passphrase-012345'),
      DEFAULT_CA_CONFIG,
    );
    const issuer = ca.issuers.device;
    const spkis = Array.from({ length: 256 }, () =>
      generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({
        type: 'spki',
        format: 'der',
      }),
    );
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const tbs = randomBytes(600);
    const out = { sign: [] as number[], issue: [] as number[] };
    const rate = (fn: (i: number) => void) => {
      const end = performance.now() + Math.min(SECONDS, 2) * 1000;
      let n = 0;
      const t0 = performance.now();
      while (performance.now() < end) for (let k = 0; k < 50; k++) fn(n++);
      return (n / (performance.now() - t0)) * 1000;
    };
    for (let r = 0; r < ROUNDS; r++) {
      out.sign.push(rate(() => sign('sha256', tbs, privateKey)));
      out.issue.push(
        rate((i) => issuer.issue({ profile: 'device', id: `raw-${i}`, spki: spkis[i % spkis.length]! })),
      );
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ load

interface Phase {
  rate: number;
  latencies: number[];
  cpuUsPerOp: number;
  errors: number;
}

let nextId = 0;
const idOf = () => `b${process.pid.toString(36)}-${(nextId++).toString(36)}`;

async function single(
  agents: Agent[],
  url: string,
  csrs: string[],
  inflight: number,
  seconds: number,
  serverPid: number,
): Promise<Phase> {
  const latencies: number[] = [];
  let errors = 0;
  let done = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const cpu0 = cpuTicks(serverPid);
  const worker = async (agent: Agent) => {
    while (performance.now() < end) {
      const csr = csrs[nextId % csrs.length]!;
      const body = `{"deviceId":"${idOf()}","product":"bench","csr":${JSON.stringify(csr)}}`;
      const s = performance.now();
      const res = await request(`${url}/v1/enrollments`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body,
      });
      await res.body.dump();
      if (res.statusCode === 201) {
        latencies.push(performance.now() - s);
        done++;
      } else errors++;
    }
  };
  await Promise.all(agents.flatMap((a) => Array.from({ length: inflight }, () => worker(a))));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = (cpuTicks(serverPid) - cpu0) / CLK_TCK;
  return {
    rate: done / elapsed,
    latencies: latencies.sort((a, b) => a - b),
    cpuUsPerOp: (cpu / Math.max(done, 1)) * 1e6,
    errors,
  };
}

async function batch(
  agents: Agent[],
  url: string,
  csrs: string[],
  seconds: number,
  serverPid: number,
): Promise<Phase> {
  let errors = 0;
  let done = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const cpu0 = cpuTicks(serverPid);
  const latencies: number[] = [];
  const worker = async (agent: Agent) => {
    while (performance.now() < end) {
      const lines: string[] = [];
      for (let i = 0; i < BATCH; i++)
        lines.push(
          `{"deviceId":"${idOf()}","product":"bench","csr":${JSON.stringify(csrs[nextId % csrs.length])}}`,
        );
      const s = performance.now();
      const res = await request(`${url}/v1/enrollments/batch`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/x-ndjson' },
        body: `${lines.join('\n')}\n`,
      });
      const text = await res.body.text();
      latencies.push(performance.now() - s);
      for (const l of text.split('\n')) {
        if (!l) continue;
        if (l.includes('"ok":true')) done++;
        else errors++;
      }
    }
  };
  // Two batches in flight per station: one being answered while the next is read.
  await Promise.all(agents.flatMap((a) => [worker(a), worker(a)]));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = (cpuTicks(serverPid) - cpu0) / CLK_TCK;
  return {
    rate: done / elapsed,
    latencies: latencies.sort((a, b) => a - b),
    cpuUsPerOp: (cpu / Math.max(done, 1)) * 1e6,
    errors,
  };
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const pg = await postgresUrl();
  const dbName = `fleet_bench_${process.pid}`;
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${dbName}`);
  const dbUrl = new URL(pg.url);
  dbUrl.pathname = `/${dbName}`;
  const dir = await mkdtemp(join(tmpdir(), 'fleet-bench-enroll-'));
  const profile = process.env['BENCH_PROFILE']
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`]
    : [];
  const server = spawn(
    process.execPath,
    [...profile, '--import', 'tsx', join(ROOT, 'provisioning/bench/enroll-server.ts')],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        DATABASE_URL: dbUrl.toString(),
        BENCH_DIR: dir,
        BENCH_STATIONS: String(STATIONS),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const apiPort = await new Promise<number>((resolve, reject) => {
      let buf = '';
      server.stdout!.on('data', (d) => {
        buf += d;
        const m = /\{"apiPort":(\d+)\}/.exec(buf);
        if (m) resolve(Number(m[1]));
      });
      server.once('exit', (c) => reject(new Error(`server exited with ${c}`)));
    });
    const url = `https://127.0.0.1:${apiPort}`;
    const root = await readFile(join(dir, 'root.pem'), 'utf8');
    const agents: Agent[] = [];
    for (let i = 0; i < STATIONS; i++) {
      agents.push(
        new Agent({
          connections: INFLIGHT,
          pipelining: 1,
          connect: {
            ca: root,
            cert: await readFile(join(dir, `station-${i}.crt.pem`), 'utf8'),
            key: await readFile(join(dir, `station-${i}.key.pem`), 'utf8'),
          },
        }),
      );
    }
    process.stderr.write('bench: making CSRs and measuring the raw issuing rate…\n');
    const csrs = Array.from({ length: 2000 }, () =>
      csrPem(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey),
    );
    const raw = await rawRates();
    const pid = server.pid!;

    // Warm-up: connections, JIT, database caches.
    await single(agents, url, csrs, 4, 1, pid);
    if (process.env['BENCH_ONLY'] !== 'single') await batch(agents, url, csrs, 1, pid);

    const results = { alone: [] as Phase[], loaded: [] as Phase[], batch: [] as Phase[] };
    for (let r = 0; r < ROUNDS; r++) {
      results.alone.push(await single(agents.slice(0, 1), url, csrs, 1, Math.min(SECONDS, 2), pid));
      results.loaded.push(await single(agents, url, csrs, INFLIGHT, SECONDS, pid));
      if (process.env['BENCH_ONLY'] !== 'single')
        results.batch.push(await batch(agents, url, csrs, SECONDS, pid));
      process.stderr.write(`bench: round ${r + 1}/${ROUNDS} done\n`);
    }
    const rates = (ps: Phase[]) => ps.map((p) => p.rate);
    const lat = (ps: Phase[], p: number) => ps.map((x) => pct(x.latencies, p));
    const errors = [...results.loaded, ...results.batch, ...results.alone].reduce((a, p) => a + p.errors, 0);
    if (results.batch.length === 0) results.batch.push({ rate: 0, latencies: [0], cpuUsPerOp: 0, errors: 0 });
    const lines = [
      `Enrollment benchmark: ${STATIONS} stations × ${INFLIGHT} in flight over mTLS (keep-alive), service in its own process, PostgreSQL; ${ROUNDS} rounds × ${SECONDS} s; median [min–max]`,
      '',
      `  raw node:crypto.sign P-256           ${spread(raw.sign)} /s`,
      `  raw Issuer.issue (device cert)       ${spread(raw.issue)} /s`,
      `  single enrollments, loaded           ${spread(rates(results.loaded))} /s   (${((median(rates(results.loaded)) / median(raw.issue)) * 100).toFixed(0)} % of Issuer.issue)  server CPU ${fmt(median(results.loaded.map((p) => p.cpuUsPerOp)))} µs/enrollment`,
      `  batch enrollments (${BATCH}/request)     ${spread(rates(results.batch))} /s   (${((median(rates(results.batch)) / median(raw.issue)) * 100).toFixed(0)} % of Issuer.issue)  server CPU ${fmt(median(results.batch.map((p) => p.cpuUsPerOp)))} µs/enrollment`,
      `  single latency, one in flight        p50 ${median(lat(results.alone, 50)).toFixed(2)} ms  p99 ${median(lat(results.alone, 99)).toFixed(2)} ms  (${spread(rates(results.alone))} /s)`,
      `  single latency, loaded               p50 ${median(lat(results.loaded, 50)).toFixed(2)} ms  p99 ${median(lat(results.loaded, 99)).toFixed(2)} ms`,
      `  batch request latency                p50 ${median(lat(results.batch, 50)).toFixed(0)} ms  p99 ${median(lat(results.batch, 99)).toFixed(0)} ms`,
      `  errors                               ${errors}`,
      `  target ≥ 1,000 enrollments/s: single ${median(rates(results.loaded)) >= 1000 ? 'met' : 'NOT met'}, batch ${median(rates(results.batch)) >= 1000 ? 'met' : 'NOT met'}`,
      '  (server CPU excludes PostgreSQL, which runs in its own processes on the same 2 cores)',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    for (const a of agents) await a.close();
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode === null ? server.once('exit', r) : r(null)));
    await admin.unsafe(`drop database if exists ${dbName} with (force)`).catch(() => {});
    await admin.end();
    await rm(dir, { recursive: true, force: true });
    pg.stop?.();
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
