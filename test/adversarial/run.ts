/**
 * `npm run test:adversarial [-- --seed N] [--count N] [--area NAME ...]`: the full form of the adversarial
 * suite. Prints the table (cases tried, refused as expected, failed, per area) and exits 1 when any case
 * failed. The seed defaults to the current time and is printed, so a failing run can be replayed.
 */
import 'reflect-metadata';
import { AREAS } from './areas/index.ts';
import { type AreaResult, formatTable, runArea } from './harness.ts';

function parse(argv: string[]): { seed: number; count?: number; areas: string[] } {
  const out: { seed: number; count?: number; areas: string[] } = { seed: Date.now() >>> 0, areas: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const number = () => {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < 0)
        throw new Error(`${flag} needs a non-negative integer, got ${value}`);
      i++;
      return n;
    };
    if (flag === '--seed') out.seed = number() >>> 0;
    else if (flag === '--count') out.count = number();
    else if (flag === '--area' && value) {
      out.areas.push(value);
      i++;
    } else throw new Error(`unknown argument ${flag} (use --seed N, --count N, --area NAME)`);
  }
  const known = new Set(AREAS.map((a) => a.name));
  for (const a of out.areas)
    if (!known.has(a)) throw new Error(`no area ${a} (areas: ${[...known].join(', ')})`);
  return out;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const verbose = process.env.FLEET_ADVERSARIAL_VERBOSE === '1';
  const results: AreaResult[] = [];
  for (const area of AREAS) {
    if (opts.areas.length && !opts.areas.includes(area.name)) continue;
    process.stderr.write(`running ${area.name}: ${area.description}\n`);
    results.push(
      await runArea(area, {
        seed: opts.seed,
        bounded: false,
        verbose,
        ...(opts.count ? { count: opts.count } : {}),
      }),
    );
  }
  process.stdout.write(`${formatTable(results, opts.seed)}\n`);
  process.exitCode = results.some((r) => r.failed > 0) ? 1 : 0;
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
});
