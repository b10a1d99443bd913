// biome-ignore-all lint/suspicious/noTemplateCurlyInString: policy placeholders are written `${id}` on purpose
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PolicyError } from '../broker/errors.ts';
import {
  bindPolicy,
  canPublish,
  canSubscribe,
  compilePolicy,
  covers,
  intersects,
  loadPolicyFile,
  type PolicyContext,
  topicFilterProblem,
  topicNameProblem,
} from '../broker/policy.ts';
import { isFleetError } from '../pki/errors.ts';

const policy = loadPolicyFile();
const dev = (id: string, fleet?: string): PolicyContext => ({ kind: 'device', id, fleet });
const A = dev('a', 'f1');
const SVC: PolicyContext = { kind: 'service', id: 'ingest' };

describe('default policy: a device', () => {
  it.each([
    ['its own telemetry', 'devices/a/telemetry'],
    ['its own telemetry sub-topics', 'devices/a/telemetry/temp/1'],
    ['its own state', 'devices/a/state'],
  ])('may publish %s (%s)', (_, topic) => {
    expect(canPublish(policy, A, topic)).toBe(true);
  });

  it.each([
    ["another device's telemetry", 'devices/b/telemetry'],
    ["another device's state", 'devices/b/state'],
    ['commands (even its own)', 'devices/a/commands/reboot'],
    ['a fleet broadcast', 'fleets/f1/broadcast/x'],
    ['$SYS', '$SYS/broker/clients'],
    ['an unrelated topic', 'random'],
    ['a prefix of its telemetry', 'devices/a'],
    ['a topic with a wildcard', 'devices/a/telemetry/+'],
    ['a topic with #', 'devices/a/telemetry/#'],
    ['an empty topic', ''],
    ['a topic with NUL', 'devices/a/telemetry/\u0000'],
    ['a topic over 65535 bytes', `devices/a/telemetry/${'x'.repeat(65536)}`],
    ['an empty level instead of its id', 'devices//telemetry'],
  ])('may not publish %s (%j)', (_, topic) => {
    expect(canPublish(policy, A, topic)).toBe(false);
  });

  it.each([
    ['its own commands', 'devices/a/commands/#'],
    ['one of its own commands', 'devices/a/commands/reboot'],
    ['its commands one level deep', 'devices/a/commands/+'],
    ["its fleet's broadcasts", 'fleets/f1/broadcast/#'],
    ["one of its fleet's broadcasts", 'fleets/f1/broadcast/ota/+'],
  ])('may subscribe to %s (%s)', (_, filter) => {
    expect(canSubscribe(policy, A, filter)).toBe(true);
  });

  it.each([
    ["another device's commands", 'devices/b/commands/#'],
    ['every device’s commands, though that includes its own', 'devices/+/commands/#'],
    ['everything', '#'],
    ['every top level', '+/a/commands/#'],
    ['all devices', 'devices/#'],
    ['its whole subtree', 'devices/a/#'],
    ['another fleet', 'fleets/f2/broadcast/#'],
    ['every fleet', 'fleets/+/broadcast/#'],
    ['$SYS', '$SYS/#'],
    ['a $SYS topic', '$SYS/broker/uptime'],
    ['a malformed filter (# not last)', 'devices/a/commands/#/x'],
    ['a malformed filter (+ inside a level)', 'devices/a/commands/re+'],
    ['an empty filter', ''],
  ])('may not subscribe to %s (%s)', (_, filter) => {
    expect(canSubscribe(policy, A, filter)).toBe(false);
  });

  it('without a fleet gets no fleet broadcasts, not an empty-level one', () => {
    const noFleet = dev('a');
    expect(canSubscribe(policy, noFleet, 'fleets//broadcast/#')).toBe(false);
    expect(canSubscribe(policy, noFleet, 'fleets/+/broadcast/#')).toBe(false);
    expect(canSubscribe(policy, noFleet, 'devices/a/commands/#')).toBe(true);
  });
});

