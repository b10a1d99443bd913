/**
 * The simulator against the real broker (started here on a free port, with a CA made at test time): a
 * 50-device run through forked load workers, and a revoke under load.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunReport, textSummary, verdicts, writeReports } from '../device-sim/report.ts';
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
    expect(storm!.storm).toMatchObject({ dropped: 50, attempted: 50, notConnectedAtStart: 0 });
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
    // The refused reconnects and the closes are the check passing: counted apart, never as failures.
    expect(phase.counts).toMatchObject({ failed: 0, dropped: 0, revokedClosed: 4, revokedRefused: 4 });
    expect(phase.errors).toEqual({});
    expect(verdicts(report).find((v) => v.phase === 'revoke')).toMatchObject({ ok: true });
    expect(textSummary(report)).toMatch(/revoke +ok/);
    expect(phase.open).toBe(26);
    expect(phase.counts.published).toBeGreaterThan(0);
    const revoked = await Promise.all(
      ['rv-000000', 'rv-000007', 'rv-000015', 'rv-000022'].map((id) => bed.registry.getDevice(id)),
    );
    expect(revoked.map((d) => d?.status)).toEqual(['revoked', 'revoked', 'revoked', 'revoked']);
  });
});

describe('refusals by cause, storms over the whole fleet', () => {
  it('a broker refusing at admission is counted as refused_before_tls, not as a TLS failure or timeout', async () => {
    const { startBroker } = await import('./helpers/broker.ts');
    // Two connections admitted, then a token every 10 s: the rest are closed before any TLS byte.
    const tight = await startBroker(bed.ca, bed.registry, {
      limits: { connectRatePerS: 0.1, connectBurst: 2 },
    });
    try {
      const identities = await bed.identities(8, { idPrefix: 'adm-' });
      const scenario = parseScenario({
        devices: 8,
        observer: false,
        phases: [{ type: 'connect', concurrency: 8 }],
      });
      const report = await runScenario({
        scenario,
        identities,
        target: { ...bed.target, port: tight.port },
        inProcess: true,
      });
      expect(report.phases[0]!.counts).toMatchObject({ attempted: 8, connected: 2, failed: 6 });
      expect(report.phases[0]!.errors).toEqual({ refused_before_tls: 6 });
      expect(report.phases[0]!.simLoad?.intervals).toBeGreaterThan(0);
    } finally {
      await tight.broker.stop();
    }
  });

  it('storm retries: devices refused at admission retry with backoff until the whole fleet is back', async () => {
    const { startBroker } = await import('./helpers/broker.ts');
    const tight = await startBroker(bed.ca, bed.registry, {
      limits: { connectRatePerS: 4, connectBurst: 8 },
    });
    try {
      const identities = await bed.identities(8, { idPrefix: 'rty-' });
      const scenario = parseScenario({
        devices: 8,
        observer: false,
        phases: [
          { type: 'connect', concurrency: 8 },
          {
            type: 'storm',
            name: 'storm',
            jitter: { distribution: 'none' },
            retries: 8,
            backoffMs: 250,
            settleS: 0,
          },
        ],
      });
      const report = await runScenario({
        scenario,
        identities,
        target: { ...bed.target, port: tight.port },
        inProcess: true,
      });
      expect(report.phases[0]!.counts).toMatchObject({ connected: 8, failed: 0 });
      const storm = report.phases[1]!;
      const st = storm.storm!;
      // The bucket was empty: most of the wave was refused before TLS, and came back by retrying.
      expect(storm.errors.refused_before_tls).toBeGreaterThan(0);
      expect(Object.keys(storm.errors)).toEqual(['refused_before_tls']);
      expect(st).toMatchObject({ attempted: 8, notBack: 0 });
      expect(st.retryRounds).toBeGreaterThan(0);
      expect(storm.counts.attempted).toBe(8 + st.retryAttempts);
      expect(storm.counts.connected).toBe(8);
      expect(st.backAfterMs).toBeGreaterThan(0);
      expect(storm.open).toBe(8);
    } finally {
      await tight.broker.stop();
    }
  });

  it('a server that accepts TCP but never answers the ClientHello: timeout_tls_server_silent', async () => {
    const { createServer } = await import('node:net');
    const { createSecureContext } = await import('node:tls');
    const { connectMqtt } = await import('../device-sim/client.ts');
    const held: import('node:net').Socket[] = [];
    const server = createServer((s) => held.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const r = await connectMqtt({
        host: '127.0.0.1',
        port: (server.address() as { port: number }).port,
        servername: 'localhost',
        secureContext: createSecureContext({ ca: bed.ca.rootPem }),
        clientId: 'silent',
        keepaliveS: 30,
        timeoutMs: 300,
      });
      expect(r).toMatchObject({ ok: false, cause: 'timeout_tls_server_silent', stage: 'tls' });
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  });

  it('a storm brings back every device, also those not connected when it started, and says how many', async () => {
    const identities = await bed.identities(20, { idPrefix: 'st-' });
    const scenario = parseScenario({
      devices: 20,
      observer: false,
      phases: [
        { type: 'connect', name: 'half', count: 10, concurrency: 10 },
        {
          type: 'storm',
          name: 'storm',
          resume: true,
          jitter: { distribution: 'uniform', maxMs: 200 },
          settleS: 0.2,
        },
      ],
    });
    const report = await runScenario({ scenario, identities, target: bed.target, inProcess: true });
    expect(report.phases[0]!.open).toBe(10);
    const storm = report.phases[1]!;
    expect(storm.storm).toMatchObject({
      dropped: 10,
      attempted: 20,
      connectedAtStart: 10,
      notConnectedAtStart: 10,
      revokedLeftOut: 0,
      retryRounds: 0,
      notBack: 0,
    });
    expect(storm.counts).toMatchObject({ attempted: 20, connected: 20, failed: 0 });
    // Only the ten that had a session could resume it.
    expect(storm.counts.resumed).toBeLessThanOrEqual(10);
    expect(storm.open).toBe(20);
  });
});

describe('identities from a directory and the command line', () => {
  it('a directory of key/certificate pairs drives a run as is (as for mosquitto)', async () => {
    const { readIdentityDir } = await import('../device-sim/identities.ts');
    const made = await bed.identities(5, { idPrefix: 'dir-' });
    const identities = await readIdentityDir(made.dir, { devices: 5 });
    expect(identities.devices.map((d) => d.id)).toEqual(made.devices.map((d) => d.id));
    await expect(readIdentityDir(made.dir, { devices: 6 })).rejects.toMatchObject({
      code: 'SIM_IDENTITIES_INVALID',
    });
    const scenario = parseScenario({ devices: 5, phases: [{ type: 'connect', concurrency: 5 }] });
    const report = await runScenario({ scenario, identities, target: bed.target, inProcess: true });
    expect(report.phases[0]!.counts).toMatchObject({ connected: 5, failed: 0 });
  });

  it('a device the broker does not know is refused with CONNACK 5 and counted by cause', async () => {
    const { readIdentityDir } = await import('../device-sim/identities.ts');
    const made = await bed.identities(3, { idPrefix: 'gone-' });
    for (const d of made.devices) await bed.operator.revokeDevice(d.id, 'keyCompromise');
    const identities = await readIdentityDir(made.dir, { devices: 3 });
    const scenario = parseScenario({
      devices: 3,
      observer: false,
      phases: [{ type: 'connect', concurrency: 3 }],
    });
    const report = await runScenario({ scenario, identities, target: bed.target, inProcess: true });
    expect(report.phases[0]!.counts).toMatchObject({ attempted: 3, connected: 0, failed: 3 });
    expect(report.phases[0]!.errors).toEqual({ connack_5_not_authorized: 3 });
  });

  it('fleet sim: a bad flag is a usage error (exit 2, as for every command); a non-loopback target must be named', async () => {
    const { runCli } = await import('../cli/main.ts');
    const sink = { write: () => true } as unknown as NodeJS.WritableStream;
    expect(await runCli(['sim', '--qos', '3', '--telemetry', '1'], {}, { out: sink, err: sink })).toBe(2);
    // A non-loopback broker from configuration is not loaded unless named with --target.
    const { resolveTarget } = await import('../cli/commands/sim.ts');
    const { loadConfig } = await import('../config/index.ts');
    const { parseSimFlags } = await import('../device-sim/flags.ts');
    const remote = loadConfig({ FLEET_BROKER_URL: 'mqtts://192.0.2.10:8883' });
    await expect(resolveTarget(parseSimFlags([]), remote)).rejects.toMatchObject({
      code: 'SIM_TARGET_FORBIDDEN',
    });
    const local = await resolveTarget(parseSimFlags([]), loadConfig({ FLEET_MQTT_PORT: '18883' }));
    expect(local).toMatchObject({ port: 18883, servername: 'localhost', loopback: true });
    const named = await resolveTarget(parseSimFlags(['--target', '192.0.2.10:8883']), remote);
    expect(named).toMatchObject({ host: '192.0.2.10', loopback: false });
  });
});
