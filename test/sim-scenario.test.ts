import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { scenarioFrom } from '../cli/commands/sim.ts';
import { classifyError, connackCause, publishPacket } from '../device-sim/client.ts';
import { FlagError, ScenarioError, SimError } from '../device-sim/errors.ts';
import { parseSimFlags, parseTarget } from '../device-sim/flags.ts';
import { htmlReport, textSummary } from '../device-sim/report.ts';
import { loopbackSources, planWorkers } from '../device-sim/runner.ts';
import { deviceId, fillTopic, parseScenario } from '../device-sim/scenario.ts';
import { sampleJitter } from '../device-sim/worker.ts';

describe('scenario files', () => {
  it('a full scenario parses with defaults filled in and is frozen', () => {
    const s = parseScenario({
      devices: 10,
      phases: [
        { type: 'connect', rate: 50, holdS: 1 },
        { type: 'telemetry', durationS: 2, qos: 1 },
        { type: 'revoke', count: 2, telemetry: { ratePerDevice: 2 } },
        { type: 'storm', resume: true, jitter: { distribution: 'exponential', meanMs: 100 } },
        { type: 'hold', durationS: 1 },
      ],
    });
    expect(s.keyType).toBe('P-256');
    expect(s.phases[0]).toMatchObject({ type: 'connect', rate: 50, concurrency: undefined, holdS: 1 });
    expect(s.phases[1]).toMatchObject({ qos: 1, payloadBytes: 64, topic: 'devices/{id}/telemetry' });
    expect(s.phases[2]).toMatchObject({ count: 2, atS: 1, durationS: 6, reason: 'keyCompromise' });
    expect(s.phases[3]).toMatchObject({ jitter: { distribution: 'exponential', meanMs: 100, maxMs: 500 } });
    expect(Object.isFrozen(s.phases[1])).toBe(true);
  });

  it('a connect phase without rate or concurrency runs 100 in flight', () => {
    const s = parseScenario({ phases: [{ type: 'connect' }] });
    expect(s.phases[0]).toMatchObject({ concurrency: 100, rate: undefined });
  });

  it.each([
    [{ phases: [] }, 'phases'],
    [{ phases: [{ type: 'dance' }] }, 'phases[0].type'],
    [{ phases: [{ type: 'connect', rate: 10, concurrency: 5 }] }, 'phases[0].rate'],
    [{ phases: [{ type: 'connect', rate: -1 }] }, 'phases[0].rate'],
    [{ phases: [{ type: 'connect', rate: '10' }] }, 'phases[0].rate'],
    [{ phases: [{ type: 'connect', speed: 10 }] }, 'phases[0].speed'],
    [{ phases: [{ type: 'telemetry' }] }, 'phases[0].durationS'],
    [{ phases: [{ type: 'telemetry', durationS: 1, qos: 2 }] }, 'phases[0].qos'],
    [{ phases: [{ type: 'telemetry', durationS: 1, topic: 'devices/+/telemetry' }] }, 'phases[0].topic'],
    [{ phases: [{ type: 'telemetry', durationS: 1, topic: 'devices/{name}/x' }] }, 'phases[0].topic'],
    [{ phases: [{ type: 'telemetry', durationS: 1, payloadBytes: 10_000_000 }] }, 'phases[0].payloadBytes'],
    [{ devices: 5, phases: [{ type: 'revoke', count: 6 }] }, 'phases[0].count'],
    [{ phases: [{ type: 'revoke', count: 1, atS: 5, durationS: 3 }] }, 'phases[0].durationS'],
    [{ phases: [{ type: 'storm', jitter: { distribution: 'gaussian' } }] }, 'phases[0].jitter.distribution'],
    [{ phases: [{ type: 'storm', jitter: { distribution: 'uniform' } }] }, 'phases[0].jitter.maxMs'],
    [{ devices: 0, phases: [{ type: 'connect' }] }, 'devices'],
    [{ devices: 1.5, phases: [{ type: 'connect' }] }, 'devices'],
    [{ keyType: 'DSA', phases: [{ type: 'connect' }] }, 'keyType'],
    [{ idPrefix: 'a/b', phases: [{ type: 'connect' }] }, 'idPrefix'],
    [{ observerFilter: 'devices/#/x', phases: [{ type: 'connect' }] }, 'observerFilter'],
    [{ target: 'x', phases: [{ type: 'connect' }] }, 'target'],
    [
      {
        phases: [
          { type: 'hold', durationS: 1, name: 'a' },
          { type: 'hold', durationS: 1, name: 'a' },
        ],
      },
      'phases[1].name',
    ],
    ['not an object', '(root)'],
  ])('%j is refused at %s', (input, position) => {
    let err: unknown;
    try {
      parseScenario(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ScenarioError);
    expect((err as ScenarioError).code).toBe('SIM_SCENARIO_INVALID');
    expect((err as ScenarioError).position).toBe(position);
  });

  it('a scenario file is read, and flags override its run settings', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fleet-sim-scn-'));
    try {
      const file = join(dir, 's.json');
      await writeFile(file, JSON.stringify({ devices: 10, phases: [{ type: 'connect', concurrency: 5 }] }));
      const s = await scenarioFrom(parseSimFlags(['--scenario', file, '--devices', '20', '--workers', '1']));
      expect(s.devices).toBe(20);
      expect(s.workers).toBe(1);
      await writeFile(file, '{ not json');
      await expect(scenarioFrom(parseSimFlags(['--scenario', file]))).rejects.toMatchObject({
        code: 'SIM_SCENARIO_UNREADABLE',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('flags', () => {
  it('phase flags build connect, telemetry, revoke and both storms in order', () => {
    const f = parseSimFlags([
      '--devices',
      '50',
      '--connect-rate',
      '100',
      '--hold',
      '2',
      '--telemetry',
      '5',
      '--msg-rate',
      '2',
      '--qos',
      '1',
      '--revoke',
      '3',
      '--storm',
      'both',
      '--jitter',
      'exp:200',
    ]);
    expect(f.phases!.map((p) => p.name)).toEqual([
      'connect',
      'telemetry',
      'revoke',
      'storm-full',
      'storm-resumed',
    ]);
    expect(f.phases![0]).toMatchObject({ rate: 100, holdS: 2 });
    expect(f.phases![1]).toMatchObject({ durationS: 5, ratePerDevice: 2, qos: 1 });
    expect(f.phases![2]).toMatchObject({ count: 3, telemetry: { ratePerDevice: 2, qos: 1 } });
    expect(f.phases![4]).toMatchObject({
      resume: true,
      jitter: { distribution: 'exponential', meanMs: 200 },
    });
  });

  it.each([
    [['--qos', '2', '--telemetry', '1'], '--qos'],
    [['--devices', 'many'], '--devices'],
    [['--devices', '-3'], '--devices'],
    [['--connect-rate', '10', '--connect-concurrency', '5'], '--connect-rate'],
    [['--storm', 'sometimes'], '--storm'],
    [['--storm', 'full', '--jitter', 'gauss:3'], '--jitter'],
    [['--jitter', 'uniform:10'], '--jitter'],
    [['--msg-rate', '5'], '--msg-rate'],
    [['--revoke', '10', '--devices', '10'], '--revoke'],
    [['--revoke-at', '1'], '--revoke-at'],
    [['--scenario', 'x.json', '--telemetry', '5'], '--telemetry'],
    [['--target', 'localhost'], '--target'],
    [['--target', 'http://x:1'], '--target'],
    [['--target', 'h:70000'], '--target'],
    [['--enroll', 'magic'], '--enroll'],
    [['--station-cert', 'a.pem'], '--station-cert'],
    [['--api', 'http://plain'], '--api'],
    [['--key-type', 'P-521'], '--key-type'],
    [['--frobnicate'], '--frobnicate'],
    [['stray'], 'stray'],
  ])('%j is refused naming %s', (argv, flag) => {
    let err: unknown;
    try {
      parseSimFlags(argv);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FlagError);
    expect((err as FlagError).code).toBe('SIM_FLAG_INVALID');
    expect((err as FlagError).flag).toBe(flag);
  });

  it('a topic template with a wildcard given by flag is refused by the scenario rules', () => {
    expect(() => parseSimFlags(['--telemetry', '1', '--topic', 'devices/#'])).toThrow(SimError);
  });

  it('targets: host:port, [v6]:port and mqtts:// URLs', () => {
    expect(parseTarget('127.0.0.1:8883')).toEqual({ host: '127.0.0.1', port: 8883 });
    expect(parseTarget('[::1]:1883')).toEqual({ host: '::1', port: 1883 });
    expect(parseTarget('mqtts://localhost:8883')).toEqual({ host: 'localhost', port: 8883 });
  });
});

describe('pieces', () => {
  it('device ids are padded and valid ids; topics fill placeholders', () => {
    expect(deviceId({ idPrefix: 'sim-' }, 42)).toBe('sim-000042');
    expect(fillTopic('devices/{id}/telemetry/{n}/{seq}', 'sim-000001', 1, 7)).toBe(
      'devices/sim-000001/telemetry/1/7',
    );
  });

  it('errors are named by their stable codes', () => {
    const e = (code: string) => Object.assign(new Error('x'), { code });
    expect(classifyError(e('ECONNREFUSED'), 'tcp')).toBe('tcp_refused');
    expect(classifyError(e('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), 'tls')).toBe(
      'tls_alert_certificate_required',
    );
    expect(classifyError(e('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE'), 'tls')).toBe('tls_alert_bad_certificate');
    expect(classifyError(e('ECONNRESET'), 'connack')).toBe('reset_before_connack');
    expect(classifyError(e('EADDRNOTAVAIL'), 'tcp')).toBe('tcp_no_source_port');
    expect(classifyError(e('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'tls')).toBe(
      'tls_server_unable_to_verify_leaf_signature',
    );
    expect(connackCause(5)).toBe('connack_5_not_authorized');
  });

  it('a hand-written PUBLISH is what mqtt-packet would write', async () => {
    const mqttPacket = (await import('mqtt-packet')).default;
    const payload = Buffer.alloc(200, 1);
    for (const qos of [0, 1] as const) {
      const ours = publishPacket(Buffer.from('devices/a/telemetry'), payload, qos, 7);
      const theirs = mqttPacket.generate({
        cmd: 'publish',
        topic: 'devices/a/telemetry',
        payload,
        qos,
        messageId: qos ? 7 : undefined,
        dup: false,
        retain: false,
      });
      expect(ours.equals(theirs)).toBe(true);
    }
  });

  it('jitter stays within its bounds', () => {
    for (let i = 0; i < 1000; i++) {
      const u = sampleJitter({ distribution: 'uniform', maxMs: 100 });
      const x = sampleJitter({ distribution: 'exponential', meanMs: 50, maxMs: 120 });
      expect(u).toBeGreaterThanOrEqual(0);
      expect(u).toBeLessThanOrEqual(100);
      expect(x).toBeLessThanOrEqual(120);
    }
    expect(sampleJitter({ distribution: 'none' })).toBe(0);
  });

  it('workers stay under the open-file limit; sources spread over 127.0.0.0/8', () => {
    const s = parseScenario({ devices: 50_000, workers: 'auto', phases: [{ type: 'connect' }] });
    expect(planWorkers(s, 50_000, false)).toBeGreaterThanOrEqual(3);
    const two = parseScenario({ devices: 50_000, workers: 2, phases: [{ type: 'connect' }] });
    expect(() => planWorkers(two, 50_000, false)).toThrow(SimError);
    expect(loopbackSources(256).slice(252, 256)).toEqual([
      '127.0.0.253',
      '127.0.0.254',
      '127.0.1.1',
      '127.0.1.2',
    ]);
  });

  it('reports render as text and as self-contained HTML (no scripts, no external URLs)', () => {
    const scenario = parseScenario({ devices: 1, phases: [{ type: 'connect' }] });
    const lat = { count: 1, mean: 1, p50: 1, p90: 1, p99: 1, p999: 1, max: 1 };
    const counts = {
      attempted: 1,
      connected: 1,
      failed: 0,
      resumed: 0,
      published: 0,
      acked: 0,
      delivered: 0,
      dropped: 0,
      skippedBackpressure: 0,
      revokedClosed: 0,
      revokedRefused: 0,
    };
    const report = {
      version: 1 as const,
      startedAt: '2026-01-01T00:00:00Z',
      endedAt: '2026-01-01T00:00:01Z',
      durationMs: 1000,
      interrupted: false,
      target: { host: '127.0.0.1', port: 1, servername: 'localhost' },
      devices: 1,
      keyType: 'P-256',
      workers: 1,
      sourceAddresses: 1,
      observer: 'off',
      scenario,
      phases: [
        {
          name: 'connect0',
          type: 'connect' as const,
          phase: scenario.phases[0]!,
          durationMs: 1000,
          completed: true,
          counts,
          open: 1,
          unacked: 0,
          errors: { '<script>': 1 },
          latency: { tcp: lat, tls: lat, connack: lat, connect: lat, puback: lat, delivery: lat },
          rates: { connectsPerS: 1, publishedPerS: 0, deliveredPerS: 0 },
          series: [
            {
              t: 0,
              counts,
              errors: 1,
              open: 1,
              connectP50: 1,
              connectP99: 2,
              deliveryP50: null,
              deliveryP99: null,
            },
          ],
        },
      ],
    };
    expect(textSummary(report)).toContain('connects: 1/1 ok');
    const html = htmlReport(report);
    expect(html).toContain('<svg');
    expect(html).not.toContain('<script');
    expect(html).not.toMatch(/(src|href)=["']https?:/);

    // The notes `fleet sim` attaches read as sentences, the same in the text and the HTML (before: the HTML
    // had `identities: /path` and `enrolledThisRun: 1` as raw keys).
    const noted = {
      ...report,
      devices: 5,
      notes: {
        identities: '/d/sim/identities-P-256',
        enrolledThisRun: 2,
        enrollment: { mode: 'api', why: 'the provisioning service answers at https://localhost:8443' },
      },
    };
    const line = 'identities: /d/sim/identities-P-256 (2 enrolled by this run, 3 from earlier runs)';
    expect(textSummary(noted)).toContain(`\n${line}\n`);
    const notedHtml = htmlReport(noted);
    expect(notedHtml).toContain(`<p>${line}</p>`);
    expect(notedHtml).not.toContain('enrolledThisRun');
    expect(notedHtml).toContain(
      '<p>enrollment: api (the provisioning service answers at https://localhost:8443)</p>',
    );
  });
});

describe('what the machine and the broker say about a phase', () => {
  it('broker counters are read from Prometheus text and reported as differences', async () => {
    const { hostDelta, parseBrokerMetrics } = await import('../device-sim/host.ts');
    const { hostLine } = await import('../device-sim/report.ts');
    const before = parseBrokerMetrics(
      [
        '# HELP fleet_mqtt_admission_refused_total refused',
        '# TYPE fleet_mqtt_admission_refused_total counter',
        'fleet_mqtt_admission_refused_total{reason="rate_limited"} 3',
        'fleet_tls_handshakes_total{outcome="ok"} 10',
        'fleet_mqtt_messages_in_total 99',
      ].join('\n'),
    );
    expect(before).toEqual({
      'fleet_mqtt_admission_refused_total{reason="rate_limited"}': 3,
      'fleet_tls_handshakes_total{outcome="ok"}': 10,
    });
    const after = {
      ...before,
      'fleet_mqtt_admission_refused_total{reason="rate_limited"}': 15,
      'fleet_tls_handshakes_total{outcome="ok"}': 10,
    };
    const d = hostDelta(
      { loadAvg1: 1, listenOverflows: 100, broker: before },
      { loadAvg1: 2.5, listenOverflows: 160, broker: after },
    );
    expect(d).toEqual({
      loadAvg1: 2.5,
      listenOverflows: 60,
      broker: { 'fleet_mqtt_admission_refused_total{reason="rate_limited"}': 12 },
    });
    expect(hostLine(d)).toBe(
      'load average 2.5; listen-queue overflows +60 (machine-wide: SYNs dropped on a full accept queue); broker: admission refused rate_limited 12',
    );
    // Without the endpoint or /proc: only the load average.
    expect(
      hostDelta(
        { loadAvg1: 1, listenOverflows: undefined, broker: undefined },
        { loadAvg1: 1, listenOverflows: undefined, broker: undefined },
      ),
    ).toEqual({ loadAvg1: 1 });
  });

  it.each([['http://192.0.2.1:9464/metrics'], ['https://127.0.0.1:9464/metrics'], ['not a url']])(
    '--broker-metrics %s is refused (loopback http only)',
    (url) => {
      expect(() => parseSimFlags(['--broker-metrics', url])).toThrow(FlagError);
    },
  );

  it('--broker-metrics accepts loopback URLs and off', () => {
    expect(parseSimFlags(['--broker-metrics', 'http://127.0.0.1:9464/metrics']).brokerMetrics).toBe(
      'http://127.0.0.1:9464/metrics',
    );
    expect(parseSimFlags(['--broker-metrics', 'off']).brokerMetrics).toBe('off');
  });
});

describe('storm retries', () => {
  it('--storm-retries sets the retry rounds of every storm phase and needs --storm', () => {
    const f = parseSimFlags(['--storm', 'both', '--storm-retries', '3']);
    expect(
      f.phases!.filter((p) => p.type === 'storm').map((p) => (p as { retries: number }).retries),
    ).toEqual([3, 3]);
    expect(() => parseSimFlags(['--storm-retries', '3'])).toThrow(FlagError);
    expect(() => parseSimFlags(['--storm', 'full', '--storm-retries', '21'])).toThrow(FlagError);
    expect(parseScenario({ phases: [{ type: 'storm' }] }).phases[0]).toMatchObject({
      retries: 0,
      backoffMs: 1000,
    });
    expect(() => parseScenario({ phases: [{ type: 'storm', backoffMs: 5 }] })).toThrow(ScenarioError);
  });
});

describe('the report reads at a glance', () => {
  it.each([
    [0, 7, [0, 2, 4, 6]],
    [0, 10, [0, 2, 4, 6, 8, 10]],
    [0, 35, [0, 10, 20, 30]],
    [0, 0.9, [0, 0.2, 0.4, 0.6, 0.8]],
    [3, 61, [20, 40, 60]],
    [0, 4500, [0, 1000, 2000, 3000, 4000]],
  ])('ticks from %d to %d are round (1, 2, 5 × 10^n): %j', async (lo, hi, ticks) => {
    const { niceTicks } = await import('../device-sim/report.ts');
    expect(niceTicks(lo, hi)).toEqual(ticks);
  });

  it('a latency chart without a value is left out, and starts at its first value', async () => {
    const { lineChart } = await import('../device-sim/report.ts');
    const none = lineChart(
      'latency',
      'ms',
      [
        {
          label: 'p50',
          color: '#000',
          points: [
            [0, null],
            [1, null],
          ],
        },
      ],
      {
        trim: true,
      },
    );
    expect(none).toBe('');
    const late = lineChart(
      'latency',
      'ms',
      [
        {
          label: 'p50',
          color: '#000',
          points: [
            [0, null],
            [1, null],
            [5, 3],
            [10, 7],
          ],
        },
      ],
      { trim: true },
    );
    // The time axis starts at 5 s (its first tick), not at 0 s.
    expect(late).toContain('>5s<');
    expect(late).not.toContain('>0s<');
  });

  it('the enrollment note is a sentence, not JSON', async () => {
    const { enrollmentText } = await import('../device-sim/report.ts');
    const t = enrollmentText({
      mode: 'api',
      why: 'the provisioning service answers at https://localhost:8443',
      apiUrl: 'https://localhost:8443',
      station: 'sim-station',
    });
    expect(t).toBe('api (the provisioning service answers at https://localhost:8443), station sim-station');
  });
});
