/**
 * The rotation rule (design.md, Rotation and retirement), at every door: a device that re-enrolls keeps its
 * old certificate until it first connects with the new one, or until the grace period ends, whichever is
 * first; after an operator reset the old certificate is dead at once. A retired certificate is refused by
 * every broker node at CONNECT, its live session is closed on every node through the change feed, and the
 * CRL and OCSP say revoked with reason superseded. Real registry (PGlite, or PostgreSQL with DATABASE_URL),
 * real TLS, two broker nodes.
 */
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RotationSweeper } from '../provisioning/rotation.ts';
import { type BrokerFixture, brokerFixture, closedWithin, type StartedBroker } from './helpers/broker.ts';

let f: BrokerFixture;
let a: StartedBroker;
let b: StartedBroker;

beforeAll(async () => {
  f = await brokerFixture({ prefix: 'fleet-rotation-' });
  // The periodic resync is out of reach: whatever a node learns, it learns from the change feed.
  a = await f.start({ revocation: { resyncMs: 600_000 } });
  b = await f.start({ revocation: { resyncMs: 600_000 } });
});

afterAll(async () => {
  await f?.cleanup();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function connected(node: StartedBroker, creds: Parameters<StartedBroker['connect']>[0]) {
  const r = await node.tryConnect(creds);
  if (r.outcome !== 'connected') throw new Error(`did not connect: ${JSON.stringify(r)}`);
  return r.client;
}

/** Waits until `check` holds (the change feed is asynchronous), or fails after `ms`. */
async function eventually(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(25);
  }
}

async function expectRetired(serial: string) {
  const s = await f.registry.certificateStatus(serial);
  expect(s).toMatchObject({ status: 'revoked', reason: 'superseded' });
  const crl = await f.registry.revokedCertificates('device');
  expect(crl).toContainEqual(expect.objectContaining({ serial, reason: 'superseded' }));
  expect((await f.registry.revokedSet()).serials).toContain(serial);
}

describe('after EST simplereenroll', () => {
  it('the old certificate still connects while the new one has not connected yet (grace)', async () => {
    const old = await f.enroll('device', 'rot-grace');
    await f.reenroll(old);
    const client = await connected(a, old);
    client.end(true);
    expect((await f.registry.certificateStatus(old.serial))?.status).toBe('superseded');
  });

  it('once the new certificate connects, the old one is refused on every node and its live session is closed', async () => {
    const old = await f.enroll('device', 'rot-first');
    const next = await f.reenroll(old);
    const oldSession: MqttClient = await connected(b, old);
    const closed = closedWithin(oldSession, 10_000);
    const fresh = await connected(a, next);
    await closed;
    for (const node of [a, b]) {
      await eventually(async () => {
        const r = await node.tryConnect(old);
        if (r.outcome === 'connected') r.client.end(true);
        return r.outcome === 'connack' && r.code === 5;
      });
    }
    // The old certificate did not take over the new one's session.
    expect(fresh.connected).toBe(true);
    fresh.end(true);
    await eventually(async () => (await f.registry.certificateStatus(old.serial))?.status === 'revoked');
    await expectRetired(old.serial);
    expect((await f.registry.certificateStatus(next.serial))?.status).toBe('active');
  });

  it('when the grace period ends, every node refuses the old certificate at CONNECT, before any sweep ran', async () => {
    const old = await f.enroll('device', 'rot-deadline');
    await f.reenroll(old, { graceMs: 400 });
    await sleep(600);
    for (const node of [a, b]) expect(await node.tryConnect(old)).toEqual({ outcome: 'connack', code: 5 });
    // The CRL, OCSP and the revoked set say so too, from the deadline, whether or not the sweep wrote it.
    await expectRetired(old.serial);
  });

  it('when the grace period ends while nobody calls anything, the sweep retires it and the feed closes its live sessions', async () => {
    const sweeper = new RotationSweeper(f.registry, pino({ level: 'silent' }));
    await sweeper.start();
    try {
      const old = await f.enroll('device', 'rot-sweep');
      await f.reenroll(old, { graceMs: 1500 });
      const onA = await connected(a, old);
      await closedWithin(onA, 15_000);
      const s = await f.registry.certificateStatus(old.serial);
      expect(s).toMatchObject({ status: 'revoked', reason: 'superseded' });
      // Written by the sweep, not only derived on read: the row itself is revoked.
      const row = (await f.registry.getDevice('rot-sweep'))!.certificates.find(
        (c) => c.serial === old.serial,
      );
      expect(row).toMatchObject({ status: 'revoked', revocationReason: 'superseded' });
    } finally {
      await sweeper.stop();
    }
  });
});

describe('a suspended device', () => {
  it('has its certificate in grace on the CRL as held too, not only its active one', async () => {
    const old = await f.enroll('device', 'rot-held');
    const next = await f.reenroll(old);
    await f.setStatus('device', 'rot-held', 'suspended');
    const held = (await f.registry.heldCertificates('device')).map((h) => h.serial);
    expect(held).toEqual(expect.arrayContaining([old.serial, next.serial]));
  });
});

describe('after an operator reset', () => {
  it('the old certificate is dead at once: its live session is closed and it is refused on every node', async () => {
    const old = await f.enroll('device', 'rot-reset');
    const live = await connected(a, old);
    const closed = closedWithin(live, 10_000);
    await f.registry.allowReenroll('rot-reset', 'operator:test');
    await closed;
    for (const node of [a, b]) {
      await eventually(async () => {
        const r = await node.tryConnect(old);
        if (r.outcome === 'connected') r.client.end(true);
        return r.outcome === 'connack' && r.code === 5;
      });
    }
    await expectRetired(old.serial);
    // The device enrolls again with a new key and connects.
    const next = await f.enroll('device', 'rot-reset');
    const c = await connected(b, next);
    c.end(true);
  });
});
