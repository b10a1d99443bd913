/**
 * What a run found, three ways: a JSON report (the data), a text summary (for a terminal and a commit
 * note), and a self-contained HTML page with inline SVG charts (no scripts, no network): connects per
 * second and latency percentiles over time, and errors by cause, per phase.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as hdr from 'hdr-histogram-js';
import type { PhaseHost } from './host.ts';
import type { StormTargets } from './protocol.ts';
import type { Phase, Scenario } from './scenario.ts';
import type { Counts, LatencySummary, SeriesPoint, SimLoad } from './stats.ts';

/** Revocation bookkeeping while the phase runs (runner-internal). */
export interface RevokeReport {
  requested: string[];
  connectedAtRevoke: string[];
  sentNs: Map<string, bigint>;
  apiMs: hdr.Histogram;
  failures: Record<string, number>;
}

export interface RevokeResult {
  readonly requested: number;
  readonly revokeFailures: Record<string, number>;
  /** Victims that were connected when the revocations were sent. */
  readonly connectedAtRevoke: number;
  /** ...and whose connection the broker closed within the phase. */
  readonly closed: number;
  readonly notClosed: string[];
  readonly closeCauses: Record<string, number>;
  /** From the operator API request being sent to the device seeing its connection close. */
  readonly revokeToClose: LatencySummary;
  readonly apiLatency: LatencySummary;
  /** Reconnect attempts by revoked devices (with their TLS session ticket when they had one). */
  readonly probes: number;
  readonly probesWithSessionTicket: number;
  readonly probeOutcomes: Record<string, number>;
  /** Revoked devices the broker let back in: must be empty. */
  readonly reconnectAdmitted: string[];
  /** Connections of devices that were not revoked and still closed during the phase: should be 0. */
  readonly othersDropped: number;
}

export interface PhaseReport {
  readonly name: string;
  readonly type: Phase['type'];
  readonly phase: Phase;
  readonly durationMs: number;
  readonly completed: boolean;
  readonly counts: Counts;
  /** Connections open at the end of the phase. */
  readonly open: number;
  /** QoS 1 publishes without PUBACK at the end of the phase. */
  readonly unacked: number;
  readonly errors: Record<string, number>;
  readonly latency: Record<'tcp' | 'tls' | 'connack' | 'connect' | 'puback' | 'delivery', LatencySummary>;
  readonly rates: { connectsPerS: number; publishedPerS: number; deliveredPerS: number };
  readonly series: SeriesPoint[];
  readonly revoke?: RevokeResult;
  /** A storm: connections it dropped, devices it tried to bring back (connected at its start or not). */
  readonly storm?: StormTargets;
  /** The simulator's own CPU and event-loop delay: high values mean its figures are its own limit. */
  readonly simLoad?: SimLoad;
  /** The machine and the broker during the phase (load average, listen-queue overflows, broker counters). */
  readonly host?: PhaseHost;
}

export interface RunReport {
  readonly version: 1;
  readonly startedAt: string;
  readonly endedAt: string;
  readonly durationMs: number;
  readonly interrupted: boolean;
  readonly target: { host: string; port: number; servername: string };
  readonly devices: number;
  readonly keyType: string;
  readonly workers: number;
  readonly sourceAddresses: number;
  readonly observer: string;
  readonly scenario: Scenario;
  readonly phases: PhaseReport[];
  /** Free-form context a caller adds (broker CPU, the enrollment, ...). */
  notes?: Record<string, unknown>;
}

const fmt = (n: number) => (Number.isInteger(n) ? n.toLocaleString('en-US') : n.toFixed(1));
/** A latency in ms with the digits that mean something: 3,178 · 26.0 · 1.48. */
export const ms = (v: number) =>
  v >= 100
    ? Math.round(v).toLocaleString('en-US')
    : v >= 10
      ? v.toFixed(1)
      : String(Number(v.toPrecision(3)));
const lat = (l: LatencySummary) =>
  l.count
    ? `p50 ${ms(l.p50)} ms  p90 ${ms(l.p90)}  p99 ${ms(l.p99)}  max ${ms(l.max)}  (n=${fmt(l.count)})`
    : '-';

