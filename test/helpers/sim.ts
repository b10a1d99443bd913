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
import { brokerFixture } from './broker.ts';

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
  const f = await brokerFixture({ prefix: 'fleet-sim-' });
  const { ca, registry } = f;
  // Admission wide open: the tests measure the simulator, not the broker's storm protection.
  const { broker, port } = await f.start({
    limits: {
      connectRatePerS: 0,
      connectBurst: 100_000,
      maxHandshakesPerSource: 0,
      connectRatePerSourcePerS: 0,
    },
  });
  const enroller = new LocalEnroller(ca, registry);
  return {
    ca,
    registry,
    broker,
    port,
    target: { host: '127.0.0.1', port, servername: 'localhost', loopback: true },
    dir: f.dir,
    enroller,
    operator: new LocalOperator(registry),
    identities: (devices, opts = {}) =>
      ensureIdentities({
        dir: `${f.dir}/identities-${opts.keyType ?? 'P-256'}-${opts.idPrefix ?? 'sim-'}`,
        devices,
        idPrefix: opts.idPrefix ?? 'sim-',
        product: 'sim',
        keyType: opts.keyType ?? 'P-256',
        enroller,
      }),
    close: () => f.cleanup(),
  };
}
