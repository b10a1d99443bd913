/**
 * Telemetry burst benchmark: 10 publishers → 1 subscriber through plain aedes (plain TCP, loopback),
 * QoS 0 and QoS 1, with aedes' default mqemitter vs FleetMq (+ backpressure). Not a test; it prints figures.
 *
 *   npx tsx broker/bench/mq-throughput.ts [--runs 3] [--messages 50000] [--modes default,fleet] [--qos 0,1]
 *
 * The broker runs in its own child process, so its CPU (utime+stime from /proc/<pid>/stat) and RSS (VmRSS
 * from /proc/<pid>/status, sampled every 20 ms) are its own; the load generator is another process.
 * RSS growth = peak during the burst − RSS with all clients connected before it. A fresh broker per run.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));
function opt(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
}
const runs = Number(opt('runs', '3'));
const messages = Number(opt('messages', '50000'));
const payload = Number(opt('payload', '32'));
const deadline = Number(opt('deadline', '60000'));
const modes = opt('modes', 'default,fleet').split(',');
const qoss = opt('qos', '0,1').split(',').map(Number);

const TICK = 100; // clock ticks per second (getconf CLK_TCK on Linux)
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK; // utime, stime (fields 14 and 15)
}
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Extra node flags for the broker process only, e.g. --node-flags "--max-semi-space-size=32". */
const brokerFlags = opt('node-flags', '').split(' ').filter(Boolean);
function spawnTs(file: string, args: string[], flags: string[] = []): ChildProcess {
  return fork(here(file), args, {
    execArgv: [...flags, '--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
}

function waitMessage<T>(cp: ChildProcess, pred: (m: unknown) => boolean, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('child timed out')), ms);
    const on = (m: unknown) => {
      if (pred(m)) {
        clearTimeout(t);
        cp.off('message', on);
        resolve(m as T);
      }
    };
    cp.on('message', on);
    cp.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
}

interface LoadResult {
  received: number;
  total: number;
  lost: number;
  outOfOrder: number;
  msgPerSec: number;
  seconds: number;
  timedOut: boolean;
}

async function runOnce(mode: string, qos: number) {
  const broker = spawnTs('./mq-broker.ts', ['--mq', mode], brokerFlags);
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    broker.stdout!.on('data', (d: Buffer) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n')) resolve(JSON.parse(line!).port);
    });
    broker.once('exit', (c) => reject(new Error(`broker exited ${c}`)));
  });
  const pid = broker.pid!;
  const load = spawnTs('./mq-load.ts', [
    '--port',
    String(port),
    '--qos',
    String(qos),
    '--messages',
    String(messages),
    '--payload',
    String(payload),
    '--deadline',
    String(deadline),
  ]);
  try {
    await waitMessage(load, (m) => (m as { type?: string }).type === 'ready', 30_000);
    await new Promise((r) => setTimeout(r, 300)); // settle
    const rss0 = rssMiB(pid);
    const cpu0 = cpuSeconds(pid);
    let peak = rss0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssMiB(pid));
    }, 20);
    load.send('go');
    const r = await waitMessage<LoadResult>(
      load,
      (m) => (m as { type?: string }).type === 'result',
      deadline + 30_000,
    );
    clearInterval(sampler);
    peak = Math.max(peak, rssMiB(pid));
    const cpu = cpuSeconds(pid) - cpu0;
    return { ...r, rss0, peak, growth: peak - rss0, cpuUsPerMsg: (cpu * 1e6) / Math.max(1, r.received) };
  } finally {
    load.kill('SIGTERM');
    broker.kill('SIGTERM');
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number, d = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

console.log(`10 publishers → 1 subscriber, ${fmt(messages)} msgs each, ${payload} B payload, ${runs} run(s)`);
for (const qos of qoss) {
  for (const mode of modes) {
    const rs = [];
    for (let i = 0; i < runs; i++) rs.push(await runOnce(mode, qos));
    const rate = rs.map((r) => r.msgPerSec);
    const growth = rs.map((r) => r.growth);
    console.log(
      `QoS ${qos} ${mode.padEnd(11)} msg/s median ${fmt(median(rate))} (min ${fmt(Math.min(...rate))}, max ${fmt(Math.max(...rate))})` +
        ` | RSS growth median ${fmt(median(growth), 1)} MiB (max ${fmt(Math.max(...growth), 1)}, base ${fmt(rs[0]!.rss0, 1)})` +
        ` | broker CPU ${fmt(median(rs.map((r) => r.cpuUsPerMsg)), 2)} µs/msg` +
        ` | lost ${rs.map((r) => r.lost).join('/')} out-of-order ${rs.map((r) => r.outOfOrder).join('/')}` +
        (rs.some((r) => r.timedOut) ? ' (TIMED OUT)' : ''),
    );
  }
}
process.exit(0);
