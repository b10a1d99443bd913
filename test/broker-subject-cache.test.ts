/**
 * The subject cache is warmed from the registry at start: a device enrolled before the start connects
 * without a registry lookup, one enrolled later is looked up on its first connect, and a revocation after
 * the warm-up still refuses (the revoked set decides, not the cache).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrokerRegistry, fromRegistry } from '../broker/registry.ts';
import { type BrokerFixture, brokerFixture, type Credentials } from './helpers/broker.ts';

let f: BrokerFixture;
const lookups: string[] = [];
const early: Credentials[] = [];

beforeAll(async () => {
  f = await brokerFixture();
  const real = fromRegistry(f.registry);
  const counting: BrokerRegistry = {
    ...real,
    activeSubjects: real.activeSubjects!.bind(real),
    lookup: (kind, id) => {
      lookups.push(`${kind}:${id}`);
      return real.lookup(kind, id);
    },
  };
  for (let i = 0; i < 3; i++) early.push(await f.enroll('device', `warm-${i}`));
  await f.start({}, { registry: counting });
  expect(await f.broker.subjectsWarmed).toBeGreaterThanOrEqual(3);
});

afterAll(async () => {
  await f?.cleanup();
});

describe('the subject cache warmed at start', () => {
  it('admits a device enrolled before the start without asking the registry', async () => {
    lookups.length = 0;
    for (const creds of early) {
      const r = await f.tryConnect(creds);
      expect(r.outcome).toBe('connected');
      if (r.outcome === 'connected') await r.client.endAsync();
    }
    expect(lookups).toEqual([]);
  });

  it('asks the registry on the first connect of a device enrolled after the start', async () => {
    const creds = await f.enroll('device', 'warm-late');
    lookups.length = 0;
    const r = await f.tryConnect(creds);
    expect(r.outcome).toBe('connected');
    if (r.outcome === 'connected') await r.client.endAsync();
    expect(lookups).toEqual(['device:warm-late']);
  });

  it('still refuses a device revoked after the warm-up', async () => {
    const creds = await f.enroll('device', 'warm-revoked');
    const first = await f.tryConnect(creds);
    if (first.outcome === 'connected') await first.client.endAsync();
    await f.setStatus('device', 'warm-revoked', 'revoked');
    await new Promise((r) => setTimeout(r, 200));
    expect(await f.tryConnect(creds)).toEqual({ outcome: 'connack', code: 5 });
  });
});