describe('default policy: hostile ids and fleets never widen access', () => {
  const hostile = ['+', '#', 'a/b', 'a/+', '', 'a\u0000', 'a\nb', '$SYS', '..', 'a b', 'x'.repeat(65)];
  it.each(hostile)('a device with id %j can publish and subscribe to nothing', (id) => {
    const ctx = dev(id, 'f1');
    for (const t of ['devices/a/telemetry', `devices/${id}/telemetry`, 'devices/+/telemetry', '#']) {
      expect(canPublish(policy, ctx, t)).toBe(false);
    }
    for (const f of ['devices/a/commands/#', `devices/${id}/commands/#`, 'fleets/f1/broadcast/#', '#']) {
      expect(canSubscribe(policy, ctx, f)).toBe(false);
    }
  });
  it.each(hostile)('a fleet %j grants no broadcast subscription', (fleet) => {
    const ctx = dev('a', fleet);
    for (const f of [
      'fleets/+/broadcast/#',
      `fleets/${fleet}/broadcast/#`,
      'fleets/#',
      'fleets//broadcast/#',
    ]) {
      expect(canSubscribe(policy, ctx, f)).toBe(false);
    }
    expect(canSubscribe(policy, ctx, 'devices/a/commands/#')).toBe(true);
  });
});

describe('default policy: services, stations, operators', () => {
  it.each([
    ['subscribe', 'devices/+/telemetry/#', true],
    ['subscribe', 'devices/a/telemetry', true],
    ['subscribe', 'devices/+/state', true],
    ['subscribe', 'devices/#', false],
    ['subscribe', '#', false],
    ['subscribe', '$SYS/#', false],
    ['publish', 'devices/a/commands/reboot', true],
    ['publish', 'fleets/f1/broadcast/ota', true],
    ['publish', 'devices/a/telemetry', false],
    ['publish', '$SYS/x', false],
  ] as const)('a role-less service: %s %s → %s', (action, topic, allowed) => {
    const fn = action === 'publish' ? canPublish : canSubscribe;
    expect(fn(policy, SVC, topic)).toBe(allowed);
  });
  it.each(['station', 'operator'] as const)('a %s gets nothing on MQTT', (kind) => {
    const ctx: PolicyContext = { kind, id: 'a' };
    expect(canPublish(policy, ctx, 'devices/a/telemetry')).toBe(false);
    expect(canSubscribe(policy, ctx, 'devices/a/commands/#')).toBe(false);
  });
});

describe('policy rules: roles, deny rules, first match, $ topics', () => {
  const p = compilePolicy({
    rules: [
      { kind: 'service', effect: 'deny', actions: ['subscribe', 'publish'], topics: ['devices/secret/#'] },
      { kind: 'service', roles: ['ota'], actions: ['publish'], topics: ['fleets/+/broadcast/ota/${role}'] },
      { kind: 'service', actions: ['subscribe'], topics: ['devices/+/telemetry/#', '$share/x/#'] },
      { kind: 'service', actions: ['publish'], topics: ['#'] },
      { kind: 'device', action: 'publish', topic: '${product}/${id}/t' },
    ],
  });
  const ota: PolicyContext = { kind: 'service', id: 's1', role: 'ota' };
  it('a deny rule listed first wins over a later allow', () => {
    expect(canPublish(p, ota, 'devices/secret/x')).toBe(false);
    expect(canPublish(p, ota, 'devices/other/x')).toBe(true);
  });
  it('a subscription that merely overlaps an earlier deny rule is refused', () => {
    expect(canSubscribe(p, ota, 'devices/+/telemetry/#')).toBe(false);
    expect(canSubscribe(p, ota, 'devices/d1/telemetry/#')).toBe(true);
  });
  it('roles restrict a rule to services holding them, and fill ${role}', () => {
    expect(bindPolicy(p, ota).canPublish('fleets/f/broadcast/ota/ota')).toBe(true);
  });
  it("a top-level '#' rule does not grant topics starting with '$' [MQTT-4.7.2-1]", () => {
    expect(canPublish(p, ota, '$share/x')).toBe(false);
    expect(canPublish(p, ota, 'x')).toBe(true);
  });
  it("an explicit '$' rule grants exactly that tree, and never $SYS", () => {
    expect(canSubscribe(p, ota, '$share/x/y')).toBe(true);
    expect(canSubscribe(p, ota, '+/x/y')).toBe(false);
  });
  it('several placeholders in one level or topic are all filled strictly', () => {
    expect(canPublish(p, { kind: 'device', id: 'd', product: 'p1' }, 'p1/d/t')).toBe(true);
    expect(canPublish(p, { kind: 'device', id: 'd' }, '/d/t')).toBe(false);
    expect(canPublish(p, { kind: 'device', id: 'd' }, 'undefined/d/t')).toBe(false);
  });
});

