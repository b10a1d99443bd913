/**
 * `npm run bench`: the standard suite. The broker benchmark (broker/bench/broker.bench.ts, when present)
 * in its own process, then `fleet sim` against a `fleet broker` child process on a throwaway data dir:
 * a 2,000-device connect ramp, a reconnect storm with full handshakes, one with TLS session resumption,
 * and 60 s of telemetry. The broker's CPU time (utime + stime from /proc/<pid>/stat) is read around each
 * phase, so the report gives µs of server CPU per connect and per message beside the rates
 * (benchmarking.md). Reports go to bench-results/ (git-ignored). Loopback only; every loop is bounded.
 *
 * Env: BENCH_DEVICES (2000), BENCH_TELEMETRY_S (60), BENCH_SKIP_BROKER=1 (skip the broker benchmark).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { caConfigFrom, keyStoreFor, loadConfig, paths } from '../../config/index.ts';
import { openCa } from '../../pki/ca.ts';
import { openRegistry } from '../../registry/index.ts';
import { initDataDir } from '../../runtime/index.ts';
import { ensureIdentities } from '../identities.ts';
import { LocalEnroller } from '../local.ts';
import { textSummary, writeReports } from '../report.ts';
import { runScenario } from '../runner.ts';
import { parseScenario } from '../scenario.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DEVICES = Number(process.env.BENCH_DEVICES ?? 2000);
const TELEMETRY_S = Number(process.env.BENCH_TELEMETRY_S ?? 60);

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 (utime, stime), counted from after the command name.
  return Number(f[11]) + Number(f[12]);
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

async function waitForPort(port: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the broker did not listen on ${port} within ${ms} ms`);
}

function runChild(cmd: string, args: string[], timeoutMs: number): Promise<number | null> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { cwd: ROOT, stdio: 'inherit' });
    const t = setTimeout(() => c.kill('SIGTERM'), timeoutMs);
    c.on('exit', (code) => {
      clearTimeout(t);
      res(code);
    });
  });
}

async function main(): Promise<void> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = join(ROOT, 'bench-results', `bench-${stamp}`);

  const brokerBench = join(ROOT, 'broker', 'bench', 'broker.bench.ts');
  if (existsSync(brokerBench) && process.env.BENCH_SKIP_BROKER !== '1') {
    console.log('== broker benchmark (broker/bench/broker.bench.ts)');
    await runChild(process.execPath, ['--import', 'tsx', brokerBench], 20 * 60_000);
  }

  console.log(`\n== fleet sim: ${DEVICES} devices against fleet broker`);
  const data = await mkdtemp(join(tmpdir(), 'fleet-bench-'));
  const port = await freePort();
  const env = {
    ...process.env,
    FLEET_MQTT_PORT: String(port),
    FLEET_METRICS_PORT: String(await freePort()),
    FLEET_LOG_LEVEL: 'warn',
    // Every simulated device dials from 127.0.0.1: the per-source admission bounds would measure themselves.
    FLEET_BROKER_MAX_HANDSHAKES_PER_SOURCE: '0',
    FLEET_BROKER_CONNECT_RATE_PER_SOURCE: '0',
  };
  let broker: ChildProcess | undefined;
  try {
    const config = loadConfig(env, { data });
    await initDataDir(config);
    const t0 = Date.now();
    {
      const { keys } = await keyStoreFor(config);
      const ca = (await openCa(paths(data).ca, keys, caConfigFrom(config))).ca;
      const registry = await openRegistry({ dataDir: data });
      try {
        await ensureIdentities({
          dir: join(data, 'sim', 'identities'),
          devices: DEVICES,
          idPrefix: 'bench-',
          product: 'bench',
          keyType: 'P-256',
          enroller: new LocalEnroller(ca, registry),
        });
      } finally {
        await registry.close();
      }
    }
    console.log(`enrolled ${DEVICES} devices in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const identities = await ensureIdentities({
      dir: join(data, 'sim', 'identities'),
      devices: DEVICES,
      idPrefix: 'bench-',
      product: 'bench',
      keyType: 'P-256',
      enroller: {
        rootPem: async () => readFileSync(join(data, 'ca', 'root.crt.pem'), 'utf8'),
        enrollDevices: async () => {
          throw new Error('all identities are cached');
        },
        enrollService: async () => {
          throw new Error('cached');
        },
      },
    });

    broker = spawn(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'cli', 'main.ts'), 'broker', '--data', data],
      {
        cwd: ROOT,
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    await waitForPort(port, 60_000);
    const pid = broker.pid!;
    const hz = 100;

    const scenario = parseScenario({
      devices: DEVICES,
      idPrefix: 'bench-',
      product: 'bench',
      phases: [
        // Closed loop (64 in flight): the fleet comes up as fast as the broker takes it, without an open-loop
        // ramp outrunning a busy 2-core machine into timeouts. Storms below are the open-loop test.
        { type: 'connect', name: 'connect', concurrency: 64 },
        {
          type: 'storm',
          name: 'storm-full',
          resume: false,
          jitter: { distribution: 'uniform', maxMs: 5000 },
          settleS: 1,
        },
        {
          type: 'storm',
          name: 'storm-resumed',
          resume: true,
          jitter: { distribution: 'uniform', maxMs: 5000 },
          settleS: 1,
        },
        {
          type: 'telemetry',
          name: 'telemetry',
          durationS: TELEMETRY_S,
          ratePerDevice: 1,
          qos: 0,
          payloadBytes: 64,
        },
      ],
    });
    const cpu: { start: number; end: number; rssStart: number; rssEnd: number }[] = [];
    const report = await runScenario({
      scenario,
      identities,
      target: { host: '127.0.0.1', port, servername: 'localhost', loopback: true },
      // The broker's own admission refusals and handshakes per phase, beside the simulator's causes.
      brokerMetricsUrl: `http://127.0.0.1:${env.FLEET_METRICS_PORT}/metrics`,
      onProgress: (line) => process.stderr.write(`${line}\n`),
      onPhase: (i, ev) => {
        if (ev === 'start') cpu[i] = { start: cpuTicks(pid), end: 0, rssStart: rssKb(pid), rssEnd: 0 };
        else {
          cpu[i]!.end = cpuTicks(pid);
          cpu[i]!.rssEnd = rssKb(pid);
        }
      },
    });
    const brokerCpu = report.phases.map((p, i) => {
      const c = cpu[i]!;
      const us = ((c.end - c.start) / hz) * 1e6;
      return {
        phase: p.name,
        brokerCpuMs: Math.round(us / 1000),
        ...(p.counts.connected ? { brokerCpuUsPerConnect: Math.round(us / p.counts.connected) } : {}),
        ...(p.counts.published
          ? { brokerCpuUsPerMessage: Math.round((us / p.counts.published) * 10) / 10 }
          : {}),
        brokerRssMb: Math.round(c.rssEnd / 1024),
      };
    });
    report.notes = { brokerPid: pid, brokerCpu, clockTicksPerS: hz };
    const files = await writeReports(outDir, report);
    console.log(textSummary(report));
    console.log('broker CPU per phase:');
    for (const b of brokerCpu) console.log(`  ${JSON.stringify(b)}`);
    console.log(`\nreports: ${files.text}\n         ${files.json}\n         ${files.html}`);
  } finally {
    broker?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await rm(data, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
