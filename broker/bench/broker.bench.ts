/**
 * `npm run bench:broker`: every figure of the broker issue in one run, the Fleet broker beside a bare Node
 * TLS server with the same certificates and options (the ceiling for any Node broker) and, when
 * /usr/sbin/mosquitto is installed, mosquitto with the same certificates (the stretch goal's reference).
 * Each server runs in its own process, the load generators in others; loopback only; every loop bounded.
 *
 * Per run and server: server CPU µs per full mTLS connect (identities the broker has seen: the steady
 * state after a first connect) and per first-sight connect (identities it has not, so the registry is
 * asked), per resumed (ticket) connect, all from utime+stime in /proc/<pid>/stat over a closed loop;
 * connect p50/p99 at 200 connects/s (open loop) with the server's event-loop delay meanwhile; RSS per
 * idle connection with HOLD held;
 * revoke-to-disconnect p50/p99 (registry setStatus → the held client sees its connection close);
 * QoS 0 and QoS 1 msg/s, 10 publishers → 1 subscriber over mTLS, every message counted, with the
 * server's CPU per message and RSS growth (peak during the burst − before it), run after the connect
 * phases and before the held connections.
 * Median [min–max] of RUNS runs, with the load average, since the machine is shared: when it is busy, the
 * ratios to the baseline measured in the same run are the figures to trust.
 *
 * Env: BENCH_RUNS (3), BENCH_CONNECTS (1000), BENCH_COLD (200), BENCH_HOLD (3000), BENCH_MESSAGES (50000
 * per publisher), BENCH_MODES (bare,fleet,mosquitto), BENCH_DIR (reuse a fixture directory),
 * BENCH_PROFILE (a directory: CPU profiles of the fleet server's full-connect and burst phases).
 */
import { type ChildProcess, fork, spawn as spawnProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
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
  /** The subscriber of the throughput phase: may subscribe to every device's telemetry. */
  service: { id: string; cert: string; key: string; record: Fixture['records'][number] };
  records: {
    id: string;
    serial: string;
    issuerCa: string;
    der: string;
    fingerprint: string;
    spkiSha256: string;
    notBefore: string;
    notAfter: string;
  }[];
}

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CONNECTS = Number(process.env.BENCH_CONNECTS ?? 1000);
const COLD = Number(process.env.BENCH_COLD ?? 200);
const HOLD = Number(process.env.BENCH_HOLD ?? 3000);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 50_000);
const PUBLISHERS = 10;
const REVOKES = 100;
const MOSQUITTO = '/usr/sbin/mosquitto';
const MODES = (process.env.BENCH_MODES ?? 'bare,fleet,mosquitto')
  .split(',')
  .filter((m) => m !== 'mosquitto' || existsSync(MOSQUITTO)) as Mode[];
