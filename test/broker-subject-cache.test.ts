/**
 * The subject cache is warmed from the registry at start: a device enrolled before the start connects
 * without a registry lookup, one enrolled later is looked up on its first connect, and a revocation after
 * the warm-up still refuses (the revoked set decides, not the cache).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../broker/index.ts';
import { type BrokerRegistry, fromRegistry } from '../broker/registry.ts';
import type { CertificateAuthority } from '../pki/ca.ts';
import {
  enroll,
  makeCa,
  openTestRegistry,
  setStatus,
  startBroker,
  tempDir,
  tryConnect,
} from './helpers/broker.ts';

let tmp: ReturnType<typeof tempDir>;
let ca: CertificateAuthority;
let db: Awaited<ReturnType<typeof openTestRegistry>>;
let broker: Broker;
let port: number;
const lookups: string[] = [];
const early: Awaited<ReturnType<typeof enroll>>[] = [];

beforeAll(async () => {
  tmp = tempDir();
  ca = await makeCa(`${tmp.dir}/fleet`);
  db = await openTestRegistry();
  const real = fromRegistry(db.registry);
  const counting: BrokerRegistry = {
    ...real,
    activeSubjects: real.activeSubjects!.bind(real),
    lookup: (kind, id) => {
      lookups.push(`${kind}:${id}`);
      return real.lookup(kind, id);
    },
  };
  for (let i = 0; i < 3; i++) early.push(await enroll(db.registry, ca, 'device', `warm-${i}`));
  ({ broker, port } = await startBroker(ca, counting));
  expect(await broker.subjectsWarmed).toBeGreaterThanOrEqual(3);
});

afterAll(async () => {
  await broker?.stop();
  await db?.cleanup();
  tmp?.remove();
});

describe('the subject cache warmed at start', () => {
  it('admits a device enrolled before the start without asking the registry', async () => {
    lookups.length = 0;
    for (const creds of early) {
      const r = await tryConnect(port, ca, creds);
      expect(r.outcome).toBe('connected');
      if (r.outcome === 'connected') await r.client.endAsync();
    }
    expect(lookups).toEqual([]);
  });

  it('asks the registry on the first connect of a device enrolled after the start', async () => {
    const creds = await enroll(db.registry, ca, 'device', 'warm-late');
    lookups.length = 0;
    const r = await tryConnect(port, ca, creds);
    expect(r.outcome).toBe('connected');
    if (r.outcome === 'connected') await r.client.endAsync();
    expect(lookups).toEqual(['device:warm-late']);
  });

  it('still refuses a device revoked after the warm-up', async () => {
    const creds = await enroll(db.registry, ca, 'device', 'warm-revoked');
    const first = await tryConnect(port, ca, creds);
    if (first.outcome === 'connected') await first.client.endAsync();
    await setStatus(db.registry, 'device', 'warm-revoked', 'revoked');
    await new Promise((r) => setTimeout(r, 200));
    expect(await tryConnect(port, ca, creds)).toEqual({ outcome: 'connack', code: 5 });
  });
});
