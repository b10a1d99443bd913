/**
 * The adversarial suite's bounded, fixed-seed form: every area runs with its small count against the real
 * stack, and the test fails on any case not refused as expected (each failure is named in the message).
 * The full form is `npm run test:adversarial -- --seed N --count N`.
 */
import { describe, expect, it } from 'vitest';
import { AREAS } from './adversarial/areas/index.ts';
import { formatTable, runArea } from './adversarial/harness.ts';

const SEED = 20261202;

describe('adversarial suite (bounded, seed 20261202)', () => {
  for (const area of AREAS) {
    it(`${area.name}: ${area.description}`, { timeout: 300_000 }, async () => {
      const r = await runArea(area, { seed: SEED, bounded: true });
      console.log(formatTable([r], SEED));
      if (r.skipped) return;
      expect(r.crashed, r.crashed).toBeUndefined();
      expect(r.failures.map((f) => `${f.name}: ${f.detail}`)).toEqual([]);
      expect(r.tried).toBeGreaterThan(0);
    });
  }
});