const PROFILE = process.env.BENCH_PROFILE;
type Mode = 'bare' | 'fleet' | 'mosquitto';
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
  writeFileSync(join(dir, 'trust.pem'), ca.trustPem);
  const one = (profile: 'device' | 'service', id: string) => {
    const k = kp();
    const c = ca.issue({ profile, id, spki: k.publicKey.export({ type: 'spki', format: 'der' }) });
    return {
      creds: {
        id,
        cert: certToPem(c.der),
        key: k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      },
      record: {
        id,
        serial: c.serial,
        issuerCa: c.issuerCa,
        der: c.der.toString('base64'),
        fingerprint: c.fingerprint,
        spkiSha256: c.spkiSha256,
        notBefore: c.notBefore.toISOString(),
        notAfter: c.notAfter.toISOString(),
      },
    };
  };
  const devices: Fixture['devices'] = [];
  const records: Fixture['records'] = [];
  // The closed loops and the held connections use the first ones, the throughput publishers the last 10.
  const n = Math.max(HOLD, CONNECTS + COLD) + 2 * PUBLISHERS;
  for (let i = 0; i < n; i++) {
    const d = one('device', `bench-${i}`);
    devices.push(d.creds);
    records.push(d.record);
  }
  const svc = one('service', 'bench-sink');
  const fx: Fixture = {
    caDir,
    keysDir,
    passphrase,
    trustPem: ca.trustPem,
    rootPem: ca.rootPem,
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    devices,
    service: { ...svc.creds, record: svc.record },
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

function ask<T>(p: ChildProcess, msg: object, key = 'cmd'): Promise<T> {
  return new Promise((resolve) => {
    const want = (msg as Record<string, unknown>)[key];
    const on = (m: Record<string, unknown>) => {
      if (m[key] === want || (key === 'profile' && m.profiling) || (key === 'profile' && m.profiled)) {
        p.off('message', on);
        resolve(m.out as T);
      }
    };
    p.on('message', on);
    p.send(msg);
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** mosquitto with the same certificates: mTLS required, the certificate CN as the user name. */
async function startMosquitto(dir: string): Promise<{ proc: ChildProcess; port: number }> {
  const port = await freePort();
  const conf = join(dir, `mosquitto-${port}.conf`);
  writeFileSync(
    conf,
    [
      'per_listener_settings false',
      'persistence false',
      'log_dest none',
      'allow_anonymous false',
      `listener ${port} 127.0.0.1`,
      `cafile ${join(dir, 'trust.pem')}`,
      `certfile ${join(dir, 'server.crt')}`,
      `keyfile ${join(dir, 'server.key')}`,
      'require_certificate true',
      'use_identity_as_username true',
      'max_queued_messages 0',
      '',
    ].join('\n'),
  );
  const proc = spawnProcess(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(true));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
    });
    if (up) return { proc, port };
    await sleep(50);
  }
  proc.kill('SIGTERM');
  throw new Error('mosquitto did not start');
}

interface Burst {
  msgPerSec: number;
  lost: number;
  outOfOrder: number;
  cpuUsPerMsg: number;
  rssGrowthMiB: number;
}

interface RunResult {
  fullUs: number;
  coldUs: number;
  resumedUs: number;
  p50: number;
  p99: number;
  /** Server event-loop delay p99 (ms) during the paced phase (Node servers). */
  eldP99?: number | undefined;
  rssPerConnKiB: number;
  revokeP50?: number;
  revokeP99?: number;
  qos0?: Burst | undefined;
  qos1?: Burst | undefined;
  failed: number;
  load: number;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};

/** 10 publishers → 1 subscriber over mTLS (mq-load.ts in its own process), sampling the server. */
async function burst(dir: string, pid: number, port: number, qos: 0 | 1): Promise<Burst> {
  const load = fork(
    here('./mq-load.ts'),
    ['--port', String(port), '--qos', String(qos), '--messages', String(MESSAGES), '--tls', dir],
    { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  try {
    const waitFor = <T>(type: string, ms: number) =>
      new Promise<T>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`burst: no ${type}`)), ms);
        load.on('message', (m: { type?: string }) => {
          if (m.type === type) {
            clearTimeout(t);
            resolve(m as T);
          }
        });
        load.once('exit', (c) => reject(new Error(`burst load exited ${c}`)));
      });
    await waitFor('ready', 60_000);
    await sleep(300);
    const rss0 = rssKiB(pid);
    let peak = rss0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssKiB(pid));
    }, 20);
    const t0 = cpuTicks(pid);
    load.send('go');
    const r = await waitFor<{ received: number; lost: number; outOfOrder: number; msgPerSec: number }>(
      'result',
      120_000,
    );
    clearInterval(sampler);
    peak = Math.max(peak, rssKiB(pid));
    return {
      msgPerSec: r.msgPerSec,
      lost: r.lost,
      outOfOrder: r.outOfOrder,
      cpuUsPerMsg: ((cpuTicks(pid) - t0) * TICK_US) / Math.max(1, r.received),
      rssGrowthMiB: (peak - rss0) / 1024,
    };
  } finally {
    load.kill('SIGTERM');
  }
}