/** `load average 4.2; listen-queue overflows +4,213 (machine-wide); broker: admission refused rate_limited 12, ...` */
export function hostLine(h: PhaseHost): string {
  const parts = [`load average ${h.loadAvg1}`];
  if (h.listenOverflows !== undefined)
    parts.push(
      `listen-queue overflows +${fmt(h.listenOverflows)} (machine-wide: SYNs dropped on a full accept queue)`,
    );
  if (h.broker) {
    const b = Object.entries(h.broker).map(([k, v]) => {
      const name = k
        .replace(/^fleet_mqtt_admission_refused_total/, 'admission refused')
        .replace(/^fleet_tls_handshakes_total/, 'handshakes')
        .replace(/^fleet_mqtt_connects_total/, 'connects')
        .replace(/\{([^}]*)\}/, (_m, l: string) => ` ${l.replace(/[a-z_]+="([^"]*)"/g, '$1')}`);
      return `${name} ${fmt(v)}`;
    });
    parts.push(`broker: ${b.length ? b.join(', ') : 'no change'}`);
  }
  return parts.join('; ');
}

/** The enrollment note as a sentence: `api (the provisioning service answers at …), station sim-station`. */
export function enrollmentText(e: unknown): string {
  if (typeof e !== 'object' || e === null) return String(e);
  const o = e as { mode?: string; why?: string; apiUrl?: string; station?: string };
  const parts = [`${o.mode ?? '?'}${o.why ? ` (${o.why})` : ''}`];
  if (o.station) parts.push(`station ${o.station}`);
  if (o.apiUrl && !(o.why ?? '').includes(o.apiUrl)) parts.push(`API ${o.apiUrl}`);
  return parts.join(', ');
}

/**
 * Where the devices' keys and certificates are, and how many this run enrolled (the rest were cached by
 * earlier runs): `/data/sim/identities-P-256 (2 enrolled by this run, 3 from earlier runs)`.
 */
export function identitiesText(r: Pick<RunReport, 'devices' | 'notes'>): string | undefined {
  const dir = r.notes?.['identities'];
  if (typeof dir !== 'string') return undefined;
  const enrolled = r.notes?.['enrolledThisRun'];
  if (typeof enrolled !== 'number') return `identities: ${dir}`;
  const earlier = Math.max(0, r.devices - enrolled);
  return `identities: ${dir} (${fmt(enrolled)} enrolled by this run, ${fmt(earlier)} from earlier runs)`;
}

/** What a phase came to: ok, or the problems, with the figures a reader looks for first. */
export interface Verdict {
  readonly phase: string;
  readonly type: Phase['type'];
  readonly ok: boolean;
  /** `ok`, `incomplete`, or the problems found, e.g. `12 connects failed`. */
  readonly verdict: string;
  /** The phase's headline figures, one line. */
  readonly headline: string;
}

/** The simulator's own load was high enough that its figures may be its limit, not the broker's. */
export function simulatorLimit(p: PhaseReport): string | undefined {
  const l = p.simLoad;
  if (!l) return undefined;
  const why: string[] = [];
  if (l.cpuPctMax >= 90) why.push(`a load worker used ${l.cpuPctMax}% of a core`);
  if (l.loopDelayP99Ms >= 50) why.push(`its event loop lagged ${l.loopDelayP99Ms} ms (p99)`);
  return why.length ? why.join(', ') : undefined;
}

