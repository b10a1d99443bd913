/**
 * The adversarial suite's harness: areas of attack, each run against the real stack over real sockets, each
 * case counted as refused as expected or failed. `npm run test:adversarial` runs the full form with a seed
 * and a count and prints the table; `test/adversarial.test.ts` runs every area in a bounded, fixed-seed
 * form inside `npm test` and fails on any failed case.
 *
 * An area owns its stack (it starts what it attacks with the test helpers, and stops it): the harness only
 * gives it a seeded random source, the scale, and the ledger. A case is "refused as expected" when the
 * system did what the rule says (refused, closed, answered a 4xx with a code, delivered nothing); anything
 * else is "failed", with a detail that names what happened, so a failure reads as a defect report.
 */

/** A seeded PRNG (mulberry32): the same seed gives the same cases, so a failure can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface AreaContext {
  /** The run's seed (already mixed with the area's name, so areas do not share a sequence). */
  readonly seed: number;
  /**
   * How many cases an open-ended area (fuzz, storms) should try. The bounded form inside `npm test`
   * passes a small count; a fixed matrix ignores it and tries every cell.
   */
  readonly count: number;
  /** True in the bounded form inside `npm test`: keep it lean (CI must stay under 15 minutes). */
  readonly bounded: boolean;
  /** Uniform in [0, 1), from the seed. */
  random(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  /** Records one case: `ok` means the system behaved as the rule says. */
  record(name: string, ok: boolean, detail?: string): void;
  /** Runs `fn` as one case: true is as expected, false or a throw is failed (the throw is the detail). */
  check(name: string, fn: () => Promise<boolean | string> | boolean | string): Promise<void>;
  /** Adds a figure to the area's row (e.g. `legit_connect_pct`), printed under the table. */
  figure(name: string, value: number | string): void;
  /** Progress and context, printed only with FLEET_ADVERSARIAL_VERBOSE=1. */
  log(message: string): void;
}

export interface AdversarialArea {
  /** Short, stable, used by `--area` and in the table: "mtls-refusal", "acl", "packet-fuzz", ... */
  readonly name: string;
  /** One line: what is attacked and what the rule is. */
  readonly description: string;
  /** Default count for the full form (the bounded form uses `boundedCount`). */
  readonly fullCount: number;
  readonly boundedCount: number;
  /** Whether the area needs something absent here; a reason string skips it with that reason printed. */
  skip?(): string | undefined;
  run(ctx: AreaContext): Promise<void>;
}

export interface CaseFailure {
  readonly name: string;
  readonly detail: string;
}

export interface AreaResult {
  readonly area: string;
  readonly tried: number;
  readonly refused: number;
  readonly failed: number;
  readonly failures: readonly CaseFailure[];
  readonly figures: Readonly<Record<string, number | string>>;
  readonly seconds: number;
  /** Set when the area was skipped (and why), or when it threw outside any case. */
  readonly skipped?: string;
  readonly crashed?: string;
}

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export async function runArea(
  area: AdversarialArea,
  opts: { seed: number; count?: number; bounded: boolean; verbose?: boolean },
): Promise<AreaResult> {
  const started = performance.now();
  const skipped = area.skip?.();
  const empty = { tried: 0, refused: 0, failed: 0, failures: [], figures: {} };
  if (skipped) return { area: area.name, ...empty, seconds: 0, skipped };
  const seed = (opts.seed ^ hashName(area.name)) >>> 0;
  const random = seededRandom(seed);
  let tried = 0;
  let refused = 0;
  const failures: CaseFailure[] = [];
  const figures: Record<string, number | string> = {};
  const record = (name: string, ok: boolean, detail = '') => {
    tried++;
    if (ok) refused++;
    else failures.push({ name, detail: detail || 'not refused' });
  };
  const ctx: AreaContext = {
    seed,
    count: opts.count ?? (opts.bounded ? area.boundedCount : area.fullCount),
    bounded: opts.bounded,
    random,
    int: (n) => Math.floor(random() * n),
    record,
    async check(name, fn) {
      try {
        const r = await fn();
        record(name, r === true, typeof r === 'string' ? r : '');
      } catch (err) {
        record(name, false, `threw: ${err instanceof Error ? err.message : String(err)}`);
      }
    },
    figure(name, value) {
      figures[name] = value;
    },
    log(message) {
      if (opts.verbose) process.stderr.write(`[${area.name}] ${message}\n`);
    },
  };
  let crashed: string | undefined;
  try {
    await area.run(ctx);
  } catch (err) {
    crashed = err instanceof Error ? (err.stack ?? err.message) : String(err);
  }
  return {
    area: area.name,
    tried,
    refused,
    failed: failures.length + (crashed ? 1 : 0),
    failures,
    figures,
    seconds: (performance.now() - started) / 1000,
    ...(crashed ? { crashed } : {}),
  };
}

/** The table `npm run test:adversarial` prints (and the bounded test prints too). */
export function formatTable(results: readonly AreaResult[], seed: number): string {
  const head = ['area', 'cases tried', 'refused as expected', 'failed', 'seconds'];
  const rows = results.map((r) => [
    r.area,
    r.skipped ? '-' : String(r.tried),
    r.skipped ? '-' : String(r.refused),
    r.skipped ? `skipped: ${r.skipped}` : String(r.failed),
    r.seconds.toFixed(1),
  ]);
  const total = results.reduce(
    (t, r) => ({ tried: t.tried + r.tried, refused: t.refused + r.refused, failed: t.failed + r.failed }),
    { tried: 0, refused: 0, failed: 0 },
  );
  rows.push(['total', String(total.tried), String(total.refused), String(total.failed), '']);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  const out = [
    `adversarial suite, seed ${seed}`,
    line(head),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
  ];
  for (const r of rows) out.push(line(r));
  for (const r of results) {
    const figs = Object.entries(r.figures);
    if (figs.length) out.push(`${r.area}: ${figs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
    for (const f of r.failures.slice(0, 20)) out.push(`FAILED ${r.area} / ${f.name}: ${f.detail}`);
    if (r.failures.length > 20) out.push(`... and ${r.failures.length - 20} more failures in ${r.area}`);
    if (r.crashed) out.push(`CRASHED ${r.area}: ${r.crashed}`);
  }
  return out.join('\n');
}
