/**
 * Runs a scenario: spreads the devices over load workers (child processes, so each stays under the
 * per-process open-file limit and every core is used), runs the phases in order, keeps a service
 * subscriber (the observer) to time publish-to-delivery, revokes devices through an Operator, and merges
 * everything into a report. An abort (Ctrl-C) stops the phase in progress and still returns the report.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { Packet } from 'mqtt-packet';
import { type Connection, connectMqtt, now, pubackPacket, subscribePacket, usSince } from './client.ts';
import { SimError } from './errors.ts';
import { hostDelta, sampleHost } from './host.ts';
import type { IdentitySet } from './identities.ts';
import type { Operator } from './operator.ts';
import type { FromWorker, PhaseShare, StormTargets, ToWorker, WorkerInit } from './protocol.ts';
import type { PhaseReport, RevokeReport, RunReport } from './report.ts';
import { LIMITS, MAX_BACKOFF_MS, type Phase, type Scenario } from './scenario.ts';
import { newHistogram, PhaseAccumulator, summarize } from './stats.ts';
import { LoadWorker } from './worker.ts';

/** Sockets one worker process may hold: under the 20,000 open-file limit with room for the rest. */
export const MAX_SOCKETS_PER_WORKER = 18_000;

export interface RunTarget {
  readonly host: string;
  readonly port: number;
  readonly servername: string;
  /** The target resolves to loopback only: connections are spread over 127.0.0.0/8 source addresses. */
  readonly loopback: boolean;
}

export interface RunOptions {
  readonly scenario: Scenario;
  readonly identities: IdentitySet;
  readonly target: RunTarget;
  /** Needed for revoke phases. */
  readonly operator?: Operator | undefined;
  /** Run the load in this process (small runs and tests); default: forked worker processes. */
  readonly inProcess?: boolean;
  readonly signal?: AbortSignal | undefined;
  /** Called about once a second with a one-line status. */
  readonly onProgress?: ((line: string) => void) | undefined;
  /**
   * The broker's Prometheus endpoint (loopback), read at each phase's start and end: its admission
   * refusals and handshakes beside what the simulator saw.
   */
  readonly brokerMetricsUrl?: string | undefined;
  /** Called as each phase starts and ends (a benchmark reads the server's CPU time here). */
  readonly onPhase?: ((index: number, event: 'start' | 'end') => void) | undefined;
}

interface Shard {
  send(m: ToWorker): void;
  close(): void;
}

function inProcessShard(onMessage: (m: FromWorker) => void): Shard {
  let worker: LoadWorker | undefined;
  // Delivered asynchronously, as over IPC, so the two paths behave alike.
  const deliver = (m: FromWorker) => setImmediate(() => onMessage(m));
  return {
    send(m) {
      if (m.type === 'init') worker = new LoadWorker(m.init, deliver);
      else worker?.handle(m);
    },
    close() {},
  };
}

declare global {
  interface ImportMeta {
    /** True in the compiled CLI (cli/build.mjs defines it), undefined when run from source under tsx. */
    readonly fleetCompiled?: boolean;
  }
}

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// The compiled CLI forks the compiled worker (plain node, fast start); from source, the worker under tsx.
const WORKER = import.meta.fleetCompiled
  ? { file: join(REPO_ROOT, 'dist', 'worker-main.js'), execArgv: [] }
  : { file: join(REPO_ROOT, 'device-sim', 'worker-main.ts'), execArgv: ['--import', 'tsx'] };

