/**
 * A load worker: holds a share of the simulated devices (one process holds fewer than the 20,000 open
 * files it may have), runs each phase for them when the parent says so, and ships its measurements every
 * second. Every loop here is bounded in count (the worker's devices) and in time (the phase deadline).
 */
import { readFileSync } from 'node:fs';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Packet } from 'mqtt-packet';
import { type Connection, connectMqtt, now, publishPacket, usSince } from './client.ts';
import type { FromWorker, PhaseShare, StormTargets, ToWorker, WorkerInit } from './protocol.ts';
import {
  fillTopic,
  type Jitter,
  MAX_BACKOFF_MS,
  type Phase,
  type StormPhase,
  type TelemetrySpec,
} from './scenario.ts';
import { IntervalRecorder, type WorkerLoad } from './stats.ts';

interface Device {
  readonly id: string;
  readonly index: number;
  readonly context: SecureContext;
  readonly localAddress: string | undefined;
  conn: Connection | undefined;
  connecting: boolean;
  session: Buffer | undefined;
  seq: number;
  /** QoS 1: packet id → send time. */
  inflight: Map<number, bigint>;
  nextId: number;
  victim: boolean;
}

export function sampleJitter(j: Jitter, rnd: () => number = Math.random): number {
  switch (j.distribution) {
    case 'none':
      return 0;
    case 'uniform':
      return rnd() * j.maxMs;
    case 'exponential':
      return Math.min(j.maxMs, -Math.log(1 - rnd()) * j.meanMs);
  }
}

