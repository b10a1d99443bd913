/**
 * Live revocation: the registry's change feed drops live sessions at once, a resumed TLS session cannot
 * slip past a revocation, and the periodic resync catches what the feed missed. Real registry, real TLS.
 */
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromRegistry } from '../broker/registry.ts';
import type { Registry } from '../registry/index.ts';
import { type BrokerFixture, brokerFixture, closedWithin, rawConnect } from './helpers/broker.ts';

let f: BrokerFixture;
let reg: Registry;

beforeAll(async () => {
  f = await brokerFixture();
  reg = f.registry;
  // The periodic resync is pushed out of reach, so a close within the bounds below can only come from the
  // change feed. The bounds are hang guards, not speed claims: revoke-to-close is measured in bench:broker.
  await f.start({
    presence: { flushMs: 50 },
    revocation: { resyncMs: 600_000 },
  });
});

afterAll(async () => {
  await f?.cleanup();
});

async function connected(id: string): Promise<MqttClient> {
  return f.connect(await f.enroll('device', id));
}

describe('a live session', () => {
  it.each([
    ['is closed on the change feed when its device is revoked', 'live-revoked', 'revoked'],
    ['is closed on the change feed when its device is suspended', 'live-suspended', 'suspended'],
  ] as const)('%s', async (_name, id, status) => {
    const client = await connected(id);
    const closed = closedWithin(client, 10_000);
    await f.setStatus('device', id, status);
    await closed;
    const again = await f.tryConnect(undefined, {});
    expect(again.outcome).toBe('closed');
  });

  it('is closed on the change feed when its certificate alone is revoked', async () => {
    const creds = await f.enroll('device', 'live-cert');
    const r = await f.tryConnect(creds);
    expect(r.outcome).toBe('connected');
    const closed = closedWithin((r as { client: MqttClient }).client, 10_000);
    await reg.revokeCertificate({ serial: creds.serial, actor: 'operator:test' });
    await closed;
    expect(await f.tryConnect(creds)).toEqual({ outcome: 'connack', code: 5 });
  });

  it('of another device stays open', async () => {
    const bystander = await connected('bystander');
    const victim = await connected('victim');
    const closed = closedWithin(victim, 10_000);
    await f.setStatus('device', 'victim', 'revoked');
    await closed;
    expect(bystander.connected).toBe(true);
    await bystander.endAsync();
  });

  it('records revocation kicks and their latency', async () => {
    const text = await f.broker.metrics.registry.metrics();
    expect(text).toMatch(/fleet_mqtt_revocation_kicks_total [1-9]/);
    expect(text).toMatch(/fleet_mqtt_revocation_close_seconds_count [1-9]/);
  });
});

describe('a TLS session resumed after revocation', () => {
  it.each(['TLSv1.2', 'TLSv1.3'] as const)('is refused with CONNACK 5 (%s)', async (maxVersion) => {
    const id = `resume-${maxVersion.replace('.', '')}`;
    const creds = await f.enroll('device', id);
    const first = await rawConnect(f.port, f.ca, creds, { maxVersion });
    expect(first.returnCode).toBe(0);
    expect(first.session).toBeDefined();
    await f.setStatus('device', id, 'revoked');
    const gen = await reg.generation();
    for (let i = 0; i < 50 && f.broker.revocation.generation < gen; i++)
      await new Promise((r) => setTimeout(r, 10));
    const resumed = await rawConnect(f.port, f.ca, creds, { maxVersion, session: first.session! });
    expect(resumed.reused).toBe(true);
    expect(resumed.returnCode).toBe(5);
  });
});

describe('the periodic resync', () => {
  it('closes a session whose revocation the change feed never delivered', async () => {
    // A feed that loses every notification: only the resync can find the change.
    const deaf = { ...fromRegistry(reg), onChange: async () => () => {} };
    const deafBroker = await f.start({ revocation: { resyncMs: 100 } }, { registry: deaf });
    try {
      const creds = await f.enroll('device', 'missed');
      const r = await deafBroker.tryConnect(creds);
      expect(r.outcome).toBe('connected');
      const closed = closedWithin((r as { client: MqttClient }).client, 2000);
      await f.setStatus('device', 'missed', 'suspended');
      await closed;
    } finally {
      await deafBroker.stop();
    }
  });
});

describe('presence', () => {
  it('is written to the registry in batches: connected, then disconnected, with the node name', async () => {
    const client = await connected('present');
    await new Promise((r) => setTimeout(r, 200));
    const on = await reg.getPresence('device', 'present');
    expect(on).toMatchObject({ connected: true, brokerNode: 'test-node', remoteAddress: '127.0.0.1' });
    await client.endAsync();
    await new Promise((r) => setTimeout(r, 200));
    expect(await reg.getPresence('device', 'present')).toMatchObject({ connected: false });
  });
});
