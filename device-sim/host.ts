/**
 * What the machine and the broker say about a phase, to tell the simulator's limits from the broker's:
 * the load average, the kernel's listen-queue overflows (SYNs dropped because a listener's accept queue was
 * full: a broker that does not accept fast enough), and, when the broker's Prometheus endpoint is given,
 * its own counts of admission refusals and handshakes. Read at the start and the end of each phase; the
 * report shows the differences. Everything here is optional: a missing file or endpoint gives no figure.
 */
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';

export interface HostSample {
  readonly loadAvg1: number;
  /** TcpExt ListenOverflows, machine-wide (every listener). */
  readonly listenOverflows: number | undefined;
  /** Selected broker counters, `name{labels}` → value. */
  readonly broker: Record<string, number> | undefined;
}

export interface PhaseHost {
  /** 1-minute load average at the end of the phase. */
  readonly loadAvg1: number;
  /** Listen-queue overflows during the phase, machine-wide (other programs' listeners count too). */
  readonly listenOverflows?: number;
  /** Broker counters that moved during the phase (admission refusals, handshakes by outcome, connects). */
  readonly broker?: Record<string, number>;
}

/** The broker series worth a line in the report. */
const BROKER_SERIES =
  /^(fleet_mqtt_admission_refused_total|fleet_tls_handshakes_total|fleet_mqtt_connects_total)\b/;

async function listenOverflows(): Promise<number | undefined> {
  try {
    const text = await readFile('/proc/net/netstat', 'utf8');
    const lines = text.split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0]?.split(/\s+/) ?? [];
    const values = lines[1]?.split(/\s+/) ?? [];
    const i = names.indexOf('ListenOverflows');
    return i > 0 && values[i] !== undefined ? Number(values[i]) : undefined;
  } catch {
    return undefined;
  }
}

/** Prometheus text → the selected series (no HELP/TYPE lines, no histograms). */
export function parseBrokerMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!BROKER_SERIES.test(line)) continue;
    const m = /^(\S+?(?:\{[^}]*\})?)\s+([0-9.eE+-]+)$/.exec(line.trim());
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function brokerMetrics(url: string | undefined): Promise<Record<string, number> | undefined> {
  if (!url) return undefined;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return undefined;
    return parseBrokerMetrics(await res.text());
  } catch {
    return undefined;
  }
}

export async function sampleHost(metricsUrl: string | undefined): Promise<HostSample> {
  const [overflows, broker] = await Promise.all([listenOverflows(), brokerMetrics(metricsUrl)]);
  return { loadAvg1: Math.round(loadavg()[0]! * 100) / 100, listenOverflows: overflows, broker };
}

export function hostDelta(a: HostSample, b: HostSample): PhaseHost {
  let broker: Record<string, number> | undefined;
  if (a.broker && b.broker) {
    broker = {};
    for (const [k, v] of Object.entries(b.broker)) {
      const d = v - (a.broker[k] ?? 0);
      if (d !== 0) broker[k] = d;
    }
  }
  return {
    loadAvg1: b.loadAvg1,
    ...(a.listenOverflows !== undefined && b.listenOverflows !== undefined
      ? { listenOverflows: b.listenOverflows - a.listenOverflows }
      : {}),
    ...(broker ? { broker } : {}),
  };
}
