/**
 * Measurements: HDR histograms (hdr-histogram-js) in microseconds, counters, and errors by cause. Workers
 * keep an interval's worth and ship it to the parent every second, histograms compressed; the parent
 * merges them into phase totals and a per-second series for the charts.
 */
import * as hdr from 'hdr-histogram-js';

/** 1 µs to 10 min, 3 significant digits. 'packed' keeps an empty or sparse histogram small. */
export function newHistogram(): hdr.Histogram {
  return hdr.build({
    bitBucketSize: 'packed',
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: false,
  });
}

export const HISTOGRAMS = ['tcp', 'tls', 'connack', 'connect', 'puback', 'delivery'] as const;
export type HistogramName = (typeof HISTOGRAMS)[number];

export const COUNTERS = [
  'attempted',
  'connected',
  'failed',
  'resumed',
  'published',
  'acked',
  'delivered',
  'dropped',
  'skippedBackpressure',
  /** A revoked device's connection closed by the broker: expected, not a drop. */
  'revokedClosed',
  /** A revoked device's reconnect refused by the broker: expected, the check passing, not a failure. */
  'revokedRefused',
] as const;
export type CounterName = (typeof COUNTERS)[number];

export type Counts = Record<CounterName, number>;

export const emptyCounts = (): Counts => Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Counts;

/** One worker's measurements over one interval, as sent to the parent. */
export interface IntervalSnapshot {
  readonly counts: Counts;
  readonly errors: Record<string, number>;
  /** Compressed base64 HDR histograms, only those with values. */
  readonly histograms: Partial<Record<HistogramName, string>>;
  /** Connections open at the end of the interval. */
  readonly open: number;
  /** How busy the worker process itself was: is a slow connect the broker's or the simulator's? */
  readonly load?: WorkerLoad;
}