describe('compilePolicy: a bad document fails with the position of the problem', () => {
  const ok = { kind: 'device', actions: ['publish'], topics: ['devices/${id}/t'] };
  it.each([
    ['not an object', 42, '(root)'],
    ['rules missing', {}, 'rules'],
    ['unknown top-level key', { rules: [], extra: 1 }, 'extra'],
    ['unknown kind', { rules: [ok, { ...ok, kind: 'robot' }] }, 'rules[1].kind'],
    ['station on MQTT', { rules: [{ ...ok, kind: 'station' }] }, 'rules[0].kind'],
    ['unknown action', { rules: [ok, ok, { ...ok, actions: ['publish', 'read'] }] }, 'rules[2].actions[1]'],
    ['no actions', { rules: [{ ...ok, actions: [] }] }, 'rules[0].actions'],
    ['unknown effect', { rules: [{ ...ok, effect: 'maybe' }] }, 'rules[0].effect'],
    [
      'unknown placeholder',
      { rules: [ok, ok, ok, { ...ok, topics: ['a', 'x/${user}'] }] },
      'rules[3].topics[1]',
    ],
    ['unterminated placeholder', { rules: [{ ...ok, topics: ['x/${id'] }] }, 'rules[0].topics[0]'],
    ['# not last', { rules: [{ ...ok, topics: ['a/#/b'] }] }, 'rules[0].topics[0]'],
    ['# inside a level', { rules: [{ ...ok, topics: ['a/b#'] }] }, 'rules[0].topics[0]'],
    ['+ inside a level', { rules: [{ ...ok, topics: ['a/${id}+'] }] }, 'rules[0].topics[0]'],
    ['empty topic', { rules: [{ kind: 'device', action: 'publish', topic: '' }] }, 'rules[0].topic'],
    ['non-string topic', { rules: [{ ...ok, topics: [7] }] }, 'rules[0].topics[0]'],
    ['NUL in topic', { rules: [{ ...ok, topics: ['a\u0000'] }] }, 'rules[0].topics[0]'],
    ['control character', { rules: [{ ...ok, topics: ['a\u0007'] }] }, 'rules[0].topics[0]'],
    ['$SYS rule', { rules: [{ ...ok, topics: ['$SYS/#'] }] }, 'rules[0].topics[0]'],
    ['unknown rule key', { rules: [{ ...ok, allow: true }] }, 'rules[0].allow'],
    ['bad role', { rules: [{ ...ok, roles: ['a/b'] }] }, 'rules[0].roles[0]'],
    ['bad version', { version: 2, rules: [] }, 'version'],
  ])('%s → %s', (_, doc, position) => {
    let err: unknown;
    try {
      compilePolicy(doc);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PolicyError);
    expect(isFleetError(err, 'BROKER_POLICY_INVALID')).toBe(true);
    expect((err as PolicyError).position).toBe(position);
    expect((err as PolicyError).details).toMatchObject({ position });
  });

  it('reads JSON and YAML files, and names an unreadable one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleet-policy-'));
    writeFileSync(join(dir, 'p.json'), JSON.stringify({ rules: [ok] }));
    writeFileSync(
      join(dir, 'p.yml'),
      'rules:\n  - kind: device\n    actions: [publish]\n    topics: ["x/${id}"]\n',
    );
    writeFileSync(join(dir, 'bad.yaml'), 'rules: [\n');
    expect(canPublish(loadPolicyFile(join(dir, 'p.json')), A, 'devices/a/t')).toBe(true);
    expect(canPublish(loadPolicyFile(join(dir, 'p.yml')), A, 'x/a')).toBe(true);
    expect(() => loadPolicyFile(join(dir, 'bad.yaml'))).toThrow(
      expect.objectContaining({ code: 'BROKER_POLICY_UNREADABLE' }),
    );
    expect(() => loadPolicyFile(join(dir, 'missing.json'))).toThrow(
      expect.objectContaining({ code: 'BROKER_POLICY_UNREADABLE' }),
    );
  });

  it('a compiled policy is frozen', () => {
    const p = compilePolicy({ rules: [ok] });
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.rules)).toBe(true);
  });
});

