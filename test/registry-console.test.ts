/**
 * The console's registry queries (registry/console.ts) and what the 0003 triggers keep, on PGlite always
 * and on PostgreSQL when DATABASE_URL is set: counters that always equal a real count, presence history
 * across node moves, keyset-paged searches, single-use sign-in links, sessions; and on both, the plans of
 * the console's list, search and count queries over 10,000 devices use indexes, never a sequential scan
 * of `devices`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explainCall } from '../console/bench/explain.ts';
import { seedDevices } from '../console/bench/seed.ts';
import { isFleetError } from '../pki/errors.ts';
import {
  cascadePreview,
  connectedCount,
  countDevices,
  createConsoleLink,
  dbOf,
  deviceCounts,
  expiringCount,
  liveConsoleSession,
  prefixUpperBound,
  presenceHistoryOf,
  redeemConsoleLink,
  revocationsSince,
  revokeConsoleSessions,
  searchDevices,
  touchConsoleSession,
} from '../registry/console.ts';
import type { Db } from '../registry/db.ts';
import type { IssueRecord, Registry } from '../registry/index.ts';
import { backends } from './helpers/provisioning.ts';

let n = 0;
const uid = (p: string) => `${p}-${process.pid}-${++n}-${randomBytes(3).toString('hex')}`;
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

function device(id: string, over: { product?: string; fleet?: string; station?: string } = {}): IssueRecord {
  const der = randomBytes(48);
  const station = over.station ?? 'line-c';
  return {
    subject: { kind: 'device', id, product: over.product ?? 'thermo', fleet: over.fleet ?? 'eu' },
    certificate: {
      // A canonical serial, as the CA writes one: a leading zero octet is not canonical (1 in 256 of random ones).
      serial: `7${randomBytes(16).toString('hex').slice(1)}`,
      issuerCa: 'device',
      der,
      fingerprintSha256: sha(der),
      spkiSha256: sha(randomBytes(32)),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 20 * 365 * 86_400_000),
    },
    enrolledBy: station,
    actor: `station:${station}`,
  };
}

async function rows(db: Db, q: ReturnType<typeof sql>): Promise<Record<string, unknown>[]> {
  const r = (await db.execute(q)) as unknown;
  return (Array.isArray(r) ? r : (r as { rows: Record<string, unknown>[] }).rows) as Record<
    string,
    unknown
  >[];
}

/** The ground truth the counters must equal. */
async function realDeviceCounts(db: Db) {
  const out = { active: 0, suspended: 0, revoked: 0 } as Record<string, number>;
  for (const r of await rows(db, sql`select status, count(*)::int as n from devices group by status`))
    out[r['status'] as string] = Number(r['n']);
  return out;
}

async function expectCode(p: Promise<unknown>, code: string) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFleetError(err) ? err.code : err).toBe(code);
}

