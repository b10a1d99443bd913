/**
 * The audit log has a bound (issue 9 item 7): a refusal of an identified caller is a security fact and is
 * kept, but repeated refusals are aggregated (one row per caller, action, outcome and error code per window,
 * with a count, the first and last time, and a sample of the subjects named), so a fuzzing caller cannot
 * grow the database by a row a request. Successes stay one row each. PGlite, and PostgreSQL when
 * DATABASE_URL is set; the API door with real TLS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, createStation, type Harness, startHarness, uid } from './helpers/provisioning.ts';

describe.each(backends('audit'))('audit aggregation on $name', (backend) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
    await backend.cleanup();
  });

  const rowsOf = async (actor: string) => (await h.registry.listAudit({ actor, limit: 1000 })).items;

  it('repeated refusals of one caller with one code are one row with a count, first and last time', async () => {
    const actor = `station:${uid('fuzz')}`;
    const n = 60;
    const t0 = Date.now();
    for (let i = 0; i < n; i++) {
      await h.registry.appendAudit({
        actor,
        action: 'device.enroll',
        subject: `device:d-${i % 30}`,
        outcome: 'denied',
        details: { code: 'CSR_MALFORMED' },
      });
    }
    // Another code is another fact, and a success is never folded into anything.
    await h.registry.appendAudit({
      actor,
      action: 'device.enroll',
      outcome: 'denied',
      details: { code: 'X_Y' },
    });
    await h.registry.appendAudit({
      actor,
      action: 'device.enroll',
      outcome: 'success',
      details: { serial: 'ab' },
    });
    await h.registry.appendAudit({
      actor,
      action: 'device.enroll',
      outcome: 'success',
      details: { serial: 'cd' },
    });
    const rows = await rowsOf(actor);
    const malformed = rows.filter((r) => r.details?.['code'] === 'CSR_MALFORMED');
    // One window, or two when the run straddles a window boundary: never one row a refusal.
    expect(malformed.length).toBeGreaterThanOrEqual(1);
    expect(malformed.length).toBeLessThanOrEqual(2);
    expect(malformed.reduce((s, r) => s + r.count, 0)).toBe(n);
    const first = malformed.at(-1)!;
    expect(first.at.getTime()).toBeGreaterThanOrEqual(t0 - 1000);
    expect(first.lastAt!.getTime()).toBeGreaterThanOrEqual(first.at.getTime());
    // The subjects named are kept as a bounded sample (the first one in the subject column).
    expect(first.subject).toBe('device:d-0');
    const sample = first.details?.['subjects'] as string[];
    expect(sample.length).toBeLessThanOrEqual(20);
    expect(sample).toContain('device:d-1');
    expect(rows.filter((r) => r.details?.['code'] === 'X_Y')).toHaveLength(1);
    expect(rows.filter((r) => r.outcome === 'success')).toHaveLength(2);
    expect(rows.filter((r) => r.outcome === 'success').every((r) => r.count === 1)).toBe(true);
  });

  it('a caller refused 200 times at the API door adds at most two rows per code, counting all 200', async () => {
    const station = await createStation(h, { products: ['thermo'] });
    const actor = `station:${station.id}`;
    const before = (await rowsOf(actor)).length;
    for (let i = 0; i < 200; i++) {
      const r = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: `fz-${i}`,
        product: 'not-in-scope',
        csr: h.keyAndCsr(`fz-${i}`).csrPem,
      });
      expect(r.json.error.code).toBe('PRODUCT_NOT_IN_SCOPE');
    }
    const rows = (await rowsOf(actor)).filter((r) => r.details?.['code'] === 'PRODUCT_NOT_IN_SCOPE');
    expect(rows.length).toBeLessThanOrEqual(2);
    expect(rows.reduce((s, r) => s + r.count, 0)).toBe(200);
    expect((await rowsOf(actor)).length - before).toBeLessThanOrEqual(2);
  });
});
