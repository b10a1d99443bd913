/**
 * `fleet sim` against the running system, the way `npm start` runs it: the provisioning service and the
 * broker on one CA (made at test time) and one registry (PGlite in memory), both started here. The
 * simulator enrolls through the station batch API (its station created by the operator API), connects,
 * publishes, and revokes under load through the operator API.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../broker/index.ts';
import { chooseEnrollMode } from '../cli/commands/sim.ts';
import { runCli } from '../cli/main.ts';
import { parseSimFlags } from '../device-sim/flags.ts';
import { SIM_STATION_ID } from '../device-sim/http.ts';
import type { RunReport } from '../device-sim/report.ts';
import { startBroker } from './helpers/broker.ts';
import { type Harness, pgliteBackend, startHarness } from './helpers/provisioning.ts';

let h: Harness;
let broker: Broker;
let port: number;
let rootFile: string;

beforeAll(async () => {
  h = await startHarness(pgliteBackend());
  // Admission wide open: these runs check the simulator's paths, not the broker's storm protection.
  ({ broker, port } = await startBroker(h.ca.ca, h.registry, {
    limits: {
      connectRatePerS: 0,
      connectBurst: 100_000,
      maxHandshakesPerSource: 0,
      connectRatePerSourcePerS: 0,
    },
  }));
  rootFile = h.ca.files.root;
}, 60_000);
afterAll(async () => {
  await broker?.stop();
  await h?.close();
});

/** Runs `fleet sim` in process with the service's URL, the operator credential and the broker. */
async function sim(args: string[]): Promise<{ code: number; report: RunReport; stderr: string }> {
  let out = '';
  let err = '';
  const io = {
    out: {
      write: (s: string) => {
        out += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream,
    err: {
      write: (s: string) => {
        err += s;
        return true;
      },
    } as unknown as NodeJS.WritableStream,
  };
  const code = await runCli(
    [
      'sim',
      '--json',
      '--data',
      join(h.ca.dir, 'data'),
      '--api',
      h.apiUrl,
      '--ca',
      rootFile,
      '--operator-cert',
      h.operator.certPath,
      '--operator-key',
      h.operator.keyPath,
      '--target',
      `127.0.0.1:${port}`,
      '--identities',
      join(h.ca.dir, 'identities'),
      '--out',
      join(h.ca.dir, `report-${Date.now()}`),
      '--quiet',
      ...args,
    ],
    {},
    io,
  );
  if (code !== 0) throw new Error(`fleet sim exited ${code}: ${err}${out}`);
  return { code, report: (JSON.parse(out) as { report: RunReport }).report, stderr: err };
}

describe('fleet sim through the provisioning API', () => {
  it('auto picks the API while the service answers, local only when nothing listens', async () => {
    const root = await readFile(rootFile, 'utf8');
    const creds = { cert: h.operator.certPem, key: h.operator.keyPem };
    await expect(chooseEnrollMode(parseSimFlags([]), h.apiUrl, root, creds)).resolves.toMatchObject({
      mode: 'api',
    });
    // Port 1 on loopback: nothing listens there.
    await expect(
      chooseEnrollMode(parseSimFlags([]), 'https://localhost:1', root, creds),
    ).resolves.toMatchObject({ mode: 'local' });
    await expect(
      chooseEnrollMode(parseSimFlags(['--enroll', 'local']), h.apiUrl, root, creds),
    ).resolves.toMatchObject({ mode: 'local' });
  });

  it('30 devices enrolled through the batch API by the station it creates, connected, telemetry delivered', async () => {
    const { report } = await sim([
      '--enroll',
      'api',
      '--devices',
      '30',
      '--workers',
      '2',
      '--connect-concurrency',
      '10',
      '--telemetry',
      '2',
      '--msg-rate',
      '2',
      '--qos',
      '1',
    ]);
    expect(report.notes).toMatchObject({
      enrolledThisRun: 30,
      enrollment: { mode: 'api', station: SIM_STATION_ID },
    });
    // Every device is in the registry, enrolled by the station the simulator created through the API.
    expect(await h.registry.getPrincipal('station', SIM_STATION_ID)).toMatchObject({
      status: 'active',
      products: ['sim'],
    });
    for (let i = 0; i < 30; i++) {
      const id = `sim-${String(i).padStart(6, '0')}`;
      expect(await h.registry.getDevice(id)).toMatchObject({
        id,
        enrolledBy: SIM_STATION_ID,
        status: 'active',
      });
    }
    expect(report.observer).toBe('connected');
    const [connect, telemetry] = report.phases;
    expect(connect!.counts).toMatchObject({ attempted: 30, connected: 30, failed: 0 });
    expect(connect!.errors).toEqual({});
    const t = telemetry!.counts;
    expect(t.published).toBeGreaterThan(60);
    expect(t.acked).toBe(t.published);
    expect(t.delivered).toBe(t.published);
    expect(telemetry!.open).toBe(30);
  }, 120_000);

  it('revoke under load through the operator API: the revoked are dropped and refused, the rest stay; the next run leaves them out', async () => {
    const { report } = await sim([
      '--devices',
      '30',
      '--workers',
      '2',
      '--connect-concurrency',
      '10',
      '--revoke',
      '4',
      '--revoke-at',
      '1',
      '--msg-rate',
      '2',
    ]);
    // Cached identities: nothing enrolled; auto found the service.
    expect(report.notes).toMatchObject({ enrolledThisRun: 0, enrollment: { mode: 'api' } });
    const phase = report.phases[1]!;
    const rv = phase.revoke!;
    expect(rv).toMatchObject({
      requested: 4,
      revokeFailures: {},
      connectedAtRevoke: 4,
      closed: 4,
      notClosed: [],
      probes: 4,
      reconnectAdmitted: [],
      othersDropped: 0,
    });
    expect(rv.revokeToClose.count).toBe(4);
    expect(rv.revokeToClose.max).toBeLessThan(3000);
    expect(rv.apiLatency.count).toBe(4);
    expect(Object.keys(rv.probeOutcomes).every((k) => k.startsWith('refused:'))).toBe(true);
    expect(phase.open).toBe(26);
    expect(phase.counts.published).toBeGreaterThan(0);
    const victims = ['sim-000000', 'sim-000007', 'sim-000015', 'sim-000022'];
    for (const id of victims) expect(await h.registry.getDevice(id)).toMatchObject({ status: 'revoked' });
    expect(await h.registry.getDevice('sim-000001')).toMatchObject({ status: 'active' });
    // Revoked by the operator through the API, one audit entry each.
    const audit = await h.registry.listAudit({ action: 'subject.revoke', limit: 100 });
    const byOperator = audit.items.filter((a) => a.actor === `operator:${h.operator.id}`);
    expect(byOperator.map((a) => a.subject).sort()).toEqual(victims.map((id) => `device:${id}`));
    const recorded = await readFile(join(h.ca.dir, 'identities', 'revoked.txt'), 'utf8');
    expect(recorded.trim().split('\n').sort()).toEqual(victims);

    // The next run with the same directory leaves the revoked devices out and enrolls 4 new ones.
    // Three workers: ids now have gaps, and every worker still gets its full share of the connects.
    const next = await sim(['--devices', '30', '--workers', '3', '--no-observer']);
    expect(next.report.notes).toMatchObject({ enrolledThisRun: 4 });
    expect(next.report.phases[0]!.counts).toMatchObject({ attempted: 30, connected: 30, failed: 0 });
  }, 120_000);
});