function processShard(onMessage: (m: FromWorker) => void, onExit: (code: number | null) => void): Shard {
  const child: ChildProcess = fork(WORKER.file, [], {
    cwd: REPO_ROOT,
    execArgv: WORKER.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  child.on('message', (m) => onMessage(m as FromWorker));
  child.on('exit', (code) => onExit(code));
  return {
    send(m) {
      if (child.connected) child.send(m);
    },
    close() {
      if (child.exitCode === null) child.kill('SIGTERM');
    },
  };
}

/** Source addresses 127.0.0.1, 127.0.0.2, ... (254 per /24), for `n` addresses. */
/** Devices per loopback source address when `--source-addresses auto`. */
export const DEVICES_PER_SOURCE = 16;

export function loopbackSources(n: number): string[] {
  return Array.from({ length: n }, (_, k) => `127.0.${Math.floor(k / 254)}.${(k % 254) + 1}`);
}

export function planWorkers(scenario: Scenario, devices: number, inProcess: boolean): number {
  if (inProcess) {
    if (devices > MAX_SOCKETS_PER_WORKER)
      throw new SimError(
        'SIM_SCENARIO_INVALID',
        `an in-process run holds at most ${MAX_SOCKETS_PER_WORKER} devices`,
      );
    return 1;
  }
  const needed = Math.ceil(devices / MAX_SOCKETS_PER_WORKER);
  const w = scenario.workers === 'auto' ? Math.max(availableParallelism(), needed) : scenario.workers;
  if (w < needed) {
    throw new SimError(
      'SIM_SCENARIO_INVALID',
      `${devices} devices need at least ${needed} workers to stay under the open-file limit (asked ${w})`,
    );
  }
  return Math.max(1, Math.min(w, devices));
}

function shareOf(total: number, w: number, workers: number): number {
  return Math.floor(total / workers) + (w < total % workers ? 1 : 0);
}

/** Upper bound on a phase's length: every phase ends by itself, this is the backstop. */
function phaseBudgetMs(p: Phase, s: Scenario, devicesPerWorker: number): number {
  const t = s.connectTimeoutMs;
  switch (p.type) {
    case 'connect': {
      const n = p.count ?? devicesPerWorker;
      const ramp = p.rate ? (n / p.rate) * 1000 : Math.ceil(n / (p.concurrency ?? 100)) * t;
      return ramp + t + p.holdS * 1000 + 5000;
    }
    case 'hold':
      return p.durationS * 1000 + 5000;
    case 'telemetry':
      return p.durationS * 1000 + 10_000;
    case 'revoke':
      return p.durationS * 1000 + t + 10_000;
    case 'storm': {
      const j = p.jitter.distribution === 'none' ? 0 : p.jitter.maxMs;
      const wave = p.concurrency ? Math.ceil(devicesPerWorker / p.concurrency) * t : t;
      let retries = 0;
      for (let k = 1; k <= p.retries; k++)
        retries += Math.min(MAX_BACKOFF_MS, p.backoffMs * 2 ** (k - 1)) + wave;
      return 200 + j + wave + retries + p.settleS * 1000 + 5000;
    }
  }
}

export async function runScenario(o: RunOptions): Promise<RunReport> {
  const { scenario, identities, target } = o;
  const devices = identities.devices.slice(0, scenario.devices);
  const workers = planWorkers(scenario, devices.length, o.inProcess ?? false);
  const nSources =
    !target.loopback || /:/.test(target.host)
      ? 0
      : scenario.sourceAddresses === 'auto'
        ? // Real devices dial from many addresses, and the broker bounds handshakes and connects per source
          // address (32 in flight, 50/s by default): 16 devices an address keep a whole fleet reconnecting
          // at once under both, as a fleet behind a NAT would not be.
          Math.min(LIMITS.maxSourceAddresses, Math.max(1, Math.ceil(devices.length / DEVICES_PER_SOURCE)))
        : scenario.sourceAddresses;
  const sourceAddresses = loopbackSources(nSources);
  const startedAt = new Date();
  const runStart = Date.now();
  const runDeadline = runStart + scenario.maxRunS * 1000;
  const phases: PhaseReport[] = [];
  let interrupted = o.signal?.aborted ?? false;
  let fatal: string | undefined;

  // ---- workers
  const waiting = new Map<string, { need: number; got: FromWorker[]; resolve: () => void }>();
  let acc: PhaseAccumulator | undefined;
  let currentPhase = -1;
  const revokeState = {
    closed: new Map<string, { atNs: bigint; cause: string }>(),
    probes: new Map<string, { outcome: string; resumeOffered: boolean }>(),
  };
  const lastOpen = new Map<number, number>();
  const onMessage = (m: FromWorker) => {
    switch (m.type) {
      case 'stats':
        lastOpen.set(m.worker, m.snapshot.open);
        if (m.phase === currentPhase && acc) acc.addSnapshot(m.snapshot, now(), m.worker);
        break;
      case 'victim-closed':
        revokeState.closed.set(m.id, { atNs: BigInt(m.atNs), cause: m.cause });
        break;
      case 'victim-probe':
        revokeState.probes.set(m.id, { outcome: m.outcome, resumeOffered: m.resumeOffered });
        break;
      case 'fatal':
        fatal = m.message;
        break;
      default:
        break;
    }
    const w = waiting.get(m.type);
    if (w) {
      w.got.push(m);
      if (w.got.length >= w.need) {
        waiting.delete(m.type);
        w.resolve();
      }
    }
  };
  const expect = (type: FromWorker['type'], timeoutMs: number): Promise<FromWorker[]> =>
    new Promise((resolve) => {
      const got: FromWorker[] = [];
      const t = setTimeout(() => {
        waiting.delete(type);
        resolve(got);
      }, timeoutMs);
      waiting.set(type, {
        need: workers,
        got,
        resolve: () => {
          clearTimeout(t);
          resolve(got);
        },
      });
    });
  let deadWorkers = 0;
  const shards: Shard[] = [];
  const ready = expect('ready', 120_000);
  for (let w = 0; w < workers; w++) {
    const shard = o.inProcess
      ? inProcessShard(onMessage)
      : processShard(onMessage, (code) => {
          if (code !== 0 && code !== null) deadWorkers++;
        });
    shards.push(shard);
    const init: WorkerInit = {
      worker: w,
      // By position, not by index: indices have gaps where revoked devices were left out.
      devices: devices.filter((_, i) => i % workers === w),
      rootPem: identities.rootPem,
      target: { host: target.host, port: target.port, servername: target.servername },
      sourceAddresses,
      connectTimeoutMs: scenario.connectTimeoutMs,
      keepaliveS: scenario.keepaliveS,
    };
    shard.send({ type: 'init', init });
  }
  const broadcast = (m: ToWorker) => {
    for (const s of shards) s.send(m);
  };
  const readyGot = await ready;
  if (readyGot.length < workers) {
    for (const s of shards) s.close();
    throw new SimError(
      'SIM_WORKER_FAILED',
      `only ${readyGot.length} of ${workers} workers started${fatal ? `: ${fatal.split('\n')[0]}` : ''}`,
    );
  }

  // ---- observer
  let observer: Connection | undefined;
  let observerNote: string | undefined;
  if (scenario.observer && identities.observer) {
    const ob = identities.observer;
    const r = await connectMqtt(
      {
        host: target.host,
        port: target.port,
        servername: target.servername,
        secureContext: createSecureContext({
          key: readFileSync(ob.keyFile),
          cert: readFileSync(ob.certFile),
          ca: identities.rootPem,
        }),
        clientId: ob.id,
        keepaliveS: scenario.keepaliveS,
        timeoutMs: scenario.connectTimeoutMs,
      },
      {
        onPacket(c, p: Packet) {
          if (p.cmd !== 'publish') return;
          if (p.qos && p.messageId !== undefined) c.write(pubackPacket(p.messageId));
          const payload = p.payload as Buffer;
          const at = now();
          if (acc && payload.length >= 8) acc.addDelivery(usSince(payload.readBigUInt64BE(0), at), at);
          else if (acc) acc.counts.delivered++;
        },
      },
    );
    if (r.ok) {
      observer = r.conn;
      observer.write(subscribePacket(scenario.observerFilter, 1));
    } else observerNote = `the observer could not connect (${r.cause}); delivery latency not measured`;
  } else if (scenario.observer) observerNote = 'no observer identity; delivery latency not measured';

  // ---- progress
  let phaseName = '';
  let phaseStart = Date.now();
  const progress = o.onProgress
    ? setInterval(() => {
        if (!acc) return;
        const c = acc.counts;
        const el = (Date.now() - phaseStart) / 1000;
        const open = [...lastOpen.values()].reduce((a, n) => a + n, 0);
        const errs = Object.values(acc.errors).reduce((a, n) => a + n, 0);
        const cp = acc.hists.connect.totalCount ? summarize(acc.hists.connect) : undefined;
        o.onProgress!(
          `[${currentPhase + 1}/${scenario.phases.length} ${phaseName}] ${el.toFixed(0)}s open ${open}` +
            ` conn ${c.connected}/${c.attempted}${cp ? ` p50 ${cp.p50}ms p99 ${cp.p99}ms` : ''} err ${errs}` +
            (c.published
              ? ` pub ${c.published} (${Math.round(c.published / Math.max(el, 0.001))}/s) deliv ${c.delivered}`
              : ''),
        );
      }, 1000)
    : undefined;

  const onAbort = () => {
    interrupted = true;
    broadcast({ type: 'stop' });
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    for (let i = 0; i < scenario.phases.length && !interrupted; i++) {
      const phase = scenario.phases[i]!;
      const perWorker = Math.ceil(devices.length / workers);
      const budget = Math.min(
        phaseBudgetMs(phase, scenario, perWorker),
        Math.max(0, runDeadline - Date.now()),
      );
      if (budget <= 0) {
        interrupted = true;
        break;
      }
      const startNs = now();
      acc = new PhaseAccumulator(startNs);
      currentPhase = i;
      phaseName = phase.name;
      phaseStart = Date.now();
      revokeState.closed.clear();
      revokeState.probes.clear();
      const host0 = await sampleHost(o.brokerMetricsUrl);
      const done = expect('phase-done', budget + 15_000);
      o.onPhase?.(i, 'start');
      shards.forEach((s, w) => {
        const count = phase.type === 'connect' ? (phase.count ?? devices.length) : 0;
        const share: PhaseShare = {
          connectCount: shareOf(count, w, workers),
          rate: phase.type === 'connect' && phase.rate ? phase.rate / workers : undefined,
          concurrency:
            phase.type === 'connect' && phase.concurrency
              ? Math.max(1, Math.ceil(phase.concurrency / workers))
              : undefined,
        };
        s.send({ type: 'phase', index: i, phase, share, deadlineMs: budget });
      });
      let revoke: RevokeReport | undefined;
      if (phase.type === 'revoke') revoke = await runRevoke(phase, startNs);
      const doneMsgs = await done;
      // The last second of stats arrives with phase-done; a short pause lets the observer drain.
      await new Promise((r) =>
        setTimeout(r, phase.type === 'telemetry' || phase.type === 'revoke' ? 300 : 20),
      );
      const endNs = now();
      o.onPhase?.(i, 'end');
      const host = hostDelta(host0, await sampleHost(o.brokerMetricsUrl));
      const durationMs = usSince(startNs, endNs) / 1000;
      const a = acc;
      const open = doneMsgs.reduce((s, m) => s + (m.type === 'phase-done' ? m.open : 0), 0);
      const unacked = doneMsgs.reduce((s, m) => s + (m.type === 'phase-done' ? m.unacked : 0), 0);
      const storms = doneMsgs.flatMap((m) => (m.type === 'phase-done' && m.storm ? [m.storm] : []));
      const sum = (k: keyof StormTargets) => storms.reduce((s, t) => s + t[k], 0);
      const storm: StormTargets | undefined = storms.length
        ? {
            dropped: sum('dropped'),
            attempted: sum('attempted'),
            connectedAtStart: sum('connectedAtStart'),
            notConnectedAtStart: sum('notConnectedAtStart'),
            revokedLeftOut: sum('revokedLeftOut'),
            retryRounds: Math.max(...storms.map((t) => t.retryRounds)),
            retryAttempts: sum('retryAttempts'),
            backAfterMs: Math.max(...storms.map((t) => t.backAfterMs)),
            notBack: sum('notBack'),
          }
        : undefined;
      const simLoad = a.simLoad();
      phases.push({
        name: phase.name,
        type: phase.type,
        phase,
        durationMs: Math.round(durationMs),
        completed: doneMsgs.length === workers && !interrupted,
        counts: { ...a.counts },
        open,
        unacked,
        errors: { ...a.errors },
        latency: {
          tcp: summarize(a.hists.tcp),
          tls: summarize(a.hists.tls),
          connack: summarize(a.hists.connack),
          connect: summarize(a.hists.connect),
          puback: summarize(a.hists.puback),
          delivery: summarize(a.hists.delivery),
        },
        rates: {
          connectsPerS: rate(a.counts.connected, durationMs),
          publishedPerS: rate(a.counts.published, durationMs),
          deliveredPerS: rate(a.counts.delivered, durationMs),
        },
        series: a.series(),
        ...(revoke ? { revoke: finishRevoke(revoke, a.counts.dropped) } : {}),
        ...(storm ? { storm } : {}),
        ...(simLoad ? { simLoad } : {}),
        host,
      });
      if (fatal) throw new SimError('SIM_WORKER_FAILED', `a worker failed: ${fatal.split('\n')[0]}`);
      if (deadWorkers) throw new SimError('SIM_WORKER_FAILED', `${deadWorkers} worker process(es) exited`);
    }
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    if (progress) clearInterval(progress);
    const stopped = expect('stopped', 5000);
    broadcast({ type: 'stop' });
    await stopped;
    for (const s of shards) s.close();
    observer?.end();
  }

  return {
    version: 1,
    startedAt: startedAt.toISOString(),
    endedAt: new Date().toISOString(),
    durationMs: Date.now() - runStart,
    interrupted,
    target: { host: target.host, port: target.port, servername: target.servername },
    devices: devices.length,
    keyType: scenario.keyType,
    workers,
    sourceAddresses: sourceAddresses.length,
    observer: observer ? 'connected' : (observerNote ?? 'off'),
    scenario,
    phases,
  };

  // ---- revoke under load
  async function runRevoke(
    phase: Extract<Phase, { type: 'revoke' }>,
    startNs: bigint,
  ): Promise<RevokeReport> {
    const wait = phase.atS * 1000 - usSince(startNs) / 1000;
    if (wait > 0) await abortableSleep(wait, o.signal);
    const k = Math.min(phase.count, devices.length);
    const ids = Array.from({ length: k }, (_, j) => devices[Math.floor((j * devices.length) / k)]!.id);
    const base: RevokeReport = {
      requested: ids,
      connectedAtRevoke: [],
      sentNs: new Map(),
      apiMs: newHistogram(),
      failures: {},
    };
    if (interrupted) return base;
    if (!o.operator)
      throw new SimError(
        'SIM_REVOKE_FAILED',
        'a revoke phase needs an operator (--operator-cert/--operator-key)',
      );
    const acks = expect('victims-ack', 10_000);
    broadcast({ type: 'victims', ids });
    for (const m of await acks) if (m.type === 'victims-ack') base.connectedAtRevoke.push(...m.connected);
    let next = 0;
    const lanes = Array.from({ length: Math.min(16, ids.length) }, async () => {
      while (next < ids.length && !interrupted) {
        const id = ids[next++]!;
        const t0 = now();
        base.sentNs.set(id, t0);
        try {
          await o.operator!.revokeDevice(id, phase.reason);
          base.apiMs.recordValue(Math.max(1, Math.round(usSince(t0))));
        } catch (e) {
          const err = e as { code?: string; details?: { code?: string } };
          const code = err.details?.code ?? err.code ?? 'error';
          base.failures[code] = (base.failures[code] ?? 0) + 1;
        }
      }
    });
    await Promise.all(lanes);
    return base;
  }

  function finishRevoke(r: RevokeReport, droppedInPhase: number) {
    const toClose = newHistogram();
    const notClosed: string[] = [];
    const closeCauses: Record<string, number> = {};
    for (const id of r.connectedAtRevoke) {
      const c = revokeState.closed.get(id);
      const sent = r.sentNs.get(id);
      if (!c || sent === undefined) {
        notClosed.push(id);
        continue;
      }
      toClose.recordValue(Math.max(1, Math.round(usSince(sent, c.atNs))));
      closeCauses[c.cause] = (closeCauses[c.cause] ?? 0) + 1;
    }
    const probeOutcomes: Record<string, number> = {};
    let probesResumed = 0;
    const admitted: string[] = [];
    for (const [id, p] of revokeState.probes) {
      probeOutcomes[p.outcome] = (probeOutcomes[p.outcome] ?? 0) + 1;
      if (p.resumeOffered) probesResumed++;
      if (p.outcome === 'connected') admitted.push(id);
    }
    return {
      requested: r.requested.length,
      revokeFailures: r.failures,
      connectedAtRevoke: r.connectedAtRevoke.length,
      closed: r.connectedAtRevoke.length - notClosed.length,
      notClosed,
      closeCauses,
      revokeToClose: summarize(toClose),
      apiLatency: summarize(r.apiMs),
      probes: revokeState.probes.size,
      probesWithSessionTicket: probesResumed,
      probeOutcomes,
      reconnectAdmitted: admitted,
      // Revoked devices' closes are counted apart (revokedClosed): every drop here is another device's.
      othersDropped: droppedInPhase,
    };
  }
}

function rate(n: number, ms: number): number {
  return ms > 0 ? Math.round((n / ms) * 1000 * 10) / 10 : 0;
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
