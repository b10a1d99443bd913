/**
 * Connects and refusals per minute for the overview, from the broker nodes' own Prometheus counters
 * (every node serves /metrics; the console reads the nodes it is configured with). Each node is read
 * every `intervalMs`; a rate is the counter's increase over the last minute of samples, summed over the
 * nodes (a node that restarted, and so reset its counters, counts from zero).
 */
import type { Logger } from 'pino';
import { request } from 'undici';

export interface BrokerRates {
  /** Per minute, over `windowSeconds`. */
  connects: number;
  /** Refused connections per minute by reason: `auth:<reason>` (CONNECT refused), `admission:<reason>` (before TLS), `tls:<outcome>` (handshake failed). */
  refusals: Record<string, number>;
  windowSeconds: number;
  nodes: { url: string; ok: boolean; error?: string }[];
}

type Sample = { at: number; values: Map<string, number> };

/** The counters this reads, by the series key they are summed under. */
export function parseCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const m =
      /^(fleet_mqtt_connects_total|fleet_mqtt_auth_failures_total|fleet_mqtt_admission_refused_total|fleet_tls_handshakes_total)(\{[^}]*\})?\s+([0-9.eE+-]+)/.exec(
        line,
      );
    if (!m) continue;
    const labels = m[2] ?? '';
    const label = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(labels)?.[1];
    let key: string | undefined;
    if (m[1] === 'fleet_mqtt_connects_total') key = 'connects';
    else if (m[1] === 'fleet_mqtt_auth_failures_total') key = `auth:${label('reason') ?? 'unknown'}`;
    else if (m[1] === 'fleet_mqtt_admission_refused_total') key = `admission:${label('reason') ?? 'unknown'}`;
    else if (label('outcome') !== 'ok') key = `tls:${label('outcome') ?? 'unknown'}`;
    if (key) out.set(key, (out.get(key) ?? 0) + Number(m[3]));
  }
  return out;
}

export class BrokerMetricsReader {
  private readonly samples = new Map<string, Sample[]>();
  private readonly status = new Map<string, { ok: boolean; error?: string }>();
  /** Nodes whose outage has been logged (once per outage). */
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly urls: readonly string[],
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
  ) {}

  start(): void {
    if (this.urls.length === 0) return;
    void this.readAll();
    this.timer = setInterval(() => void this.readAll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async readAll(): Promise<void> {
    await Promise.all(this.urls.map((u) => this.read(u)));
  }

  private async read(url: string): Promise<void> {
    try {
      const r = await request(url, { headersTimeout: 2000, bodyTimeout: 2000 });
      const text = await r.body.text();
      if (r.statusCode !== 200) throw new Error(`HTTP ${r.statusCode}`);
      const list = this.samples.get(url) ?? [];
      list.push({ at: Date.now(), values: parseCounters(text) });
      // Keep a little over a minute.
      while (list.length > 2 && Date.now() - list[1]!.at > 60_000) list.shift();
      this.samples.set(url, list);
      this.status.set(url, { ok: true });
      this.warned.delete(url);
    } catch (e) {
      const error = (e as { code?: string }).code ?? (e as Error).message;
      // A node never read before gets until the next read: `fleet up` starts the broker after the console
      // (the first read comes before the broker listens), and that is no outage. A node that was read,
      // or still is not at the second try, is warned of once per outage; the overview shows it either way.
      const neverRead = !this.status.has(url);
      if (!neverRead && !this.warned.has(url)) {
        this.warned.add(url);
        this.log.warn(
          { event: 'console_broker_metrics_unreachable', url, error },
          'broker metrics unreachable',
        );
      }
      this.status.set(url, { ok: false, error });
    }
  }

  rates(): BrokerRates {
    const refusals: Record<string, number> = {};
    let connects = 0;
    let window = 0;
    for (const [, list] of this.samples) {
      if (list.length < 2) continue;
      const first = list[0]!;
      const last = list[list.length - 1]!;
      const dt = (last.at - first.at) / 1000;
      if (dt <= 0) continue;
      window = Math.max(window, dt);
      for (const [key, v] of last.values) {
        const before = first.values.get(key) ?? 0;
        const delta = v >= before ? v - before : v; // a restarted node counts from zero
        const perMin = (delta / dt) * 60;
        if (key === 'connects') connects += perMin;
        else if (perMin > 0) refusals[key] = (refusals[key] ?? 0) + perMin;
      }
    }
    return {
      connects,
      refusals,
      windowSeconds: Math.round(window),
      nodes: this.urls.map((url) => ({
        url,
        ...(this.status.get(url) ?? { ok: false, error: 'not read yet' }),
      })),
    };
  }
}