export class LoadWorker {
  private readonly devices: Device[];
  private readonly rec = new IntervalRecorder();
  private phaseIndex = -1;
  private aborted = false;
  private readonly sleepers = new Set<() => void>();
  private readonly statsTimer: NodeJS.Timeout;
  private readonly pending = new Set<Promise<unknown>>();
  /** The worker's own load: event-loop delay (10 ms resolution) and CPU time, per stats interval. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private lastCpu = process.cpuUsage();
  private lastCpuAt = process.hrtime.bigint();

  constructor(
    readonly init: WorkerInit,
    private readonly send: (m: FromWorker) => void,
  ) {
    this.devices = init.devices.map((d) => {
      // Built before the clock starts (benchmarking.md): a context per device, its own key and certificate.
      const context = createSecureContext({
        key: readFileSync(d.keyFile),
        cert: readFileSync(d.certFile),
        ca: init.rootPem,
        minVersion: 'TLSv1.2',
      });
      const addrs = init.sourceAddresses;
      return {
        id: d.id,
        index: d.index,
        context,
        // A device keeps its source address: the broker flags an id that hops addresses as a clone.
        localAddress: addrs.length ? addrs[d.index % addrs.length] : undefined,
        conn: undefined,
        connecting: false,
        session: undefined,
        seq: 0,
        inflight: new Map(),
        nextId: 1,
        victim: false,
      };
    });
    this.loopDelay.enable();
    this.statsTimer = setInterval(() => this.flush(), 1000);
    this.send({ type: 'ready', worker: init.worker, contexts: this.devices.length });
  }

  get open(): number {
    let n = 0;
    for (const d of this.devices) if (d.conn) n++;
    return n;
  }

  private load(): WorkerLoad {
    const cpu = process.cpuUsage(this.lastCpu);
    const at = process.hrtime.bigint();
    const elapsedUs = Number(at - this.lastCpuAt) / 1000;
    this.lastCpu = process.cpuUsage();
    this.lastCpuAt = at;
    const h = this.loopDelay;
    const ms = (ns: number) => Math.round(ns / 1e5) / 10;
    const load = {
      cpuPct: elapsedUs > 0 ? Math.round(((cpu.user + cpu.system) / elapsedUs) * 1000) / 10 : 0,
      loopDelayP99Ms: h.count ? ms(h.percentile(99)) : 0,
      loopDelayMaxMs: h.count ? ms(h.max) : 0,
    };
    h.reset();
    return load;
  }

  private flush(): void {
    if (this.phaseIndex < 0) return;
    this.send({
      type: 'stats',
      worker: this.init.worker,
      phase: this.phaseIndex,
      snapshot: this.rec.take(this.open, this.load()),
    });
  }

  handle(msg: ToWorker): void {
    switch (msg.type) {
      case 'phase':
        void this.runPhase(msg.index, msg.phase, msg.share, msg.deadlineMs);
        break;
      case 'victims': {
        const mine = new Set(msg.ids);
        const connected: string[] = [];
        for (const d of this.devices) {
          if (!mine.has(d.id)) continue;
          d.victim = true;
          if (d.conn) connected.push(d.id);
        }
        this.send({ type: 'victims-ack', worker: this.init.worker, connected });
        break;
      }
      case 'stop':
        void this.stop();
        break;
      case 'init':
        break;
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.aborted || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.sleepers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private async runPhase(index: number, phase: Phase, share: PhaseShare, deadlineMs: number): Promise<void> {
    this.flush();
    this.phaseIndex = index;
    const deadline = Date.now() + deadlineMs;
    let storm: StormTargets | undefined;
    try {
      switch (phase.type) {
        case 'connect':
          await this.connectRamp(share, phase.resume, deadline);
          await this.sleep(Math.min(phase.holdS * 1000, deadline - Date.now()));
          break;
        case 'hold':
          await this.sleep(Math.min(phase.durationS * 1000, deadline - Date.now()));
          break;
        case 'telemetry':
          await this.telemetry(phase, Math.min(Date.now() + phase.durationS * 1000, deadline));
          break;
        case 'revoke':
          if (phase.telemetry)
            await this.telemetry(phase.telemetry, Math.min(Date.now() + phase.durationS * 1000, deadline));
          else await this.sleep(Math.min(phase.durationS * 1000, deadline - Date.now()));
          break;
        case 'storm':
          storm = await this.storm(phase, deadline);
          await this.sleep(Math.min(phase.settleS * 1000, deadline - Date.now()));
          break;
      }
      // Probes of revoked devices finish inside the phase that caused them.
      await Promise.race([Promise.all(this.pending), this.sleep(Math.max(0, deadline - Date.now()))]);
    } catch (e) {
      this.send({ type: 'fatal', worker: this.init.worker, message: (e as Error).stack ?? String(e) });
    }
    let unacked = 0;
    for (const d of this.devices) unacked += d.inflight.size;
    this.flush();
    this.send({
      type: 'phase-done',
      worker: this.init.worker,
      phase: index,
      open: this.open,
      unacked,
      ...(storm ? { storm } : {}),
    });
  }

  // ---------------------------------------------------------------------------------------------- connect

  /** One connect, measured; `resume` offers the device's last TLS session. Resolves with the failure cause, or null. */
  /**
   * Connects `d`. A `probe` is a revoked device checking it is refused: not part of the load, so its
   * refusal counts as revokedRefused (expected), never as a failed connect or an error.
   */
  private async connectOne(d: Device, resume: boolean, probe = false): Promise<string | null> {
    if (d.conn || d.connecting) return null;
    d.connecting = true;
    if (!probe) this.rec.count('attempted');
    const offered = resume && d.session !== undefined;
    const r = await connectMqtt(
      {
        host: this.init.target.host,
        port: this.init.target.port,
        servername: this.init.target.servername,
        secureContext: d.context,
        localAddress: d.localAddress,
        session: offered ? d.session : undefined,
        clientId: d.id,
        keepaliveS: this.init.keepaliveS,
        timeoutMs: this.init.connectTimeoutMs,
      },
      { onPacket: (c, p) => this.onPacket(d, c, p), onDrop: (c, cause, at) => this.onDrop(d, c, cause, at) },
    );
    d.connecting = false;
    if (!r.ok) {
      if (probe) this.rec.count('revokedRefused');
      else {
        this.rec.count('failed');
        this.rec.error(r.cause);
      }
      return r.cause;
    }
    // A revoked device let back in is no connect to count: the runner reports it (reconnectAdmitted).
    if (probe) {
      d.conn = r.conn;
      return null;
    }
    const t = r.timings;
    this.rec.count('connected');
    if (t.resumed) this.rec.count('resumed');
    this.rec.record('tcp', t.tcpUs);
    this.rec.record('tls', t.tlsUs);
    this.rec.record('connack', t.connackUs);
    this.rec.record('connect', t.totalUs);
    d.conn = r.conn;
    if (r.conn.session) d.session = r.conn.session;
    // TLS 1.3 tickets arrive after the handshake; keep the newest for the next resumption.
    r.conn.socket.on('session', (s: Buffer) => {
      d.session = s;
    });
    if (this.aborted) r.conn.end();
    return null;
  }

  private onPacket(d: Device, _c: Connection, p: Packet): void {
    if (p.cmd === 'puback' && p.messageId !== undefined) {
      const t0 = d.inflight.get(p.messageId);
      if (t0 !== undefined) {
        d.inflight.delete(p.messageId);
        this.rec.count('acked');
        this.rec.record('puback', usSince(t0));
      }
    }
  }