export function verdicts(r: RunReport): Verdict[] {
  return r.phases.map((p) => {
    const c = p.counts;
    const problems: string[] = [];
    const figures: string[] = [];
    if (c.attempted) {
      if (c.failed) problems.push(`${fmt(c.failed)} of ${fmt(c.attempted)} connects failed`);
      figures.push(
        `${fmt(c.connected)}/${fmt(c.attempted)} connected, ${fmt(p.rates.connectsPerS)} connects/s`,
        `connect p99 ${ms(p.latency.connect.p99)} ms`,
      );
    }
    if (p.storm) {
      const st = p.storm;
      if (st.notBack) {
        // The broker's admission control refusing part of a storm is by design; devices retry.
        const admission = (p.errors['refused_before_tls'] ?? 0) > 0 && !st.retryRounds;
        problems.push(
          `${fmt(st.notBack)} of ${fmt(st.attempted)} devices not back` +
            (admission ? ' (refused at admission: --storm-retries 3 retries them, as devices do)' : ''),
        );
      }
      if (st.backAfterMs >= 0)
        figures.unshift(
          `${st.notBack ? 'the last one back' : 'all back'} ${(st.backAfterMs / 1000).toFixed(1)} s after the drop`,
        );
    }
    if (c.published) {
      if (p.unacked) problems.push(`${fmt(p.unacked)} QoS 1 publishes without PUBACK`);
      figures.push(`${fmt(p.rates.publishedPerS)} msg/s`);
      if (p.latency.delivery.count) figures.push(`delivery p99 ${ms(p.latency.delivery.p99)} ms`);
    }
    if (p.revoke) {
      const v = p.revoke;
      const refused = v.probes - v.reconnectAdmitted.length;
      if (v.notClosed.length) problems.push(`${v.notClosed.length} revoked devices not dropped`);
      if (v.reconnectAdmitted.length)
        problems.push(`${v.reconnectAdmitted.length} revoked devices let back in`);
      const apiFailures = Object.values(v.revokeFailures).reduce((a, b) => a + b, 0);
      if (apiFailures) problems.push(`${apiFailures} revocations failed at the API`);
      if (v.othersDropped) problems.push(`${v.othersDropped} other devices dropped`);
      figures.unshift(
        `${v.closed}/${v.connectedAtRevoke} revoked dropped, revoke-to-close p99 ${ms(v.revokeToClose.p99)} ms`,
        `${refused}/${v.probes} reconnects refused as expected`,
      );
    }
    if (c.dropped && !p.revoke && !p.storm)
      problems.push(`${fmt(c.dropped)} connections dropped by the broker`);
    const verdict = !p.completed ? 'incomplete' : problems.length ? problems.join('; ') : 'ok';
    return {
      phase: p.name,
      type: p.type,
      ok: p.completed && problems.length === 0,
      verdict,
      headline: figures.join(', '),
    };
  });
}

/** The storms with and without TLS resumption side by side, when the run had both. */
function stormPair(r: RunReport): [PhaseReport, PhaseReport] | undefined {
  const storms = r.phases.filter((p) => p.storm);
  const full = storms.find((p) => !('resume' in p.phase && p.phase.resume));
  const resumed = storms.find((p) => 'resume' in p.phase && p.phase.resume);
  return full && resumed ? [full, resumed] : undefined;
}

function stormRows(pair: [PhaseReport, PhaseReport]): [string, string, string][] {
  const row = (label: string, f: (p: PhaseReport) => string): [string, string, string] => [
    label,
    f(pair[0]),
    f(pair[1]),
  ];
  return [
    row('devices back', (p) => `${fmt(p.storm!.attempted - p.storm!.notBack)}/${fmt(p.storm!.attempted)}`),
    row('last back after', (p) =>
      p.storm!.backAfterMs >= 0 ? `${(p.storm!.backAfterMs / 1000).toFixed(1)} s` : '-',
    ),
    row('connects/s', (p) => fmt(p.rates.connectsPerS)),
    row('connect p50 / p99 (ms)', (p) => `${ms(p.latency.connect.p50)} / ${ms(p.latency.connect.p99)}`),
    row('TLS p50 / p99 (ms)', (p) => `${ms(p.latency.tls.p50)} / ${ms(p.latency.tls.p99)}`),
    row('TLS sessions resumed', (p) => fmt(p.counts.resumed)),
    row('failed connects', (p) => fmt(p.counts.failed)),
    row('simulator CPU max', (p) => (p.simLoad ? `${p.simLoad.cpuPctMax}%` : '-')),
  ];
}

/** The lines above the details: each phase's verdict and headline, the simulator's own limit, the storms. */
export function summaryLines(r: RunReport): string[] {
  const vs = verdicts(r);
  const w = Math.max(...vs.map((v) => v.phase.length), 5);
  const out = ['summary'];
  for (const v of vs)
    out.push(`  ${v.phase.padEnd(w)}  ${v.ok ? 'ok' : v.verdict}${v.headline ? `  (${v.headline})` : ''}`);
  const busy = r.phases.map((p) => [p.name, simulatorLimit(p)] as const).filter(([, why]) => why);
  out.push(
    busy.length
      ? `  the simulator itself may have been the limit: ${busy.map(([n, why]) => `${n}: ${why}`).join('; ')}`
      : '  the simulator was not the limit (its CPU and event loop had room)',
  );
  const pair = stormPair(r);
  if (pair) {
    out.push('', 'reconnect storms side by side');
    const rows = stormRows(pair);
    const wa = Math.max(pair[0].name.length, ...rows.map((x) => x[1].length));
    const wb = Math.max(pair[1].name.length, ...rows.map((x) => x[2].length));
    out.push(`  ${''.padEnd(24)}  ${pair[0].name.padStart(wa)}  ${pair[1].name.padStart(wb)}`);
    for (const [label, a, b] of rows) out.push(`  ${label.padEnd(24)}  ${a.padStart(wa)}  ${b.padStart(wb)}`);
  }
  return out;
}