describe.each(backends('regconsole'))('console queries on $name', (backend) => {
  let reg: Registry;
  let db: Db;

  beforeAll(async () => {
    reg = await backend.open();
    db = dbOf(reg);
  });
  afterAll(async () => {
    await reg?.close();
    await backend.cleanup();
  });

  it('keeps devices-by-status counters equal to a real count through issue, suspend, revoke and cascade', async () => {
    const station = uid('st');
    const ids = Array.from({ length: 12 }, () => uid('cnt'));
    await reg.recordIssuedBatch(ids.map((id) => device(id, { station })));
    await reg.setStatus({ kind: 'device', id: ids[0]!, status: 'suspended', actor: 'operator:t' });
    await reg.setStatus({ kind: 'device', id: ids[1]!, status: 'revoked', actor: 'operator:t' });
    await reg.setStatus({ kind: 'device', id: ids[0]!, status: 'active', actor: 'operator:t' });
    await reg.setStatus({ kind: 'device', id: ids[2]!, status: 'suspended', actor: 'operator:t' });
    const preview = await cascadePreview(db, station, new Date(Date.now() - 3600_000), new Date());
    expect(preview.devices).toBe(11); // ids[1] is revoked already
    const c = await reg.revokeEnrolledBy({
      stationId: station,
      from: new Date(Date.now() - 3600_000),
      to: new Date(),
      actor: 'operator:t',
    });
    expect(c.ids.length).toBe(preview.devices);
    const counted = await deviceCounts(db);
    const real = await realDeviceCounts(db);
    expect({ active: counted.active, suspended: counted.suspended, revoked: counted.revoked }).toEqual(real);
    expect(counted.total).toBe(real['active']! + real['suspended']! + real['revoked']!);
    const today = await revocationsSince(db, new Date(Date.now() - 3600_000));
    expect(today.device).toBeGreaterThanOrEqual(12);
  });

  it('counts connected devices and keeps each connection in the history, across a move between nodes', async () => {
    const id = uid('pres');
    await reg.recordIssuedBatch([device(id)]);
    const before = await connectedCount(db);
    const t = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
    await reg.recordPresence([
      { kind: 'device', id, event: 'connect', at: t(1), brokerNode: 'node-a', remoteAddress: '10.0.0.1' },
    ]);
    expect(await connectedCount(db)).toBe(before + 1);
    // It moves to node-b; node-a's disconnect lands after node-b's connect.
    await reg.recordPresence([
      { kind: 'device', id, event: 'connect', at: t(5), brokerNode: 'node-b', remoteAddress: '10.0.0.2' },
    ]);
    await reg.recordPresence([{ kind: 'device', id, event: 'disconnect', at: t(6), brokerNode: 'node-a' }]);
    expect(await connectedCount(db)).toBe(before + 1);
    let h = await presenceHistoryOf(db, 'device', id);
    expect(
      h.map((r) => [
        r.brokerNode,
        r.remoteAddress,
        r.connectedAt.getTime(),
        r.disconnectedAt?.getTime() ?? null,
      ]),
    ).toEqual([
      ['node-b', '10.0.0.2', t(5).getTime(), null],
      ['node-a', '10.0.0.1', t(1).getTime(), t(6).getTime()],
    ]);
    // A disconnect and a reconnect in one batch: the old session ends, a new one starts.
    await reg.recordPresence([
      { kind: 'device', id, event: 'disconnect', at: t(8), brokerNode: 'node-b' },
      { kind: 'device', id, event: 'connect', at: t(9), brokerNode: 'node-b', remoteAddress: '10.0.0.3' },
    ]);
    await reg.recordPresence([{ kind: 'device', id, event: 'disconnect', at: t(12), brokerNode: 'node-b' }]);
    expect(await connectedCount(db)).toBe(before);
    h = await presenceHistoryOf(db, 'device', id);
    expect(
      h.map((r) => [r.remoteAddress, r.connectedAt.getTime(), r.disconnectedAt?.getTime() ?? null]),
    ).toEqual([
      ['10.0.0.3', t(9).getTime(), t(12).getTime()],
      ['10.0.0.2', t(5).getTime(), t(8).getTime()],
      ['10.0.0.1', t(1).getTime(), t(6).getTime()],
    ]);
    const real = await rows(
      db,
      sql`select count(*)::int as n from presence where kind = 'device' and connected`,
    );
    expect(await connectedCount(db)).toBe(Number(real[0]!['n']));
  });

  it('searches by id prefix in byte order, by product, fleet, station, status and connection, page by page', async () => {
    const p = uid('srch');
    const station = uid('st');
    // Byte order: digits, upper case, "_", lower case; "_" and "." are literal, not wildcards.
    const ids = [`${p}-A`, `${p}-B_x`, `${p}-Bax`, `${p}-a.1`, `${p}-a.2`, `${p}-b`, `${p}_z`];
    await reg.recordIssuedBatch(
      ids.map((id, i) =>
        device(id, { product: i % 2 ? 'meter' : 'thermo', fleet: i < 3 ? 'us' : 'eu', station }),
      ),
    );
    await reg.setStatus({ kind: 'device', id: ids[3]!, status: 'suspended', actor: 'operator:t' });
    await reg.recordPresence([
      { kind: 'device', id: ids[1]!, event: 'connect', at: new Date(), brokerNode: 'n1' },
      { kind: 'device', id: ids[5]!, event: 'connect', at: new Date(), brokerNode: 'n1' },
    ]);
    const all: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await searchDevices(db, { prefix: p, limit: 2, ...(cursor ? { cursor } : {}) });
      all.push(...page.items.map((d) => d.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(all).toEqual([...ids].sort((a, b) => (Buffer.from(a) < Buffer.from(b) ? -1 : 1)));
    const ids1 = async (q: Parameters<typeof searchDevices>[1]) =>
      (await searchDevices(db, { prefix: p, ...q })).items.map((d) => d.id);
    expect(await ids1({ prefix: `${p}-B_` })).toEqual([`${p}-B_x`]);
    expect(await ids1({ prefix: `${p}-a.` })).toEqual([`${p}-a.1`, `${p}-a.2`]);
    expect(await ids1({ product: 'meter' })).toEqual([ids[1], ids[3], ids[5]]);
    expect(await ids1({ fleet: 'us', product: 'thermo' })).toEqual([ids[0], ids[2]]);
    expect(await ids1({ station, status: 'suspended' })).toEqual([ids[3]]);
    expect(await ids1({ connected: true })).toEqual([ids[1], ids[5]]);
    expect((await ids1({ connected: false })).length).toBe(5);
    expect((await searchDevices(db, { prefix: p, connected: true })).items[0]!.brokerNode).toBe('n1');
    expect(await countDevices(db, { station })).toEqual({ n: 7, capped: false });
    expect(await countDevices(db, { station }, 5)).toEqual({ n: 5, capped: true });
    expect(await countDevices(db, { station, connected: true })).toEqual({ n: 2, capped: false });
    expect(prefixUpperBound('ab_')).toBe('ab`');
  });

  it('refuses malformed search input with a typed error', async () => {
    await expectCode(searchDevices(db, { prefix: "x' or 1=1" }), 'ID_INVALID');
    await expectCode(searchDevices(db, { status: 'gone' as never }), 'REGISTRY_INVALID_INPUT');
    await expectCode(searchDevices(db, { limit: 0 }), 'REGISTRY_INVALID_INPUT');
    await expectCode(cascadePreview(db, 'line-1', new Date(2), new Date(1)), 'REGISTRY_INVALID_INPUT');
  });

  it('redeems a sign-in link once: a second use, an expired link and an unknown one open no session', async () => {
    const token = randomBytes(32);
    const link = await createConsoleLink(db, {
      tokenSha256: sha(token),
      operator: 'admin',
      expiresAt: new Date(Date.now() + 60_000),
    });
    expect(link.usedAt).toBeNull();
    const s = () => ({
      idSha256: sha(randomBytes(32)),
      csrf: randomBytes(16).toString('hex'),
      expiresAt: new Date(Date.now() + 3600_000),
      address: '127.0.0.1',
      userAgent: 'test',
    });
    // Two at once with the same link: exactly one session.
    const both = await Promise.all([
      redeemConsoleLink(db, sha(token), s()),
      redeemConsoleLink(db, sha(token), s()),
    ]);
    expect(both.filter((r) => 'session' in r).length).toBe(1);
    expect(both.find((r) => 'refused' in r)).toEqual({ refused: 'used', operator: 'admin' });
    const expired = randomBytes(32);
    await createConsoleLink(db, {
      tokenSha256: sha(expired),
      operator: 'admin',
      expiresAt: new Date(Date.now() - 1),
    });
    expect(await redeemConsoleLink(db, sha(expired), s())).toEqual({ refused: 'expired', operator: 'admin' });
    expect(await redeemConsoleLink(db, sha(randomBytes(32)), s())).toEqual({ refused: 'unknown' });
  });

  it('ends sessions by revocation, by idle time and by their end, and reports the operator status', async () => {
    const op = uid('op');
    await reg.createPrincipal({ kind: 'operator', id: op }, 'system:test');
    const open = async (expiresInMs = 3600_000) => {
      const token = randomBytes(32);
      await createConsoleLink(db, {
        tokenSha256: sha(token),
        operator: op,
        expiresAt: new Date(Date.now() + 60_000),
      });
      const id = sha(randomBytes(32));
      const r = await redeemConsoleLink(db, sha(token), {
        idSha256: id,
        csrf: 'c',
        expiresAt: new Date(Date.now() + expiresInMs),
        address: null,
        userAgent: null,
      });
      expect('session' in r).toBe(true);
      return id;
    };
    const a = await open();
    expect((await liveConsoleSession(db, a, 60))?.operatorStatus).toBe('active');
    await reg.setStatus({ kind: 'operator', id: op, status: 'suspended', actor: 'operator:t' });
    expect((await liveConsoleSession(db, a, 60))?.operatorStatus).toBe('suspended');
    await reg.setStatus({ kind: 'operator', id: op, status: 'active', actor: 'operator:t' });
    // Idle: last seen two minutes ago is dead with a one-minute idle limit, alive after a touch.
    await db.execute(
      sql`update console_sessions set last_seen_at = now() - interval '2 minutes' where id_sha256 = ${a}`,
    );
    expect(await liveConsoleSession(db, a, 60)).toBeUndefined();
    await touchConsoleSession(db, a);
    expect(await liveConsoleSession(db, a, 60)).toBeDefined();
    const b = await open(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(await liveConsoleSession(db, b, 60)).toBeUndefined();
    const c = await open();
    expect(
      (await revokeConsoleSessions(db, { operator: op }, 'operator:t')).map((s) => s.idSha256).sort(),
    ).toEqual([a, c].sort());
    expect(await liveConsoleSession(db, a, 60)).toBeUndefined();
    expect(await liveConsoleSession(db, c, 60)).toBeUndefined();
    expect(await liveConsoleSession(db, 'not-hex', 60)).toBeUndefined();
  });

  it('lists, searches and counts 10,000 devices through indexes, never a sequential scan of devices', async () => {
    const prefix = uid('plan');
    await seedDevices(db, {
      prefix,
      count: 10_000,
      // Enough status changes (about 3,400) that an index beats reading the table.
      revokedEvery: 5,
      suspendedEvery: 7,
      stations: ['plan-st', 'plan-st2', 'plan-st3'],
      products: ['plan-p', 'plan-q'],
    });
    await db.execute(sql`analyze devices`);
    await db.execute(sql`analyze presence`);
    await db.execute(sql`analyze certificates`);
    await db.execute(sql`analyze status_changes`);
    const plans: Record<string, string> = {};
    const explain = async (name: string, run: () => Promise<unknown>) => {
      plans[name] = await explainCall(db, run);
      return plans[name]!;
    };
    const cases: [string, () => Promise<unknown>][] = [
      ['first page', () => searchDevices(db, {})],
      ['page after a cursor', () => searchDevices(db, { cursor: `${prefix}-005000` })],
      ['id prefix', () => searchDevices(db, { prefix: `${prefix}-0123` })],
      ['product', () => searchDevices(db, { product: 'plan-p', cursor: `${prefix}-002500` })],
      ['fleet', () => searchDevices(db, { fleet: 'apac' })],
      ['station', () => searchDevices(db, { station: 'plan-st' })],
      ['revoked', () => searchDevices(db, { status: 'revoked' })],
      ['connected', () => searchDevices(db, { connected: true })],
      ['capped count', () => countDevices(db, { station: 'plan-st' }, 1000)],
      ['capped count, connected', () => countDevices(db, { product: 'plan-p', connected: true })],
      ['capped count, not connected', () => countDevices(db, { fleet: 'eu', connected: false })],
      ['count by status (counters)', () => countDevices(db, { status: 'revoked' })],
      ['counts', () => deviceCounts(db)],
      ['connected count', () => connectedCount(db)],
      ['expiring count', () => expiringCount(db, 90)],
      ['revoked today', () => revocationsSince(db, new Date(Date.now() - 86_400_000))],
      ['cascade preview', () => cascadePreview(db, 'plan-st', new Date(Date.now() - 600_000), new Date())],
    ];
    for (const [name, run] of cases) {
      const plan = await explain(name, run);
      expect(plan, `${name}:\n${plan}`).not.toMatch(
        /Seq Scan on (devices|presence|certificates|status_changes)\b/,
      );
    }
    if (process.env['FLEET_SHOW_PLANS'])
      console.log(
        Object.entries(plans)
          .map(([k, v]) => `-- ${k}\n${v}`)
          .join('\n'),
      );
  }, 120_000);
});
