/**
 * `npm run bench:broker`: the Fleet broker beside a bare Node TLS server with the same certificates and
 * options (the ceiling for any Node broker), each in its own process, the load generator in a third.
 *
 * Per run and server: server CPU µs per full mTLS connect and per resumed (ticket) connect (utime+stime
 * from /proc/<pid>/stat over a closed loop), connect p50/p99 at 200 connects/s (open loop), RSS per idle
 * connection with 3,000 held, and for the broker revoke-to-disconnect p50/p99 (from the registry's
 * setStatus call to the held client seeing its connection close). Median of RUNS runs, with min–max.
 * Loopback only; every loop bounded. Env: BENCH_RUNS (3), BENCH_CONNECTS (1000), BENCH_HOLD (3000).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { certToPem } from '../../pki/x509.ts';

export interface Fixture {
  caDir: string;
  keysDir: string;
  passphrase: string;
  trustPem: string;
  rootPem: string;
  serverCert: string;
  serverKey: string;
  devices: { id: string; cert: string; key: string }[];
  records: {
    id: string;
    serial: string;
    der: string;
    fingerprint: string;
    spkiSha256: string;
    notBefore: string;
    notAfter: string;
  }[];
}

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 1000);
const HOLD = Number(process.env.BENCH_HOLD ?? 3000);
const REVOKES = 100;
const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
}
const TICK_US = 1e6 / 100; // CLK_TCK is 100 on Linux here
function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function makeFixture(dir: string): Promise<void> {
  const passphrase = 'bench passphrase 0123456789';
  const keysDir = join(dir, 'keys');
  const caDir = join(dir, 'ca');
  const ca = await createCa(caDir, new FileKeyStore(keysDir, passphrase), DEFAULT_CA_CONFIG);
  const kp = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const s = kp();
  const server = ca.issue({
    profile: 'broker',
    id: 'bench',
    spki: s.publicKey.export({ type: 'spki', format: 'der' }),
    dns: ['localhost'],
    ips: ['127.0.0.1'],
  });
  writeFileSync(join(dir, 'server.crt'), [server.der, ...ca.chainFor('broker')].map(certToPem).join(''));
  writeFileSync(join(dir, 'server.key'), s.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  const devices: Fixture['devices'] = [];
  const records: Fixture['records'] = [];
  const n = HOLD + 200;
  for (let i = 0; i < n; i++) {
    const k = kp();
    const id = `bench-${i}`;
    const c = ca.issue({ profile: 'device', id, spki: k.publicKey.export({ type: 'spki', format: 'der' }) });
    devices.push({
      id,
      cert: certToPem(c.der),
      key: k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    });
    records.push({
      id,
      serial: c.serial,
      der: c.der.toString('base64'),
      fingerprint: c.fingerprint,
      spkiSha256: c.spkiSha256,
      notBefore: c.notBefore.toISOString(),
      notAfter: c.notAfter.toISOString(),
    });
  }
  const fx: Fixture = {
    caDir,
    keysDir,
    passphrase,
    trustPem: ca.trustPem,
    rootPem: ca.rootPem,
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    devices,
    records,
  };
  writeFileSync(join(dir, 'fixture.json'), JSON.stringify(fx));
}

function spawn(file: string, args: string[]): ChildProcess {
  return fork(here(file), args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
}

function firstLine(p: ChildProcess): Promise<{ port: number }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    p.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)));
    });
    p.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

function ask<T>(p: ChildProcess, msg: object): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { cmd?: string; out?: T }) => {
      if (m.cmd === (msg as { cmd: string }).cmd) {
        p.off('message', on);
        resolve(m.out as T);
      }
    };
    p.on('message', on);
    p.send(msg);
  });
}

interface RunResult {
  fullUs: number;
  resumedUs: number;
  p50: number;
  p99: number;
  rssPerConnKiB: number;
  revokeP50?: number;
  revokeP99?: number;
  failed: number;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};

async function runOnce(dir: string, mode: 'bare' | 'fleet'): Promise<RunResult> {
  const server = spawn('./broker-server.ts', ['--mode', mode, '--dir', dir]);
  try {
    const { port } = await firstLine(server);
    const load = spawn('./broker-load.ts', ['--dir', dir, '--port', String(port)]);
    await new Promise<void>((r) => load.once('message', () => r()));
    try {
      const pid = server.pid!;
      type Loop = { n: number; reused: number; failed: number };
      // Warm-up: JIT, first-time registry lookups, TLS sessions for the resumed phase.
      await ask<Loop>(load, { cmd: 'closedLoop', n: Math.max(400, 2 * 4 * 50), concurrency: 4 });
      let t = cpuTicks(pid);
      const full = await ask<Loop>(load, { cmd: 'closedLoop', n: CONNECTS, concurrency: 4 });
      const fullUs = ((cpuTicks(pid) - t) * TICK_US) / CONNECTS;
      t = cpuTicks(pid);
      const res = await ask<Loop>(load, { cmd: 'closedLoop', n: CONNECTS, concurrency: 4, resume: true });
      const resumedUs = ((cpuTicks(pid) - t) * TICK_US) / CONNECTS;
      if (res.reused < CONNECTS * 0.9) console.error(`${mode}: only ${res.reused}/${CONNECTS} resumed`);
      await sleep(500);
      const paced = await ask<{ p50: number; p99: number; failed: number }>(load, {
        cmd: 'paced',
        n: CONNECTS,
        rate: 200,
      });
      await sleep(1000);
      const rss0 = rssKiB(pid);
      const h = await ask<{ held: number; failed: number }>(load, { cmd: 'hold', n: HOLD });
      await sleep(2000);
      const rssPerConnKiB = (rssKiB(pid) - rss0) / Math.max(1, h.held);
      const out: RunResult = {
        fullUs,
        resumedUs,
        p50: paced.p50,
        p99: paced.p99,
        rssPerConnKiB,
        failed: full.failed + res.failed + paced.failed + h.failed,
      };
      if (mode === 'fleet') {
        const lat: number[] = [];
        for (let i = 0; i < REVOKES; i++) {
          const id = `bench-${i * Math.floor(HOLD / REVOKES)}`;
          const closed = ask<{ closedAt: number }>(load, { cmd: 'watchClose', id });
          await sleep(5);
          const rev = new Promise<{ t0: number }>((resolve) => {
            const on = (m: { revoked?: string; t0: number }) => {
              if (m.revoked === id) {
                server.off('message', on);
                resolve(m);
              }
            };
            server.on('message', on);
          });
          server.send({ revoke: id });
          const [{ closedAt }, { t0 }] = await Promise.all([closed, rev]);
          if (Number.isFinite(closedAt)) lat.push(closedAt - t0);
          else out.failed++;
          await sleep(10);
        }
        out.revokeP50 = pct(lat, 50);
        out.revokeP99 = pct(lat, 99);
      }
      await ask(load, { cmd: 'release' });
      return out;
    } finally {
      load.kill('SIGTERM');
    }
  } finally {
    // An orderly exit, so a CPU profile (BENCH_PROFILE) is written.
    if (server.connected) server.send('exit');
    await sleep(1000);
    server.kill('SIGTERM');
  }
}

function summary(xs: number[], digits = 0): string {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return 'n/a';
  const med = s[Math.floor(s.length / 2)]!;
  return `${med.toFixed(digits)} [${s[0]!.toFixed(digits)}–${s[s.length - 1]!.toFixed(digits)}]`;
}

const dir = mkdtempSync(join(tmpdir(), 'fleet-bench-broker-'));
try {
  console.log(`making fixture: CA, server certificate, ${HOLD + 200} device certificates…`);
  await makeFixture(dir);
  const results: Record<'bare' | 'fleet', RunResult[]> = { bare: [], fleet: [] };
  for (let r = 0; r < RUNS; r++) {
    for (const mode of ['bare', 'fleet'] as const) {
      const res = await runOnce(dir, mode);
      results[mode].push(res);
      console.log(
        `run ${r + 1} ${mode}: ${JSON.stringify(res, (_k, v) => (typeof v === 'number' ? +v.toFixed(2) : v))}`,
      );
    }
  }
  const col = (m: 'bare' | 'fleet', f: (x: RunResult) => number | undefined, d = 0) =>
    summary(
      results[m].map((x) => f(x) ?? Number.NaN),
      d,
    );
  const ratio = (f: (x: RunResult) => number) => {
    const rs = results.fleet.map((x, i) => f(x) / f(results.bare[i]!));
    return summary(rs, 2);
  };
  console.log(`\nmedian [min–max] of ${RUNS} runs; ${CONNECTS} connects per phase, ${HOLD} held`);
  console.log('| measure | bare Node TLS | Fleet broker | ratio |');
  console.log('|---|---|---|---|');
  console.log(
    `| server CPU µs per full mTLS connect | ${col('bare', (x) => x.fullUs)} | ${col('fleet', (x) => x.fullUs)} | ${ratio((x) => x.fullUs)} |`,
  );
  console.log(
    `| server CPU µs per resumed connect | ${col('bare', (x) => x.resumedUs)} | ${col('fleet', (x) => x.resumedUs)} | ${ratio((x) => x.resumedUs)} |`,
  );
  console.log(
    `| connect p50 ms at 200/s | ${col('bare', (x) => x.p50, 2)} | ${col('fleet', (x) => x.p50, 2)} | |`,
  );
  console.log(
    `| connect p99 ms at 200/s | ${col('bare', (x) => x.p99, 2)} | ${col('fleet', (x) => x.p99, 2)} | |`,
  );
  console.log(
    `| RSS KiB per idle connection | ${col('bare', (x) => x.rssPerConnKiB, 1)} | ${col('fleet', (x) => x.rssPerConnKiB, 1)} | |`,
  );
  console.log(`| revoke-to-disconnect p50 ms | — | ${col('fleet', (x) => x.revokeP50, 2)} | |`);
  console.log(`| revoke-to-disconnect p99 ms | — | ${col('fleet', (x) => x.revokeP99, 2)} | |`);
  console.log(`| failed operations | ${col('bare', (x) => x.failed)} | ${col('fleet', (x) => x.failed)} | |`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
