/**
 * Test helpers for the device simulator: a real CA made at test time, the real registry, the real broker
 * on a free port (tests may import the broker; device-sim itself never does), and identities enrolled
 * through the in-process enroller into a temp directory.
 */
import type { Broker } from '../../broker/index.ts';
import { ensureIdentities, type IdentitySet } from '../../device-sim/identities.ts';
import { LocalEnroller, LocalOperator } from '../../device-sim/local.ts';
import type { RunTarget } from '../../device-sim/runner.ts';
import type { CertificateAuthority } from '../../pki/ca.ts';
import type { Registry } from '../../registry/index.ts';
import { makeCa, openTestRegistry, startBroker, tempDir } from './broker.ts';

export interface SimBed {
  readonly ca: CertificateAuthority;
  readonly registry: Registry;
  readonly broker: Broker;
  readonly port: number;
  readonly target: RunTarget;
  readonly dir: string;
  readonly enroller: LocalEnroller;
  readonly operator: LocalOperator;
  identities(
    devices: number,
    opts?: { idPrefix?: string; keyType?: 'P-256' | 'Ed25519' | 'RSA' },
  ): Promise<IdentitySet>;
  close(): Promise<void>;
}

export async function simBed(): Promise<SimBed> {
  const tmp = tempDir('fleet-sim-');
  const ca = await makeCa(tmp.dir);
  const { registry, cleanup } = await openTestRegistry();
  // Admission wide open: the tests measure the simulator, not the broker's storm protection.
  const { broker, port } = await startBroker(ca, registry, {
    limits: { connectRatePerS: 0, connectBurst: 100_000 },
  });
  const enroller = new LocalEnroller(ca, registry);
  return {
    ca,
    registry,
    broker,
    port,
    target: { host: '127.0.0.1', port, servername: 'localhost', loopback: true },
    dir: tmp.dir,
    enroller,
    operator: new LocalOperator(registry),
    identities: (devices, opts = {}) =>
      ensureIdentities({
        dir: `${tmp.dir}/identities-${opts.keyType ?? 'P-256'}-${opts.idPrefix ?? 'sim-'}`,
        devices,
        idPrefix: opts.idPrefix ?? 'sim-',
        product: 'sim',
        keyType: opts.keyType ?? 'P-256',
        enroller,
      }),
    async close() {
      await broker.stop();
      await cleanup();
      tmp.remove();
    },
  };
}
