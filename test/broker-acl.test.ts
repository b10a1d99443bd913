/**
 * Authorization on the wire: the default policy enforced on real MQTT clients (MQTT.js and
 * mosquitto_pub/mosquitto_sub) over mTLS. Denied subscriptions get SUBACK 0x80, denied publishes are
 * dropped (the connection stays), repeated denials disconnect.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BrokerFixture,
  brokerFixture,
  type Credentials,
  closedWithin,
  mosquitto,
  writeCredentialFiles,
} from './helpers/broker.ts';

let f: BrokerFixture;
const creds: Record<string, Credentials> = {};
let devA: MqttClient;
let svc: MqttClient;

beforeAll(async () => {
  f = await brokerFixture();
  creds.a = await f.enroll('device', 'dev-a', { fleet: 'f1' });
  creds.b = await f.enroll('device', 'dev-b', { fleet: 'f1' });
  creds.noisy = await f.enroll('device', 'dev-noisy', { fleet: 'f1' });
  creds.mosq = await f.enroll('device', 'dev-mosq', { fleet: 'f1' });
  creds.svc = await f.enroll('service', 'ingest');
  await f.start({ limits: { aclDenialLimit: 10 } });
  devA = await f.connect(creds.a);
  svc = await f.connect(creds.svc);
});

afterAll(async () => {
  await devA?.endAsync();
  await svc?.endAsync();
  await f?.cleanup();
});

/** The SUBACK return code for one filter (MQTT.js rejects on 0x80 and carries the packet). */
async function granted_(client: MqttClient, filter: string): Promise<number | undefined> {
  try {
    const [g] = await client.subscribeAsync(filter, { qos: 1 });
    return g?.qos;
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (!granted) throw err;
    return granted[0];
  }
}

const ALLOWED = 1; // QoS granted for a QoS 1 request
const DENIED = 128; // SUBACK failure [MQTT-3.9.3]

describe('a device subscribing', () => {
  it.each([
    ['may subscribe to its own commands', 'devices/dev-a/commands/#', ALLOWED],
    ['may subscribe to one of its own commands', 'devices/dev-a/commands/reboot', ALLOWED],
    ["may subscribe to its fleet's broadcasts", 'fleets/f1/broadcast/#', ALLOWED],
    ["may not subscribe to another device's commands", 'devices/dev-b/commands/#', DENIED],
    ["may not subscribe to another fleet's broadcasts", 'fleets/f2/broadcast/#', DENIED],
    ['may not subscribe to a wildcard reaching other devices', 'devices/+/commands/#', DENIED],
    ['may not subscribe to everything', '#', DENIED],
    ["may not subscribe to another device's telemetry", 'devices/dev-b/telemetry', DENIED],
    ['may not subscribe to $SYS', '$SYS/#', DENIED],
  ])('%s (%s)', async (_name, filter, granted) => {
    expect(await granted_(devA, filter)).toBe(granted);
    if (granted === ALLOWED) await devA.unsubscribeAsync(filter);
  });
});

describe('a service subscribing', () => {
  it.each([
    ["may subscribe to every device's telemetry", 'devices/+/telemetry/#', ALLOWED],
    ["may subscribe to every device's state", 'devices/+/state', ALLOWED],
    ["may not subscribe to devices' commands", 'devices/+/commands/#', DENIED],
    ['may not subscribe to $SYS', '$SYS/#', DENIED],
  ])('%s (%s)', async (_name, filter, granted) => {
    expect(await granted_(svc, filter)).toBe(granted);
    if (granted === ALLOWED) await svc.unsubscribeAsync(filter);
  });
});

/** Publishes from `from` and reports which topics `to` (subscribed to `filter`) received within 300 ms. */
async function deliveries(
  from: MqttClient,
  to: MqttClient,
  filter: string,
  topics: string[],
  qos: 0 | 1 = 1,
): Promise<string[]> {
  const got: string[] = [];
  const onMessage = (t: string) => got.push(t);
  to.on('message', onMessage);
  await to.subscribeAsync(filter, { qos: 1 });
  for (const t of topics) await from.publishAsync(t, 'x', { qos });
  await new Promise((r) => setTimeout(r, 300));
  to.off('message', onMessage);
  await to.unsubscribeAsync(filter);
  return got;
}