export function textSummary(r: RunReport): string {
  const out: string[] = [];
  out.push(
    `fleet sim: ${r.devices} devices (${r.keyType}) -> ${r.target.host}:${r.target.port} (${r.target.servername}),` +
      ` ${r.workers} worker(s), ${r.sourceAddresses || 'default'} source address(es), ${(r.durationMs / 1000).toFixed(1)} s` +
      (r.interrupted ? '  [INTERRUPTED]' : ''),
  );
  out.push(`observer: ${r.observer}`);
  const enrollment = r.notes?.['enrollment'];
  if (enrollment) out.push(`enrollment: ${enrollmentText(enrollment)}`);
  const identities = identitiesText(r);
  if (identities) out.push(identities);
  out.push('', ...summaryLines(r));
  for (const p of r.phases) {
    const c = p.counts;
    out.push(
      '',
      `== ${p.name} (${p.type}) ${(p.durationMs / 1000).toFixed(1)} s${p.completed ? '' : '  [incomplete]'}`,
    );
    if (p.storm) {
      const st = p.storm;
      out.push(
        `  storm: dropped ${fmt(st.dropped)} connections; reconnecting ${fmt(st.attempted)} devices ` +
          `(${fmt(st.connectedAtStart)} were connected, ${fmt(st.notConnectedAtStart)} were not` +
          `${st.revokedLeftOut ? `; ${fmt(st.revokedLeftOut)} revoked left out` : ''})`,
      );
      out.push(
        `  back: ${fmt(st.attempted - st.notBack)}/${fmt(st.attempted)}` +
          (st.backAfterMs >= 0 ? `, the last ${fmt(Math.round(st.backAfterMs))} ms after the drop` : '') +
          (st.retryRounds
            ? `; ${st.retryRounds} retry round(s), ${fmt(st.retryAttempts)} retries`
            : '; no retries'),
      );
    }
    if (c.attempted) {
      out.push(
        `  connects: ${fmt(c.connected)}/${fmt(c.attempted)} ok, ${fmt(c.failed)} failed, ${fmt(c.resumed)} resumed TLS sessions,` +
          ` ${fmt(p.rates.connectsPerS)}/s; open at end ${fmt(p.open)}`,
      );
      for (const k of ['tcp', 'tls', 'connack', 'connect'] as const) {
        if (p.latency[k].count) out.push(`  ${k.padEnd(8)} ${lat(p.latency[k])}`);
      }
    } else out.push(`  open connections at end: ${fmt(p.open)}`);
    if (c.published) {
      out.push(
        `  publish: ${fmt(c.published)} sent (${fmt(p.rates.publishedPerS)}/s), ${fmt(c.delivered)} delivered to the observer` +
          ` (${fmt(p.rates.deliveredPerS)}/s)${c.acked ? `, ${fmt(c.acked)} PUBACKs, ${fmt(p.unacked)} unacked` : ''}` +
          (c.skippedBackpressure ? `, ${fmt(c.skippedBackpressure)} skipped on backpressure` : ''),
      );
      if (p.latency.puback.count) out.push(`  puback   ${lat(p.latency.puback)}`);
      out.push(`  delivery ${lat(p.latency.delivery)}`);
    }
    if (c.dropped) out.push(`  connections dropped by the other side: ${fmt(c.dropped)}`);
    if (p.simLoad) {
      const l = p.simLoad;
      out.push(
        `  simulator load: worker CPU mean ${l.cpuPctMean}% max ${l.cpuPctMax}% of a core; ` +
          `event-loop delay p99 ${l.loopDelayP99Ms} ms, max ${l.loopDelayMaxMs} ms`,
      );
    }
    const errs = Object.entries(p.errors).sort((a, b) => b[1] - a[1]);
    if (errs.length) out.push(`  errors: ${errs.map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`);
    if (p.host) out.push(`  machine: ${hostLine(p.host)}`);
    if (p.revoke) {
      const v = p.revoke;
      out.push(
        `  revoked ${v.requested} (${v.connectedAtRevoke} connected): ${v.closed} closed by the broker, ${v.notClosed.length} not closed` +
          `${Object.keys(v.revokeFailures).length ? `, API failures ${JSON.stringify(v.revokeFailures)}` : ''}`,
      );
      out.push(`  revoke-to-close ${lat(v.revokeToClose)}`);
      out.push(`  operator API    ${lat(v.apiLatency)}`);
      out.push(
        `  reconnects of revoked devices: ${v.probes - v.reconnectAdmitted.length}/${v.probes} refused, as expected ` +
          `(${v.probesWithSessionTicket} tried with a TLS session ticket; ${
            Object.entries(v.probeOutcomes)
              .map(([k, n]) => `${k.replace(/^refused:/, '')} ${n}`)
              .join(', ') || 'none'
          }); let back in: ${v.reconnectAdmitted.length}`,
      );
      out.push(`  other devices dropped meanwhile: ${v.othersDropped}`);
    }
  }
  return `${out.join('\n')}\n`;
}

