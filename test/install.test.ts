/**
 * What `npm ci` installs agrees with the Node versions Fleet says it runs on (package.json `engines`): no
 * locked package asks for a newer Node than the oldest one Fleet claims in each major line, so an install
 * on a supported Node prints no EBADENGINE warning (before: every install on Node 20 warned that
 * cookie@2.0.2, which fastify's inject() loads, requires node >=22, while `engines` said >=20.18; and vitest's
 * rolldown needs 20.19 / 22.12). The lock records the same `engines`, and the Node running this is one of them.
 * fastify's light-my-request is held at 6.6.0 (package.json `overrides`, inside fastify's ^6 range): from
 * 6.8 it takes cookie@2, which says Node >=22, and Fleet runs on 20 too.
 */
import { readFileSync } from 'node:fs';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

type LockEntry = { version?: string; engines?: { node?: string } | string[] };
const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
  packages: Record<string, LockEntry>;
};
const claimed = new semver.Range(pkg.engines.node);
/** The oldest version of each `||` alternative: 20.x.y, 22.x.y, 24.x.y. */
const floors = claimed.set.map(
  (alternative) => semver.minVersion(new semver.Range(alternative.map((c) => c.value).join(' ')))!.version,
);

describe('Node versions', () => {
  it('engines names Node 20, 22 and 24, and this Node is one of them', () => {
    expect(floors.map((v) => semver.major(v))).toEqual([20, 22, 24]);
    expect(semver.satisfies(process.version, claimed), process.version).toBe(true);
  });

  it('the lock records the same engines (npm ci installs what package.json says)', () => {
    expect(lock.packages['']?.engines).toEqual(pkg.engines);
  });

  it.each(floors)('every locked package runs on Node %s (no EBADENGINE)', (floor) => {
    const refusing: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      const node = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
      if (path === '' || !node) continue;
      if (!semver.satisfies(floor, node))
        refusing.push(`${path.replace(/^.*node_modules\//, '')}@${entry.version} (node ${node})`);
    }
    expect(refusing).toEqual([]);
  });
});