async function runOnce(dir: string, mode: Mode): Promise<RunResult> {
  let server: ChildProcess;
  let port: number;
  if (mode === 'mosquitto') ({ proc: server, port } = await startMosquitto(dir));
  else {
    server = spawn('./broker-server.ts', ['--mode', mode, '--dir', dir]);
    ({ port } = await firstLine(server));
  }
  const profile = async (what: 'start' | 'stop', name = '') => {
    if (PROFILE && mode === 'fleet') await ask(server, { profile: what, name }, 'profile');
  };
  try {
    const load = spawn('./broker-load.ts', ['--dir', dir, '--port', String(port)]);
    await new Promise<void>((r) => load.once('message', () => r()));
    try {
      const pid = server.pid!;
      type Loop = { n: number; reused: number; failed: number };
      const loop = (n: number, o: { resume?: boolean; offset?: number } = {}) =>
        ask<Loop>(load, { cmd: 'closedLoop', n, concurrency: 4, ...o });
      // Warm-up over the very identities measured next: JIT, TLS sessions for the resumed phase, and the
      // broker's first sight of each identity (measured on its own below).
      const warm = await loop(CONNECTS);
      await profile('start');
      let t = cpuTicks(pid);
      const full = await loop(CONNECTS);
      const fullUs = ((cpuTicks(pid) - t) * TICK_US) / CONNECTS;
      await profile('stop', 'full-connect');
      t = cpuTicks(pid);
      const cold = await loop(COLD, { offset: CONNECTS });
      const coldUs = ((cpuTicks(pid) - t) * TICK_US) / COLD;
      t = cpuTicks(pid);
      const res = await loop(CONNECTS, { resume: true });
      const resumedUs = ((cpuTicks(pid) - t) * TICK_US) / CONNECTS;
      if (res.reused < CONNECTS * 0.9) console.error(`${mode}: only ${res.reused}/${CONNECTS} resumed`);
      await sleep(500);
      // The server's event-loop delay while paced: what the server adds to a connect's latency.
      if (mode !== 'mosquitto') await ask(server, { eld: 'start' }, 'eld');
      const paced = await ask<{ p50: number; p99: number; failed: number }>(load, {
        cmd: 'paced',
        n: CONNECTS,
        rate: 200,
      });
      const eld =
        mode !== 'mosquitto' ? await ask<{ p99: number }>(server, { eld: 'stop' }, 'eld') : undefined;
      // The bursts on a broker holding no connections (RSS growth from its state after the connects).
      let qos0: Burst | undefined;
      let qos1: Burst | undefined;
      if (mode !== 'bare') {
        await sleep(1000);
        await profile('start');
        qos0 = await burst(dir, pid, port, 0);
        await profile('stop', 'qos0');
        await sleep(1000);
        await profile('start');
        qos1 = await burst(dir, pid, port, 1);
        await profile('stop', 'qos1');
      }
      await sleep(1000);
      const rss0 = rssKiB(pid);
      const h = await ask<{ held: number; failed: number }>(load, { cmd: 'hold', n: HOLD });
      await sleep(2000);
      const rssPerConnKiB = (rssKiB(pid) - rss0) / Math.max(1, h.held);
      const out: RunResult = {
        fullUs,
        coldUs,
        resumedUs,
        p50: paced.p50,
        p99: paced.p99,
        eldP99: eld?.p99,
        qos0,
        qos1,
        rssPerConnKiB,
        failed: warm.failed + full.failed + cold.failed + res.failed + paced.failed + (HOLD - h.held),
        load: loadavg()[0]!,
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
    if (mode === 'mosquitto') server.kill('SIGTERM');
    else {
      if (server.connected) server.send('exit');
      await sleep(500);
      server.kill('SIGTERM');
    }
  }
}

function summary(xs: number[], digits = 0): string {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return '—';
  const med = s[Math.floor(s.length / 2)]!;
  const f = (x: number) =>
    x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  return s.length === 1 ? f(med) : `${f(med)} [${f(s[0]!)}–${f(s[s.length - 1]!)}]`;
}

const keep = Boolean(process.env.BENCH_DIR);
const dir = process.env.BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'fleet-bench-broker-'));
try {
  if (PROFILE) mkdirSync(PROFILE, { recursive: true });
  if (!existsSync(join(dir, 'fixture.json'))) {
    mkdirSync(dir, { recursive: true });
    console.log('making fixture: CA, server certificate, device certificates…');
    await makeFixture(dir);
  }
  const results = Object.fromEntries(MODES.map((m) => [m, [] as RunResult[]])) as Record<Mode, RunResult[]>;
  const load0 = loadavg();
  for (let r = 0; r < RUNS; r++) {
    for (const mode of MODES) {
      const res = await runOnce(dir, mode);
      results[mode].push(res);
      console.log(
        `run ${r + 1} ${mode}: ${JSON.stringify(res, (_k, v) => (typeof v === 'number' ? +v.toFixed(2) : v))}`,
      );
    }
  }
  const load1 = loadavg();
  type Get = (x: RunResult) => number | undefined;
  const col = (m: Mode, f: Get, d = 0) =>
    results[m]
      ? summary(
          results[m].map((x) => f(x) ?? Number.NaN),
          d,
        )
      : '—';
  /** Per-run ratio fleet / other (same run), median [min–max]. */
  const ratio = (other: Mode, f: Get) =>
    results[other] && results.fleet
      ? summary(
          results.fleet.map((x, i) => (f(x) ?? Number.NaN) / (f(results[other][i]!) ?? Number.NaN)),
          2,
        )
      : '—';
  const rows: [string, Get, number, string, boolean][] = [
    [
      'server CPU µs per full mTLS connect (seen identity)',
      (x) => x.fullUs,
      0,
      '≤ 1.15× bare; < mosquitto',
      true,
    ],
    ['server CPU µs per full mTLS connect (first sight)', (x) => x.coldUs, 0, '', true],
    ['server CPU µs per resumed connect', (x) => x.resumedUs, 0, '', true],
    ['connect p50 ms at 200/s', (x) => x.p50, 2, '', false],
    ['connect p99 ms at 200/s', (x) => x.p99, 2, '≤ 5', false],
    ['server event-loop delay p99 ms, same phase', (x) => x.eldP99, 2, '', false],
    ['RSS KiB per idle connection', (x) => x.rssPerConnKiB, 1, '', false],
    ['revoke-to-disconnect p50 ms', (x) => x.revokeP50, 2, '', false],
    ['revoke-to-disconnect p99 ms', (x) => x.revokeP99, 2, '≤ 100', false],
    ['QoS 0 msg/s (10 → 1, mTLS)', (x) => x.qos0?.msgPerSec, 0, '≥ 150,000', false],
    ['QoS 0 server CPU µs per msg', (x) => x.qos0?.cpuUsPerMsg, 2, '', true],
    ['QoS 0 RSS growth MiB', (x) => x.qos0?.rssGrowthMiB, 1, '≤ 100', false],
    ['QoS 0 lost / out of order', (x) => x.qos0 && x.qos0.lost + x.qos0.outOfOrder, 0, '0', false],
    ['QoS 1 msg/s (10 → 1, mTLS)', (x) => x.qos1?.msgPerSec, 0, '≥ 50,000', false],
    ['QoS 1 server CPU µs per msg', (x) => x.qos1?.cpuUsPerMsg, 2, '', true],
    ['QoS 1 RSS growth MiB', (x) => x.qos1?.rssGrowthMiB, 1, '≤ 100', false],
    ['QoS 1 lost / out of order', (x) => x.qos1 && x.qos1.lost + x.qos1.outOfOrder, 0, '0', false],
    ['failed operations', (x) => x.failed, 0, '0', false],
  ];
  console.log(
    `\nmedian [min–max] of ${RUNS} runs; ${CONNECTS} connects per phase (${COLD} first-sight), ${HOLD} held, ` +
      `${PUBLISHERS}×${MESSAGES} messages per burst; load average ${load0.map((x) => x.toFixed(1)).join(' ')} ` +
      `at start, ${load1.map((x) => x.toFixed(1)).join(' ')} at end (1-minute load during runs: ` +
      `${summary(
        MODES.flatMap((m) => results[m].map((x) => x.load)),
        1,
      )}) on ${cpus().length} cores`,
  );
  console.log(
    '| measure | bare Node TLS | Fleet broker | mosquitto | Fleet ÷ bare | Fleet ÷ mosquitto | target |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const [name, f, d, target, ratios] of rows) {
    console.log(
      `| ${name} | ${col('bare', f, d)} | ${col('fleet', f, d)} | ${col('mosquitto', f, d)} | ` +
        `${ratios ? ratio('bare', f) : ''} | ${ratios ? ratio('mosquitto', f) : ''} | ${target} |`,
    );
  }
} finally {
  if (!keep) rmSync(dir, { recursive: true, force: true });
}
