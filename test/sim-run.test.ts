/**
 * The simulator against the real broker (started here on a free port, with a CA made at test time): a
 * 50-device run through forked load workers, and a revoke under load.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunReport, writeReports } from '../device-sim/report.ts';
import { runScenario } from '../device-sim/runner.ts';
import { parseScenario } from '../device-sim/scenario.ts';
import { type SimBed, simBed } from './helpers/sim.ts';

let bed: SimBed;
beforeAll(async () => {
  bed = await simBed();
});
afterAll(async () => {
  await bed?.close();
});

describe('fleet sim against the real broker', () => {
  it('50 devices connect, publish QoS 1, storm with TLS resumption; the report counts every one', async () => {
    const identities = await bed.identities(50, { idPrefix: 'run-' });
    expect(identities.enrolled).toBe(50);
    expect(identities.observer).toBeDefined();
    // Cached: a second call enrolls nothing.
    expect((await bed.identities(50, { idPrefix: 'run-' })).enrolled).toBe(0);
    const scenario = parseScenario({
      devices: 50,
      workers: 2,
      idPrefix: 'run-',
      phases: [
        { type: 'connect', name: 'connect', rate: 250 },
        { type: 'telemetry', name: 'telemetry', durationS: 2, ratePerDevice: 2, qos: 1, payloadBytes: 32 },
        {
          type: 'storm',
          name: 'storm',
          resume: true,
          jitter: { distribution: 'uniform', maxMs: 300 },
          settleS: 0.5,
        },
      ],
    });
    const report = await runScenario({ scenario, identities, target: bed.target });
    expect(report.workers).toBe(2);
    expect(report.observer).toBe('connected');
    const [connect, telemetry, storm] = report.phases;
    expect(connect!.counts).toMatchObject({ attempted: 50, connected: 50, failed: 0 });
    expect(connect!.open).toBe(50);
    expect(connect!.latency.tls.count).toBe(50);
    expect(connect!.latency.connect.p99).toBeGreaterThan(0);
    expect(connect!.errors).toEqual({});

    const t = telemetry!.counts;
    expect(t.published).toBeGreaterThan(100);
    expect(t.acked).toBe(t.published);
    expect(t.delivered).toBe(t.published);
    expect(telemetry!.latency.delivery.count).toBe(t.published);
    expect(telemetry!.unacked).toBe(0);

    expect(storm!.counts).toMatchObject({ attempted: 50, connected: 50, failed: 0 });
    expect(storm!.counts.resumed).toBeGreaterThanOrEqual(45);
    expect(storm!.open).toBe(50);

    const files = await writeReports(join(bed.dir, 'report'), report);
    const back = JSON.parse(await readFile(files.json, 'utf8')) as RunReport;
    expect(back.phases.map((p) => p.counts.connected)).toEqual([50, 0, 50]);
    expect(await readFile(files.html, 'utf8')).toContain('<svg');
  });

  it('revoke under load: the revoked are dropped and refused (even with a session ticket), the rest stay', async () => {
    const identities = await bed.identities(30, { idPrefix: 'rv-' });
    const scenario = parseScenario({
      devices: 30,
      idPrefix: 'rv-',
      phases: [
        { type: 'connect', name: 'connect', concurrency: 10 },
        {
          type: 'revoke',
          name: 'revoke',
          count: 4,
          atS: 0.5,
          durationS: 3,
          telemetry: { ratePerDevice: 5, qos: 0 },
        },
      ],
    });
    const report = await runScenario({
      scenario,
      identities,
      target: bed.target,
      operator: bed.operator,
      inProcess: true,
    });
    const phase = report.phases[1]!;
    const rv = phase.revoke!;
    expect(rv.requested).toBe(4);
    expect(rv.connectedAtRevoke).toBe(4);
    expect(rv.closed).toBe(4);
    expect(rv.notClosed).toEqual([]);
    expect(rv.revokeToClose.count).toBe(4);
    expect(rv.revokeToClose.max).toBeLessThan(3000);
    expect(rv.probes).toBe(4);
    expect(rv.reconnectAdmitted).toEqual([]);
    expect(Object.keys(rv.probeOutcomes).every((k) => k.startsWith('refused:'))).toBe(true);
    expect(rv.probesWithSessionTicket).toBe(4);
    expect(rv.othersDropped).toBe(0);
    expect(phase.open).toBe(26);
    expect(phase.counts.published).toBeGreaterThan(0);
    const revoked = await Promise.all(
      ['rv-000000', 'rv-000007', 'rv-000015', 'rv-000022'].map((id) => bed.registry.getDevice(id)),
    );
    expect(revoked.map((d) => d?.status)).toEqual(['revoked', 'revoked', 'revoked', 'revoked']);
  });
});