/** A load worker's own load over an interval. */
export interface WorkerLoad {
  /** CPU time (user + system) of the worker process, % of one core. */
  readonly cpuPct: number;
  /** Event-loop delay (perf_hooks.monitorEventLoopDelay), ms. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
}

/** The simulator's own load during a phase, over every worker and every interval. */
export interface SimLoad {
  readonly intervals: number;
  readonly cpuPctMean: number;
  readonly cpuPctMax: number;
  /** The worst interval's p99 event-loop delay, and the longest single delay, ms. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
}

export class IntervalRecorder {
  counts = emptyCounts();
  errors: Record<string, number> = {};
  readonly hists = Object.fromEntries(HISTOGRAMS.map((h) => [h, newHistogram()])) as Record<
    HistogramName,
    hdr.Histogram
  >;

  count(name: CounterName, n = 1): void {
    this.counts[name] += n;
  }

  error(cause: string): void {
    this.errors[cause] = (this.errors[cause] ?? 0) + 1;
  }

  record(name: HistogramName, us: number): void {
    this.hists[name].recordValue(Math.max(1, Math.min(600_000_000, Math.round(us))));
  }

  /** Takes what was recorded and starts a new interval. */
  take(open: number, load?: WorkerLoad): IntervalSnapshot {
    const histograms: Partial<Record<HistogramName, string>> = {};
    for (const name of HISTOGRAMS) {
      const h = this.hists[name];
      if (h.totalCount > 0) {
        histograms[name] = hdr.encodeIntoCompressedBase64(h);
        h.reset();
      }
    }
    const snap = { counts: this.counts, errors: this.errors, histograms, open, ...(load ? { load } : {}) };
    this.counts = emptyCounts();
    this.errors = {};
    return snap;
  }
}

export interface LatencySummary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** Milliseconds with 3 decimals, from a µs histogram. */
export function summarize(h: hdr.Histogram): LatencySummary {
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    count: h.totalCount,
    mean: h.totalCount ? ms(h.mean) : 0,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}

export function decode(b64: string): hdr.Histogram {
  return hdr.decodeFromCompressedBase64(b64, 'packed');
}

export function addCounts(into: Counts, from: Counts): void {
  for (const c of COUNTERS) into[c] += from[c];
}

export function addErrors(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** One second of a phase, as the charts show it. */
export interface SeriesPoint {
  /** Seconds since the phase started. */
  readonly t: number;
  readonly counts: Counts;
  readonly errors: number;
  readonly open: number;
  readonly connectP50: number | null;
  readonly connectP99: number | null;
  readonly deliveryP50: number | null;
  readonly deliveryP99: number | null;
}

/** A phase's running totals and per-second buckets, merged from every worker and the observer. */
export class PhaseAccumulator {
  readonly counts = emptyCounts();
  readonly errors: Record<string, number> = {};
  readonly hists = Object.fromEntries(HISTOGRAMS.map((h) => [h, newHistogram()])) as Record<
    HistogramName,
    hdr.Histogram
  >;
  private readonly buckets: {
    counts: Counts;
    errors: number;
    open: Map<number, number>;
    connect: hdr.Histogram | undefined;
    delivery: hdr.Histogram | undefined;
  }[] = [];

  private readonly loads: WorkerLoad[] = [];

  constructor(readonly startNs: bigint) {}

  /** The workers' own load over the phase; undefined when no worker reported it. */
  simLoad(): SimLoad | undefined {
    const l = this.loads;
    if (!l.length) return undefined;
    const r1 = (n: number) => Math.round(n * 10) / 10;
    return {
      intervals: l.length,
      cpuPctMean: r1(l.reduce((a, x) => a + x.cpuPct, 0) / l.length),
      cpuPctMax: r1(Math.max(...l.map((x) => x.cpuPct))),
      loopDelayP99Ms: r1(Math.max(...l.map((x) => x.loopDelayP99Ms))),
      loopDelayMaxMs: r1(Math.max(...l.map((x) => x.loopDelayMaxMs))),
    };
  }

  private bucket(atNs: bigint) {
    const t = Math.max(0, Math.floor(Number(atNs - this.startNs) / 1e9));
    // Bounded: a phase is at most a day long; beyond that samples land in the last bucket.
    const i = Math.min(t, 86_400);
    while (this.buckets.length <= i)
      this.buckets.push({
        counts: emptyCounts(),
        errors: 0,
        open: new Map(),
        connect: undefined,
        delivery: undefined,
      });
    return this.buckets[i]!;
  }

  addSnapshot(s: IntervalSnapshot, atNs: bigint, worker: number): void {
    addCounts(this.counts, s.counts);
    addErrors(this.errors, s.errors);
    // Bounded: one entry per worker per second of the phase.
    if (s.load && this.loads.length < 1_000_000) this.loads.push(s.load);
    const b = this.bucket(atNs);
    addCounts(b.counts, s.counts);
    b.errors += Object.values(s.errors).reduce((a, n) => a + n, 0);
    b.open.set(worker, s.open);
    for (const [name, enc] of Object.entries(s.histograms) as [HistogramName, string][]) {
      const h = decode(enc);
      this.hists[name].add(h);
      if (name === 'connect') {
        b.connect ??= newHistogram();
        b.connect.add(h);
      }
    }
  }

  /** A delivery seen by the observer in this process. */
  addDelivery(latencyUs: number, atNs: bigint): void {
    const v = Math.max(1, Math.min(600_000_000, Math.round(latencyUs)));
    this.counts.delivered += 1;
    this.hists.delivery.recordValue(v);
    const b = this.bucket(atNs);
    b.counts.delivered += 1;
    b.delivery ??= newHistogram();
    b.delivery.recordValue(v);
  }

  addError(cause: string, atNs: bigint): void {
    this.errors[cause] = (this.errors[cause] ?? 0) + 1;
    this.bucket(atNs).errors += 1;
  }

  series(): SeriesPoint[] {
    const p = (h: hdr.Histogram | undefined, q: number) =>
      h?.totalCount ? Math.round(h.getValueAtPercentile(q)) / 1000 : null;
    let lastOpen = new Map<number, number>();
    return this.buckets.map((b, t) => {
      // Workers report once a second; carry the last open count of a worker that missed a bucket.
      const open = new Map([...lastOpen, ...b.open]);
      lastOpen = open;
      return {
        t,
        counts: b.counts,
        errors: b.errors,
        open: [...open.values()].reduce((a, n) => a + n, 0),
        connectP50: p(b.connect, 50),
        connectP99: p(b.connect, 99),
        deliveryP50: p(b.delivery, 50),
        deliveryP99: p(b.delivery, 99),
      };
    });
  }
}