  private onDrop(d: Device, _c: Connection, cause: string, atNs: bigint): void {
    d.conn = undefined;
    d.inflight.clear();
    // A revoked device's connection closing is what the revoke phase expects, not a drop or an error.
    if (d.victim) this.rec.count('revokedClosed');
    else {
      this.rec.count('dropped');
      this.rec.error(cause);
    }
    if (d.victim) {
      this.send({ type: 'victim-closed', worker: this.init.worker, id: d.id, atNs: atNs.toString(), cause });
      // Check the broker refuses it now, with its TLS session ticket if it has one (a resumed session must
      // not slip past a revocation), after a short pause like a real device's retry.
      const probe = (async () => {
        await this.sleep(100);
        const offered = d.session !== undefined;
        const cause = await this.connectOne(d, true, true);
        let outcome = cause === null ? 'connected' : `refused:${cause}`;
        if (cause === null && !d.conn) outcome = 'refused:closed_after_connack';
        if (d.conn) {
          d.conn.end();
          d.conn = undefined;
        }
        this.send({
          type: 'victim-probe',
          worker: this.init.worker,
          id: d.id,
          outcome,
          resumeOffered: offered,
        });
      })();
      this.pending.add(probe);
      void probe.finally(() => this.pending.delete(probe));
    }
  }

  private async connectRamp(share: PhaseShare, resume: boolean, deadline: number): Promise<void> {
    const todo = this.devices.filter((d) => !d.conn && !d.victim).slice(0, share.connectCount);
    await this.runConnects(todo, resume, share.rate, share.concurrency, deadline);
  }

  /**
   * Connects `todo` at `rate` per second, or with `concurrency` in flight; waits for every attempt to
   * settle (each settles within the connect timeout) or the deadline.
   */
  private async runConnects(
    todo: Device[],
    resume: boolean,
    rate: number | undefined,
    concurrency: number | undefined,
    deadline: number,
  ): Promise<void> {
    const inflight = new Set<Promise<string | null>>();
    const start = Date.now();
    let next = 0;
    while (next < todo.length && !this.aborted && Date.now() < deadline) {
      if (rate !== undefined) {
        const due = Math.min(todo.length, Math.floor(((Date.now() - start) / 1000) * rate) + 1);
        while (next < due) {
          const p = this.connectOne(todo[next++]!, resume);
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
        }
        await this.sleep(Math.max(1, Math.min(20, 1000 / rate)));
      } else {
        const cap = concurrency ?? 100;
        while (next < todo.length && inflight.size < cap) {
          const p = this.connectOne(todo[next++]!, resume);
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
        }
        if (inflight.size) await Promise.race(inflight);
      }
    }
    await Promise.race([Promise.all(inflight), this.sleep(Math.max(0, deadline - Date.now()))]);
  }

  // ---------------------------------------------------------------------------------------------- storm

  /**
   * Drops every connection at once (as an outage would), then brings back every device of the run but the
   * revoked ones, whether or not it was connected when the storm started: after an outage the whole fleet
   * reconnects, including devices that had failed before.
   */
  private async storm(phase: StormPhase, deadline: number): Promise<StormTargets> {
    const { resume, concurrency } = phase;
    const live = this.devices.filter((d) => d.conn);
    const droppedAt = Date.now();
    for (const d of live) {
      d.conn!.destroy();
      d.conn = undefined;
      d.inflight.clear();
    }
    const targets = this.devices.filter((d) => !d.victim);
    const wasLive = live.filter((d) => !d.victim).length;
    // Let the broker see the closes before the wave comes back.
    await this.sleep(200);
    let lastBack = -1;
    const onBack = () => {
      lastBack = Date.now();
    };
    let failed = await this.wave(
      targets,
      (start) => start + sampleJitter(phase.jitter),
      resume,
      concurrency,
      deadline,
      onBack,
    );
    // Retry rounds, as devices retry after a failure: exponential backoff with full jitter, bounded in
    // rounds and by the phase deadline.
    let rounds = 0;
    let retryAttempts = 0;
    for (let k = 1; k <= phase.retries && failed.length && !this.aborted && Date.now() < deadline; k++) {
      rounds++;
      retryAttempts += failed.length;
      const cap = Math.min(MAX_BACKOFF_MS, phase.backoffMs * 2 ** (k - 1));
      failed = await this.wave(
        failed,
        (start) => start + Math.random() * cap,
        resume,
        concurrency,
        deadline,
        onBack,
      );
    }
    return {
      dropped: live.length,
      attempted: targets.length,
      connectedAtStart: wasLive,
      notConnectedAtStart: targets.length - wasLive,
      revokedLeftOut: this.devices.length - targets.length,
      retryRounds: rounds,
      retryAttempts,
      backAfterMs: lastBack < 0 ? -1 : lastBack - droppedAt,
      notBack: targets.filter((d) => !d.conn).length,
    };
  }