describe('topic syntax', () => {
  it.each([
    ['a', true],
    ['a/b/', true],
    ['/', true],
    ['', false],
    ['a/+', false],
    ['a#', false],
    ['a\u0000', false],
  ])('topic name %j valid: %s', (t, valid) => {
    expect(topicNameProblem(t) === undefined).toBe(valid);
  });
  it.each([
    ['#', true],
    ['+', true],
    ['a/+/b/#', true],
    ['+/+', true],
    ['a/#/b', false],
    ['a+', false],
    ['a/b#', false],
    ['', false],
  ])('topic filter %j valid: %s', (t, valid) => {
    expect(topicFilterProblem(t) === undefined).toBe(valid);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Property test: the inclusion and intersection checks against brute-force enumeration.

/** Reference matcher straight from the spec: '+' one level (may be empty), '#' zero or more, $ rule. */
function refMatch(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false; // [MQTT-4.7.2-1]
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['a', 'b', '$s', ''];
/** Topics up to 5 levels over WORDS plus a word no filter uses, so '+' and '#' are tested honestly. */
const UNIVERSE: string[] = (() => {
  const words = [...WORDS, 'z'];
  const out: string[] = [];
  let frontier = [''];
  for (let depth = 1; depth <= 5; depth++) {
    const next: string[] = [];
    for (const prefix of frontier) {
      for (const w of words) next.push(depth === 1 ? w : `${prefix}/${w}`);
    }
    out.push(...next.filter((t) => t !== ''));
    frontier = next;
  }
  return out;
})();

function randomFilter(r: () => number): string {
  const n = 1 + Math.floor(r() * 4);
  const levels: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = r();
    if (i === n - 1 && x < 0.2) levels.push('#');
    else if (x < 0.45) levels.push('+');
    else levels.push(WORDS[Math.floor(r() * WORDS.length)]!);
  }
  const f = levels.join('/');
  return f === '' ? randomFilter(r) : f; // '' is not a valid filter
}

describe('filter inclusion is exact (random filters vs brute force over a small topic universe)', () => {
  it('covers(P, F) holds exactly when every topic matching F matches P', () => {
    const r = rng(1);
    for (let n = 0; n < 3000; n++) {
      const p = randomFilter(r);
      const f = randomFilter(r);
      const brute = UNIVERSE.every((t) => !refMatch(f, t) || refMatch(p, t));
      expect({ p, f, covers: covers(p.split('/'), f.split('/')) }).toEqual({ p, f, covers: brute });
    }
  });

  it('intersects(A, B) holds exactly when some topic matches both', () => {
    const r = rng(2);
    for (let n = 0; n < 3000; n++) {
      const a = randomFilter(r);
      const b = randomFilter(r);
      const brute = UNIVERSE.some((t) => refMatch(a, t) && refMatch(b, t));
      expect({ a, b, hit: intersects(a.split('/'), b.split('/')) }).toEqual({ a, b, hit: brute });
    }
  });

  it('a subscription is allowed only if every topic it reaches is allowed (sound)', () => {
    const p = compilePolicy({
      rules: [
        { kind: 'device', effect: 'deny', actions: ['subscribe'], topics: ['a/b/$s'] },
        { kind: 'device', actions: ['subscribe'], topics: ['a/+/#', '${id}/+', '$s/#', 'b/${id}/b'] },
      ],
    });
    const bound = bindPolicy(p, { kind: 'device', id: 'b' });
    const topicAllowed = (t: string) =>
      !refMatch('a/b/$s', t) && ['a/+/#', 'b/+', '$s/#', 'b/b/b'].some((q) => refMatch(q, t));
    const r = rng(3);
    let allowedSeen = 0;
    for (let n = 0; n < 3000; n++) {
      const f = randomFilter(r);
      if (bound.canSubscribe(f)) {
        allowedSeen++;
        const leak = UNIVERSE.find((t) => refMatch(f, t) && !topicAllowed(t));
        expect({ f, leak }).toEqual({ f, leak: undefined });
      }
    }
    expect(allowedSeen).toBeGreaterThan(50);
  });

  it('publish decisions match the brute-force first-match evaluation', () => {
    const bound = bindPolicy(policy, A);
    for (const t of UNIVERSE.map((u) => u.replaceAll('$s', 'devices').replaceAll('z', 'telemetry'))) {
      const brute = ['devices/a/telemetry', 'devices/a/telemetry/#', 'devices/a/state'].some((q) =>
        refMatch(q, t),
      );
      expect({ t, ok: bound.canPublish(t) }).toEqual({ t, ok: brute });
    }
  });
});
