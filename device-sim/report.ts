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
const lat = (l: LatencySummary) =>
  l.count ? `p50 ${l.p50} ms  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}  (n=${fmt(l.count)})` : '-';

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

export function textSummary(r: RunReport): string {
  const out: string[] = [];
  out.push(
    `fleet sim: ${r.devices} devices (${r.keyType}) -> ${r.target.host}:${r.target.port} (${r.target.servername}),` +
      ` ${r.workers} worker(s), ${r.sourceAddresses || 'default'} source address(es), ${(r.durationMs / 1000).toFixed(1)} s` +
      (r.interrupted ? '  [INTERRUPTED]' : ''),
  );
  out.push(`observer: ${r.observer}`);
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
        `  reconnects of revoked devices: ${v.probes} tried (${v.probesWithSessionTicket} with a TLS session ticket): ` +
          `${
            Object.entries(v.probeOutcomes)
              .map(([k, n]) => `${k} ${n}`)
              .join(', ') || 'none'
          }; admitted ${v.reconnectAdmitted.length}`,
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

/** A small line chart: axes with 5 ticks, one polyline per series, gaps where a value is missing. */
export function lineChart(title: string, unit: string, lines: readonly Line[], w = 560, h = 220): string {
  const pad = { l: 56, r: 12, t: 28, b: 30 };
  const xs = lines.flatMap((l) => l.points.map((p) => p[0]));
  const ys = lines.flatMap((l) => l.points.map((p) => p[1]).filter((v): v is number => v !== null));
  if (!xs.length || !ys.length) return `<div class="empty">${esc(title)}: no data</div>`;
  const x0 = Math.min(...xs);
  const x1 = Math.max(x0 + 1, ...xs);
  const y1 = niceMax(Math.max(...ys));
  const sx = (x: number) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const sy = (y: number) => h - pad.b - (y / y1) * (h - pad.t - pad.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">`,
    `<text x="${pad.l}" y="16" class="t">${esc(title)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (y1 * i) / 4;
    const y = sy(v);
    parts.push(
      `<line x1="${pad.l}" x2="${w - pad.r}" y1="${y}" y2="${y}" class="g"/>`,
      `<text x="${pad.l - 6}" y="${y + 4}" class="a" text-anchor="end">${fmtTick(v)}</text>`,
    );
    const xv = x0 + ((x1 - x0) * i) / 4;
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

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtTick(v: number): string {
  if (v >= 1000) return `${Math.round(v / 100) / 10}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
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
      return `<tr><td>${k}</td><td>${fmt(l.count)}</td><td>${l.p50}</td><td>${l.p90}</td><td>${l.p99}</td><td>${l.p999}</td><td>${l.max}</td></tr>`;
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
        lineChart('connect latency (TCP+TLS+CONNACK)', 'ms', [
          { label: 'p50', color: '#1e8449', points: s.map((x) => [x.t, x.connectP50]) },
          { label: 'p99', color: '#af601a', points: s.map((x) => [x.t, x.connectP99]) },
        ]),
      );
    }
    if (p.counts.published) {
      charts.push(
        lineChart('messages per second', 'per s', [
          { label: 'published', color: '#2471a3', points: s.map((x) => [x.t, x.counts.published]) },
          { label: 'delivered', color: '#1e8449', points: s.map((x) => [x.t, x.counts.delivered]) },
        ]),
        lineChart('publish-to-delivery latency', 'ms', [
          { label: 'p50', color: '#1e8449', points: s.map((x) => [x.t, x.deliveryP50]) },
          { label: 'p99', color: '#af601a', points: s.map((x) => [x.t, x.deliveryP99]) },
        ]),
      );
    }
    charts.push(
      lineChart('open connections', 'connections', [
        { label: 'open', color: '#6c3483', points: s.map((x) => [x.t, x.open]) },
      ]),
    );
    const errs = Object.entries(p.errors).sort((a, b) => b[1] - a[1]);
    charts.push(barChart('errors by cause', errs));
    const rv = p.revoke
      ? `<p class="rv">revoked ${p.revoke.requested} (${p.revoke.connectedAtRevoke} connected): <b>${p.revoke.closed}</b> closed by the broker,
         ${p.revoke.notClosed.length} not closed; revoke-to-close p50 ${p.revoke.revokeToClose.p50} ms, p99 ${p.revoke.revokeToClose.p99} ms,
         max ${p.revoke.revokeToClose.max} ms. Reconnects of revoked devices: ${esc(JSON.stringify(p.revoke.probeOutcomes))};
         <b>${p.revoke.reconnectAdmitted.length}</b> admitted. Other devices dropped: ${p.revoke.othersDropped}.</p>`
      : '';
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
<p>connects ${fmt(c.connected)}/${fmt(c.attempted)} (${fmt(c.resumed)} resumed, ${fmt(p.rates.connectsPerS)}/s) ·
published ${fmt(c.published)} (${fmt(p.rates.publishedPerS)}/s) · delivered ${fmt(c.delivered)} · dropped ${fmt(c.dropped)} · open at end ${fmt(p.open)}</p>
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
</style></head><body>
<h1>fleet sim: ${r.devices} devices → ${esc(r.target.host)}:${r.target.port}${r.interrupted ? ' (interrupted)' : ''}</h1>
<p>${esc(r.startedAt)} · ${(r.durationMs / 1000).toFixed(1)} s · ${esc(r.keyType)} keys · ${r.workers} worker(s) ·
${r.sourceAddresses || 'default'} source address(es) · observer: ${esc(r.observer)}</p>
${r.notes ? notesHtml(r.notes) : ''}
${sections.join('\n')}
</body></html>
`;
}

/** Notes a caller attached (the bench's broker CPU per phase): a list of rows as a table, the rest as lines. */
function notesHtml(notes: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(notes)) {
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