describe('publishing', () => {
  it("a device's own telemetry and state reach a service", async () => {
    const got = await deliveries(devA, svc, 'devices/+/telemetry/#', [
      'devices/dev-a/telemetry',
      'devices/dev-a/telemetry/temp',
    ]);
    expect(got.sort()).toEqual(['devices/dev-a/telemetry', 'devices/dev-a/telemetry/temp']);
  });

  it("a device's publish to another device's topic is dropped, and its connection stays", async () => {
    const got = await deliveries(devA, svc, 'devices/+/telemetry/#', ['devices/dev-b/telemetry']);
    expect(got).toEqual([]);
    expect(devA.connected).toBe(true);
  });

  it('a publish to $SYS is dropped', async () => {
    await devA.publishAsync('$SYS/broker/fake', 'x', { qos: 1 });
    expect(devA.connected).toBe(true);
  });

  it("a service's command reaches the device it names, and no other", async () => {
    const b = await f.connect(creds.b);
    try {
      const gotA = await deliveries(svc, devA, 'devices/dev-a/commands/#', ['devices/dev-a/commands/reboot']);
      expect(gotA).toEqual(['devices/dev-a/commands/reboot']);
    } finally {
      await b.endAsync();
    }
  });

  it('a device may not send commands to another device', async () => {
    const b = await f.connect(creds.b);
    try {
      const got = await deliveries(devA, b, 'devices/dev-b/commands/#', ['devices/dev-b/commands/unlock']);
      expect(got).toEqual([]);
    } finally {
      await b.endAsync();
    }
  });

  it('denied publishes are counted', async () => {
    const text = await f.broker.metrics.registry.metrics();
    expect(text).toMatch(/fleet_mqtt_acl_denials_total\{action="publish"\} [1-9]/);
    expect(text).toMatch(/fleet_mqtt_acl_denials_total\{action="subscribe"\} [1-9]/);
  });

  it('ten denials within a minute disconnect the client', async () => {
    const noisy = await f.connect(creds.noisy);
    const closed = closedWithin(noisy, 2000);
    for (let i = 0; i < 10; i++) noisy.publish('devices/dev-a/telemetry', 'spoof', { qos: 0 });
    await closed;
  });
});

describe('with mosquitto clients', () => {
  it('mosquitto_pub publishes a device’s telemetry with its certificate, and a service receives it', async () => {
    const files = writeCredentialFiles(f.dir, f.ca, creds.mosq);
    const got: string[] = [];
    const onMessage = (t: string, p: Buffer) => got.push(`${t} ${p}`);
    svc.on('message', onMessage);
    await svc.subscribeAsync('devices/+/telemetry/#', { qos: 1 });
    const r = await mosquitto('mosquitto_pub', [
      ...['-h', 'localhost', '-p', String(f.port), '-V', 'mqttv311', '-q', '1'],
      ...['--cafile', files.cafile, '--cert', files.cert, '--key', files.key, '-i', 'dev-mosq'],
      ...['-t', 'devices/dev-mosq/telemetry', '-m', '21.5'],
    ]);
    expect(r.code, r.stderr).toBe(0);
    await new Promise((res) => setTimeout(res, 200));
    svc.off('message', onMessage);
    await svc.unsubscribeAsync('devices/+/telemetry/#');
    expect(got).toEqual(['devices/dev-mosq/telemetry 21.5']);
  });

  it("mosquitto_sub may not subscribe to another device's commands", async () => {
    const files = writeCredentialFiles(f.dir, f.ca, creds.mosq);
    const r = await mosquitto('mosquitto_sub', [
      ...['-h', 'localhost', '-p', String(f.port), '-V', 'mqttv311', '-q', '1', '-C', '1', '-W', '2'],
      ...['--cafile', files.cafile, '--cert', files.cert, '--key', files.key, '-i', 'dev-mosq'],
      ...['-t', 'devices/dev-a/commands/#'],
    ]);
    expect(r.stderr).toMatch(/denied/i);
  });

  it('mosquitto_pub without a client certificate is refused', async () => {
    const files = writeCredentialFiles(f.dir, f.ca, creds.mosq);
    const r = await mosquitto('mosquitto_pub', [
      ...['-h', 'localhost', '-p', String(f.port), '-V', 'mqttv311', '--cafile', files.cafile],
      ...['-i', 'dev-mosq', '-t', 'devices/dev-mosq/telemetry', '-m', 'x'],
    ]);
    expect(r.code).not.toBe(0);
  });

  it('mosquitto_pub with a client id other than its certificate’s is refused', async () => {
    const files = writeCredentialFiles(f.dir, f.ca, creds.mosq);
    const r = await mosquitto('mosquitto_pub', [
      ...['-h', 'localhost', '-p', String(f.port), '-V', 'mqttv311'],
      ...['--cafile', files.cafile, '--cert', files.cert, '--key', files.key, '-i', 'dev-a'],
      ...['-t', 'devices/dev-a/telemetry', '-m', 'x'],
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not authori[sz]ed/i);
  });
});