  /**
   * One wave of reconnects, each device at the time `at` gives it (open loop), at most `concurrency` in
   * flight when set. Resolves, once every attempt settled or the deadline passed, with the devices whose
   * attempt failed.
   */
  private async wave(
    devices: Device[],
    at: (start: number) => number,
    resume: boolean,
    concurrency: number,
    deadline: number,
    onBack: () => void,
  ): Promise<Device[]> {
    const start = Date.now();
    const order = devices.map((d) => ({ d, at: at(start) })).sort((a, b) => a.at - b.at);
    const failed: Device[] = [];
    const inflight = new Set<Promise<unknown>>();
    let next = 0;
    while (next < order.length && !this.aborted && Date.now() < deadline) {
      const nowMs = Date.now();
      while (
        next < order.length &&
        order[next]!.at <= nowMs &&
        (concurrency === 0 || inflight.size < concurrency)
      ) {
        const d = order[next++]!.d;
        const p = this.connectOne(d, resume).then((cause) => {
          if (cause === null && d.conn) onBack();
          else if (cause !== null) failed.push(d);
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      const wait = next < order.length ? Math.max(1, Math.min(20, order[next]!.at - Date.now())) : 0;
      if (concurrency && inflight.size >= concurrency) await Promise.race([...inflight, this.sleep(20)]);
      else await this.sleep(wait);
    }
    await Promise.race([Promise.all(inflight), this.sleep(Math.max(0, deadline - Date.now()))]);
    return failed;
  }

  // ---------------------------------------------------------------------------------------------- telemetry

  private async telemetry(spec: TelemetrySpec, until: number): Promise<void> {
    const payload = Buffer.alloc(spec.payloadBytes, 0x61);
    const fixedTopic = spec.topic.includes('{seq}') ? undefined : new Map<number, Buffer>();
    const start = Date.now();
    let sent = 0;
    let cursor = 0;
    const n = this.devices.length;
    // Bounded per tick so a stalled event loop cannot turn into an unbounded burst.
    const maxPerTick = Math.max(1000, Math.ceil(n * spec.ratePerDevice));
    while (!this.aborted && Date.now() < until) {
      const live = this.open;
      const due = Math.floor(((Date.now() - start) / 1000) * spec.ratePerDevice * Math.max(live, 1));
      let budget = Math.min(maxPerTick, due - sent);
      let scanned = 0;
      while (budget > 0 && scanned < n) {
        const d = this.devices[cursor]!;
        cursor = (cursor + 1) % n;
        scanned++;
        if (!d.conn) continue;
        sent++;
        budget--;
        scanned = 0;
        if (d.conn.backlogBytes > 256 * 1024 || (spec.qos === 1 && d.inflight.size >= 1000)) {
          this.rec.count('skippedBackpressure');
          continue;
        }
        let topic = fixedTopic?.get(d.index);
        if (!topic) {
          topic = Buffer.from(fillTopic(spec.topic, d.id, d.index, d.seq));
          fixedTopic?.set(d.index, topic);
        }
        d.seq++;
        const t = now();
        if (payload.length >= 8) payload.writeBigUInt64BE(t, 0);
        let id = 0;
        if (spec.qos === 1) {
          id = d.nextId;
          d.nextId = d.nextId === 65_535 ? 1 : d.nextId + 1;
          d.inflight.set(id, t);
        }
        d.conn.write(publishPacket(topic, payload, spec.qos, id));
        this.rec.count('published');
      }
      if (live === 0) sent = due;
      await this.sleep(10);
    }
    // QoS 1: give outstanding acknowledgements a moment.
    if (spec.qos === 1) {
      const end = Date.now() + 2000;
      while (!this.aborted && Date.now() < end && this.devices.some((d) => d.inflight.size > 0))
        await this.sleep(20);
    }
  }

  // ---------------------------------------------------------------------------------------------- stop

  async stop(): Promise<void> {
    this.aborted = true;
    for (const s of [...this.sleepers]) s();
    for (const d of this.devices) {
      d.conn?.end();
      d.conn = undefined;
    }
    clearInterval(this.statsTimer);
    this.flush();
    this.loopDelay.disable();
    // Give DISCONNECTs a moment to leave.
    await new Promise((r) => setTimeout(r, 50));
    this.send({ type: 'stopped', worker: this.init.worker });
  }
}

/** Elapsed milliseconds since an hrtime reading, for callers that want it. */
export const msSince = (t0: bigint) => usSince(t0) / 1000;
