/**
 * The fast CONNECT path (broker/aedes/fast-connect.ts) keeps MQTT's session semantics: a clean session after a
 * persistent one finds no stored subscription and no queued message [MQTT-3.1.2-6], a persistent session
 * still resumes [MQTT-3.2.2-2], a will still goes out when its connection drops, and a refused CONNECT
 * still gets its return code.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrokerFixture, brokerFixture, type Credentials } from './helpers/broker.ts';

let f: BrokerFixture;
const creds: Record<string, Credentials> = {};

beforeAll(async () => {
  f = await brokerFixture();
  creds.device = await f.enroll('device', 'fc-dev', { fleet: 'fc' });
  creds.other = await f.enroll('device', 'fc-other', { fleet: 'fc' });
  creds.service = await f.enroll('service', 'fc-svc');
  await f.start();
});

afterAll(async () => {
  await f?.cleanup();
});

const received = (client: MqttClient, ms: number) =>
  new Promise<string[]>((resolve) => {
    const got: string[] = [];
    client.on('message', (topic) => got.push(topic));
    setTimeout(() => resolve(got), ms);
  });

describe('sessions through the fast CONNECT path', () => {
  it('a clean session after a persistent one has no subscription and no queued message', async () => {
    const a = await f.connect(creds.device!, { clean: false });
    await a.subscribeAsync('devices/fc-dev/commands/#', { qos: 1 });
    await a.endAsync();
    const svc = await f.connect(creds.service!);
    await svc.publishAsync('devices/fc-dev/commands/reboot', 'now', { qos: 1 });
    const b = await f.connect(creds.device!, { clean: true });
    const gotB = received(b, 300);
    await svc.publishAsync('devices/fc-dev/commands/again', 'now', { qos: 1 });
    expect(await gotB).toEqual([]);
    await b.endAsync();
    const c = await f.connect(creds.device!, { clean: false });
    expect(c.connected).toBe(true);
    const gotC = received(c, 300);
    await svc.publishAsync('devices/fc-dev/commands/third', 'now', { qos: 1 });
    expect(await gotC).toEqual([]);
    await c.endAsync();
    await svc.endAsync();
  });

  it('a persistent session resumes with its subscription and gets what was queued', async () => {
    const a = await f.connect(creds.other!, { clean: false });
    await a.subscribeAsync('devices/fc-other/commands/#', { qos: 1 });
    await a.endAsync();
    const svc = await f.connect(creds.service!);
    await svc.publishAsync('devices/fc-other/commands/queued', 'x', { qos: 1 });
    const r = await f.tryConnect(creds.other!, { clean: false, manualConnect: false });
    if (r.outcome !== 'connected') throw new Error('not connected');
    const got = await received(r.client, 500);
    expect(got).toContain('devices/fc-other/commands/queued');
    await r.client.endAsync();
    await svc.endAsync();
  });

  it('a clean session receives what it subscribes to, and its will goes out when it drops', async () => {
    const svc = await f.connect(creds.service!);
    await svc.subscribeAsync('devices/+/state', { qos: 0 });
    const got = received(svc, 800);
    const dev = await f.connect(creds.device!, {
      will: { topic: 'devices/fc-dev/state', payload: Buffer.from('offline'), qos: 0, retain: false },
    });
    dev.stream.destroy();
    expect(await got).toContain('devices/fc-dev/state');
    await svc.endAsync();
  });

  it('a clean QoS 1 subscriber gets every message in order at QoS 1, a QoS 0 subscriber at QoS 0', async () => {
    const q1 = await f.connect(creds.service!, { clientId: 'fc-svc' });
    await q1.subscribeAsync('devices/+/telemetry/#', { qos: 1 });
    const got: { n: number; qos: number }[] = [];
    q1.on('message', (_t, payload, packet) => got.push({ n: Number(payload.toString()), qos: packet.qos }));
    const dev = await f.connect(creds.device!);
    for (let i = 0; i < 200; i++)
      void dev.publishAsync('devices/fc-dev/telemetry/t', String(i), { qos: i % 2 ? 1 : 0 });
    await new Promise((r) => setTimeout(r, 1000));
    const q1s = got.filter((g) => g.n % 2 === 1);
    const q0s = got.filter((g) => g.n % 2 === 0);
    expect(q1s.map((g) => g.n)).toEqual(Array.from({ length: 100 }, (_, i) => 2 * i + 1));
    expect(q0s.map((g) => g.n)).toEqual(Array.from({ length: 100 }, (_, i) => 2 * i));
    expect(new Set(q1s.map((g) => g.qos))).toEqual(new Set([1]));
    expect(new Set(q0s.map((g) => g.qos))).toEqual(new Set([0]));
    await dev.endAsync();
    await q1.endAsync();
  });

  it('a refused CONNECT still gets its return code', async () => {
    expect(await f.tryConnect(creds.device!, { clientId: 'fc-someone-else' })).toEqual({
      outcome: 'connack',
      code: 5,
    });
  });
});
