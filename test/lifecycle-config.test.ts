/**
 * What a user meets around the identity lifecycle outside the services: the rotation grace period in the
 * configuration, and the banner `npm start` prints on every start, which must never send anyone into a
 * device id that is taken or revoked (issue 9 item 2).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freeDeviceId, nextSteps } from '../cli/serve.ts';
import { loadConfig } from '../config/index.ts';
import { openRegistry, type Registry } from '../registry/index.ts';

describe('FLEET_ROTATION_GRACE_HOURS', () => {
  it.each([
    [undefined, 24],
    ['0', 0],
    ['0.5', 0.5],
    ['168', 168],
  ])('%s reads as %s hours', (raw, hours) => {
    expect(loadConfig(raw === undefined ? {} : { FLEET_ROTATION_GRACE_HOURS: raw }).rotationGraceHours).toBe(
      hours,
    );
  });

  it.each(['-1', 'abc', '1e9', 'Infinity'])('refuses %s with CONFIG_INVALID', (raw) => {
    expect(() => loadConfig({ FLEET_ROTATION_GRACE_HOURS: raw })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    );
  });
});

describe("the banner's first-device example", () => {
  let registry: Registry;
  beforeAll(async () => {
    registry = await openRegistry();
  });
  afterAll(async () => {
    await registry?.close();
  });

  const record = (id: string, n: number) =>
    registry.recordIssued({
      subject: { kind: 'device', id, product: 'thermo', fleet: 'thermo' },
      certificate: {
        serial: `0${n}ab`,
        issuerCa: 'device',
        der: new Uint8Array([n]),
        fingerprintSha256: String(n).repeat(64).slice(0, 64),
        spkiSha256: String(n).repeat(64).slice(0, 64),
        notBefore: new Date(),
        notAfter: new Date(Date.now() + 86_400_000),
      },
      actor: 'operator:test',
    });

  it('names dev-1 on a first start, and on a later start an id never used, not a taken or revoked one', async () => {
    const config = loadConfig({});
    expect(await freeDeviceId(registry)).toBe('dev-1');
    // The user followed the banner: enrolled dev-1, then revoked it as the banner suggests.
    await record('dev-1', 1);
    await registry.setStatus({ kind: 'device', id: 'dev-1', status: 'revoked', actor: 'operator:test' });
    // A later start enrolled dev-2 and left it active.
    await record('dev-2', 2);
    const id = await freeDeviceId(registry);
    expect(id).toBe('dev-3');
    const text = nextSteps(config, id).join('\n');
    expect(text).toContain('--id dev-3');
    expect(text).not.toMatch(/dev-[12]\b/);
  });
});