// ------------------------------------------------------------------------------------------------ HTML

const esc = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!,
  );

interface Line {
  readonly label: string;
  readonly color: string;
  readonly points: readonly (readonly [number, number | null])[];
}

/**
 * A small line chart: round ticks (1, 2, 5 × 10^n) on both axes, one polyline per series, gaps where a
 * value is missing. With `trim`, the time axis covers only the seconds that have a value (a latency chart
 * has none before the first connect of a phase); a chart with no value at all is left out ('').
 */
export function lineChart(
  title: string,
  unit: string,
  lines: readonly Line[],
  opts: { w?: number; h?: number; trim?: boolean } = {},
): string {
  const { w = 560, h = 220, trim = false } = opts;
  const pad = { l: 56, r: 12, t: 28, b: 30 };
  const valued = lines.flatMap((l) => l.points.filter((p) => p[1] !== null));
  if (!valued.length) return trim ? '' : `<div class="empty">${esc(title)}: no data</div>`;
  const xs = (trim ? valued : lines.flatMap((l) => l.points)).map((p) => p[0]);
  const ys = valued.map((p) => p[1] as number);
  const x0 = Math.min(...xs);
  const x1 = Math.max(x0 + 1, ...xs);
  // The y axis ends on the first round tick at or above the highest value.
  const yMax = Math.max(...ys) || 1;
  const y1 = Math.ceil(yMax / niceStep(yMax) - 1e-9) * niceStep(yMax);
  const yTicks = niceTicks(0, y1);
  const sx = (x: number) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const sy = (y: number) => h - pad.b - (y / y1) * (h - pad.t - pad.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">`,
    `<text x="${pad.l}" y="16" class="t">${esc(title)}</text>`,
  ];
  for (const v of yTicks) {
    const y = sy(v);
    parts.push(
      `<line x1="${pad.l}" x2="${w - pad.r}" y1="${y}" y2="${y}" class="g"/>`,
      `<text x="${pad.l - 6}" y="${y + 4}" class="a" text-anchor="end">${fmtTick(v)}</text>`,
    );
  }
  for (const xv of niceTicks(x0, x1)) {
    parts.push(
      `<text x="${sx(xv)}" y="${h - pad.b + 16}" class="a" text-anchor="middle">${fmtTick(xv)}s</text>`,
    );
  }
  parts.push(`<text x="${w - pad.r}" y="16" class="a" text-anchor="end">${esc(unit)}</text>`);
  lines.forEach((l, li) => {
    let seg: string[] = [];
    const flush = () => {
      if (seg.length > 1)
        parts.push(
          `<polyline fill="none" stroke="${l.color}" stroke-width="1.8" points="${seg.join(' ')}"/>`,
        );
      else if (seg.length === 1) {
        const [x, y] = seg[0]!.split(',');
        parts.push(`<circle cx="${x}" cy="${y}" r="2.5" fill="${l.color}"/>`);
      }
      seg = [];
    };
    for (const [x, y] of l.points) {
      if (y === null) flush();
      else seg.push(`${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    }
    flush();
    parts.push(
      `<rect x="${pad.l + 8 + li * 110}" y="${pad.t - 4}" width="10" height="3" fill="${l.color}"/>`,
      `<text x="${pad.l + 22 + li * 110}" y="${pad.t}" class="a">${esc(l.label)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
}

/** The round step (1, 2 or 5 × 10^n) that cuts `span` into the number of parts nearest `n`. */
export function niceStep(span: number, n = 4): number {
  if (!(span > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(span / n));
  let best = p;
  for (const step of [p, 2 * p, 5 * p, 10 * p])
    if (Math.abs(span / step - n) <= Math.abs(span / best - n)) best = step;
  return best;
}

/** Ticks at every multiple of a round step from `lo` to `hi` (both included when they are multiples). */
export function niceTicks(lo: number, hi: number, n = 4): number[] {
  const step = niceStep(hi - lo, n);
  const out: number[] = [];
  // Rounded to the step's decimals, so 0.1 + 0.2 prints as 0.3.
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    out.push(Number(v.toFixed(decimals)));
  return out;
}

function fmtTick(v: number): string {
  if (Math.abs(v) >= 1000) return `${Math.round(v / 100) / 10}k`;
  return String(Number(v.toPrecision(6)));
}

function barChart(title: string, items: readonly [string, number][], w = 560): string {
  if (!items.length) return `<div class="empty">${esc(title)}: none</div>`;
  const rowH = 20;
  const h = 28 + items.length * rowH;
  const labelW = 230;
  const max = Math.max(...items.map((i) => i[1]));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">`,
    `<text x="0" y="16" class="t">${esc(title)}</text>`,
  ];
  items.forEach(([k, v], i) => {
    const y = 26 + i * rowH;
    const bw = Math.max(2, ((w - labelW - 60) * v) / max);
    parts.push(
      `<text x="${labelW - 6}" y="${y + 13}" class="a" text-anchor="end">${esc(k)}</text>`,
      `<rect x="${labelW}" y="${y + 2}" width="${bw}" height="${rowH - 6}" fill="#c0392b"/>`,
      `<text x="${labelW + bw + 6}" y="${y + 13}" class="a">${v.toLocaleString('en-US')}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
}

function latencyTable(p: PhaseReport): string {
  const rows = (['tcp', 'tls', 'connack', 'connect', 'puback', 'delivery'] as const)
    .filter((k) => p.latency[k].count)
    .map((k) => {
      const l = p.latency[k];
      return `<tr><td>${k}</td><td>${fmt(l.count)}</td><td>${ms(l.p50)}</td><td>${ms(l.p90)}</td><td>${ms(l.p99)}</td><td>${ms(l.p999)}</td><td>${ms(l.max)}</td></tr>`;
    });
  if (!rows.length) return '';
  return `<table><tr><th>ms</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>${rows.join('')}</table>`;
}

export function htmlReport(r: RunReport): string {
  const sections = r.phases.map((p) => {
    const s = p.series;
    const charts: string[] = [];
    if (p.counts.attempted) {
      charts.push(
        lineChart('connects per second', 'per s', [
          { label: 'connected', color: '#2471a3', points: s.map((x) => [x.t, x.counts.connected]) },
          { label: 'failed', color: '#c0392b', points: s.map((x) => [x.t, x.counts.failed]) },
        ]),
        lineChart(
          'connect latency (TCP+TLS+CONNACK)',
          'ms',
          [
            { label: 'p50', color: '#1e8449', points: s.map((x) => [x.t, x.connectP50]) },
            { label: 'p99', color: '#af601a', points: s.map((x) => [x.t, x.connectP99]) },
          ],
          { trim: true },
        ),
      );
    }
    if (p.counts.published) {
      charts.push(
        lineChart('messages per second', 'per s', [
          { label: 'published', color: '#2471a3', points: s.map((x) => [x.t, x.counts.published]) },
          { label: 'delivered', color: '#1e8449', points: s.map((x) => [x.t, x.counts.delivered]) },
        ]),
        lineChart(
          'publish-to-delivery latency',
          'ms',
          [
            { label: 'p50', color: '#1e8449', points: s.map((x) => [x.t, x.deliveryP50]) },
            { label: 'p99', color: '#af601a', points: s.map((x) => [x.t, x.deliveryP99]) },
          ],
          { trim: true },
        ),
      );
    }
    charts.push(
      lineChart('open connections', 'connections', [
        { label: 'open', color: '#6c3483', points: s.map((x) => [x.t, x.open]) },
      ]),
    );
    const errs = Object.entries(p.errors).sort((a, b) => b[1] - a[1]);
    charts.push(barChart('errors by cause', errs));
    const rv = p.revoke ? revokeChecks(p.revoke) : '';
    const st = p.storm
      ? `<p>storm: dropped ${fmt(p.storm.dropped)} connections; reconnecting ${fmt(p.storm.attempted)} devices
         (${fmt(p.storm.connectedAtStart)} were connected, ${fmt(p.storm.notConnectedAtStart)} were not, ${fmt(p.storm.revokedLeftOut)} revoked left out);
         back ${fmt(p.storm.attempted - p.storm.notBack)}/${fmt(p.storm.attempted)}, the last ${fmt(Math.round(p.storm.backAfterMs))} ms after the drop;
         ${p.storm.retryRounds} retry round(s), ${fmt(p.storm.retryAttempts)} retries</p>`
      : '';
    const ld = p.simLoad
      ? `<p>simulator load: worker CPU mean ${p.simLoad.cpuPctMean}%, max ${p.simLoad.cpuPctMax}% of a core;
         event-loop delay p99 ${p.simLoad.loopDelayP99Ms} ms, max ${p.simLoad.loopDelayMaxMs} ms</p>`
      : '';
    const hs = p.host ? `<p>machine: ${esc(hostLine(p.host))}</p>` : '';
    const c = p.counts;
    return `<section><h2>${esc(p.name)} <small>${p.type}, ${(p.durationMs / 1000).toFixed(1)} s${p.completed ? '' : ', incomplete'}</small></h2>
<p>${[
      c.attempted
        ? `connects ${fmt(c.connected)}/${fmt(c.attempted)} (${fmt(c.resumed)} resumed, ${fmt(p.rates.connectsPerS)}/s)`
        : '',
      c.published
        ? `published ${fmt(c.published)} (${fmt(p.rates.publishedPerS)}/s) · delivered ${fmt(c.delivered)}`
        : '',
      `dropped by the broker ${fmt(c.dropped)}`,
      `open at end ${fmt(p.open)}`,
    ]
      .filter(Boolean)
      .join(' · ')}</p>
${st}${ld}${hs}${rv}${latencyTable(p)}<div class="charts">${charts.join('\n')}</div></section>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleet sim: ${esc(r.startedAt)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}small{color:#777;font-weight:normal}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg{background:#fafafa;border:1px solid #eee}
.t{font-size:12px;font-weight:600}.a{font-size:10px;fill:#555}.g{stroke:#e3e3e3}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
.empty{color:#999;padding:8px}.rv{background:#fef5e7;padding:6px 8px}
.ok{color:#1e8449;font-weight:600}.bad{color:#c0392b;font-weight:600}.inc{color:#777;font-weight:600}
td.l,th.l{text-align:left}ul.checks{list-style:none;padding-left:4px}
</style></head><body>
<h1>fleet sim: ${r.devices} devices → ${esc(r.target.host)}:${r.target.port}${r.interrupted ? ' (interrupted)' : ''}</h1>
<p>${esc(r.startedAt)} · ${(r.durationMs / 1000).toFixed(1)} s · ${esc(r.keyType)} keys · ${r.workers} worker(s) ·
${r.sourceAddresses || 'default'} source address(es) · observer: ${esc(r.observer)}</p>
${summaryHtml(r)}
${r.notes ? notesHtml(r) : ''}
${sections.join('\n')}
</body></html>
`;
}

/** The revoke phase as checks, each passed (expected outcomes included) or failed. */
function revokeChecks(v: RevokeResult): string {
  const check = (ok: boolean, text: string) =>
    `<li><span class="${ok ? 'ok' : 'bad'}">${ok ? '✓' : '✗'}</span> ${text}</li>`;
  const refused = v.probes - v.reconnectAdmitted.length;
  const apiFailures = Object.values(v.revokeFailures).reduce((a, b) => a + b, 0);
  return `<ul class="checks">${[
    check(
      apiFailures === 0,
      `${v.requested - apiFailures}/${v.requested} revoked through the operator API (p99 ${ms(v.apiLatency.p99)} ms)`,
    ),
    check(
      v.notClosed.length === 0,
      `${v.closed}/${v.connectedAtRevoke} live connections of revoked devices dropped by the broker; revoke-to-close p50 ${ms(v.revokeToClose.p50)} ms, p99 ${ms(v.revokeToClose.p99)} ms, max ${ms(v.revokeToClose.max)} ms`,
    ),
    check(
      v.reconnectAdmitted.length === 0,
      `${refused}/${v.probes} reconnects of revoked devices refused, as expected (${v.probesWithSessionTicket} with a TLS session ticket: ${esc(
        Object.entries(v.probeOutcomes)
          .map(([k, n]) => `${k.replace(/^refused:/, '')} ${n}`)
          .join(', ') || 'none',
      )})`,
    ),
    check(v.othersDropped === 0, `${v.othersDropped} other devices dropped meanwhile`),
  ].join('')}</ul>`;
}

/** The top of the page: each phase's verdict and headline, the simulator's own limit, the storms. */
function summaryHtml(r: RunReport): string {
  const rows = verdicts(r).map((v) => {
    const cls = v.ok ? 'ok' : v.verdict === 'incomplete' ? 'inc' : 'bad';
    return `<tr><td class="l">${esc(v.phase)}</td><td class="l ${cls}">${esc(v.ok ? 'ok' : v.verdict)}</td><td class="l">${esc(v.headline)}</td></tr>`;
  });
  const busy = r.phases.map((p) => [p.name, simulatorLimit(p)] as const).filter(([, why]) => why);
  const limit = busy.length
    ? `<p class="bad">The simulator itself may have been the limit: ${esc(busy.map(([n, why]) => `${n}: ${why}`).join('; '))}. Its figures are then a floor of what the broker can do: more workers, or another machine for the load.</p>`
    : '<p class="ok">The simulator was not the limit: its CPU and event loop had room in every phase.</p>';
  const pair = stormPair(r);
  const storms = pair
    ? `<table><caption>reconnect storms side by side</caption><tr><th class="l"></th><th>${esc(pair[0].name)}</th><th>${esc(pair[1].name)}</th></tr>${stormRows(
        pair,
      )
        .map(([l, a, b]) => `<tr><td class="l">${esc(l)}</td><td>${esc(a)}</td><td>${esc(b)}</td></tr>`)
        .join('')}</table>`
    : '';
  return `<h2>Summary</h2><table><tr><th class="l">phase</th><th class="l">verdict</th><th class="l">figures</th></tr>${rows.join('')}</table>${limit}${storms}`;
}

/** Notes a caller attached (the bench's broker CPU per phase): a list of rows as a table, the rest as lines. */
function notesHtml(r: RunReport): string {
  const parts: string[] = [];
  const identities = identitiesText(r);
  if (identities) parts.push(`<p>${esc(identities)}</p>`);
  for (const [key, value] of Object.entries(r.notes ?? {})) {
    if (key === 'identities' || key === 'enrolledThisRun') continue;
    const rows =
      Array.isArray(value) && value.every((v) => v !== null && typeof v === 'object') ? value : undefined;
    if (rows && rows.length > 0) {
      const cols = [...new Set(rows.flatMap((r) => Object.keys(r as object)))];
      const cell = (v: unknown) => esc(typeof v === 'number' ? fmt(v) : String(v ?? ''));
      parts.push(
        `<table><caption>${esc(key)}</caption><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>${rows
          .map(
            (r) =>
              `<tr>${cols.map((c) => `<td>${cell((r as Record<string, unknown>)[c])}</td>`).join('')}</tr>`,
          )
          .join('')}</table>`,
      );
    } else if (key === 'enrollment') {
      parts.push(`<p>enrollment: ${esc(enrollmentText(value))}</p>`);
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const text = Object.entries(value as Record<string, unknown>)
        .map(([k, v]) => `${k} ${typeof v === 'string' || typeof v === 'number' ? v : JSON.stringify(v)}`)
        .join(', ');
      parts.push(`<p>${esc(key)}: ${esc(text)}</p>`);
    } else {
      parts.push(`<p>${esc(key)}: ${esc(typeof value === 'string' ? value : JSON.stringify(value))}</p>`);
    }
  }
  return parts.join('\n');
}

/** Writes report.json, summary.txt and report.html into `dir`; returns their paths. */
export async function writeReports(
  dir: string,
  r: RunReport,
): Promise<{ json: string; text: string; html: string }> {
  await mkdir(dir, { recursive: true });
  const paths = {
    json: join(dir, 'report.json'),
    text: join(dir, 'summary.txt'),
    html: join(dir, 'report.html'),
  };
  await writeFile(paths.json, `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(paths.text, textSummary(r));
  await writeFile(paths.html, htmlReport(r));
  return paths;
}
