/**
 * The queries the operator console needs, beside the Registry class: functions over its database handle
 * (`dbOf(registry)`), on PGlite and PostgreSQL alike.
 *
 * Every list is keyset-paged in id byte order (`id collate "C"`, matched by the indexes in schema.ts), so a
 * page costs the same on the first and on the thousandth page, and an id prefix is one index range. Counts
 * come from the trigger-kept `counters` (devices by status, connected now) or from index ranges bounded by
 * what they count (expiring soon, revoked today); a filtered search count stops at a cap. Nothing here
 * scans a whole table.
 */
import { and, count, desc, eq, gt, gte, isNull, lt, lte, or, type SQL, sql } from 'drizzle-orm';
import {
  type ConsoleLinkRow,
  type ConsoleSessionRow,
  consoleLinks,
  consoleSessions,
  counters,
  type PresenceHistoryRow,
  presenceHistory,
} from './console-schema.ts';
import type { Db } from './db.ts';
import { RegistryError } from './errors.ts';
import type { Page, Registry } from './index.ts';
import {
  certificates,
  type DeviceRow,
  devices,
  presence,
  principals,
  SUBJECT_STATUSES,
  type SubjectKind,
  type SubjectStatus,
  statusChanges,
} from './schema.ts';
import { assertId } from './validation.ts';

/** The registry's database handle for the functions below (REGISTRY_CLOSED once it is closed). */
export function dbOf(registry: Registry): Db {
  return registry.database;
}

const MAX_LIMIT = 200;
const HEX_SHA256 = /^[0-9a-f]{64}$/;

function invalid(message: string, field: string): RegistryError {
  return new RegistryError('REGISTRY_INVALID_INPUT', message, { details: { field } });
}

function checkLimit(limit: number | undefined, dflt = 50): number {
  if (limit === undefined) return dflt;
  if (!Number.isInteger(limit) || limit < 1) throw invalid('limit must be a positive integer', 'limit');
  return Math.min(limit, MAX_LIMIT);
}

function checkDate(v: unknown, field: string): Date {
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) throw invalid(`${field} is not a valid date`, field);
  return v;
}

function checkSha256(v: unknown, field: string): string {
  if (typeof v !== 'string' || !HEX_SHA256.test(v))
    throw invalid(`${field} must be 64 lowercase hex digits`, field);
  return v;
}

/**
 * `devices.id` qualified, for correlated sub-selects (drizzle writes a column of the only table in a query
 * unqualified, which inside a sub-select would name the sub-select's own `id`).
 */
const DEVICE_ID = sql.raw('"devices"."id"');

/**
 * "Not connected now" as a scalar sub-select: a primary-key lookup per device walked in index order (a
 * NOT EXISTS would be turned into an anti-join that may hash all of presence).
 */
const notConnected = sql`coalesce((select p.connected from presence p
  where p.kind = 'device' and p.id = ${DEVICE_ID}), false) = false`;

/** `id` in byte order: the expression the console's indexes are built on. */
const byteOrder = (col: unknown) => sql`${col} collate "C"`;

/** The smallest string above every string that starts with `prefix` (ids are ASCII). */
export function prefixUpperBound(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

// ------------------------------------------------------------------------------------------------ counts

export interface DeviceCounts {
  active: number;
  suspended: number;
  revoked: number;
  total: number;
}

/** Devices by status, from the trigger-kept counters (a few rows, whatever the fleet's size). */
export async function deviceCounts(db: Db): Promise<DeviceCounts> {
  const rows = await db
    .select({ key: counters.key, n: sql<string | number>`sum(${counters.n})` })
    .from(counters)
    .where(sql`${counters.key} like 'devices.%'`)
    .groupBy(counters.key);
  const out: DeviceCounts = { active: 0, suspended: 0, revoked: 0, total: 0 };
  for (const r of rows) {
    const status = r.key.slice('devices.'.length) as SubjectStatus;
    if (SUBJECT_STATUSES.includes(status)) out[status] = Number(r.n);
  }
  out.total = out.active + out.suspended + out.revoked;
  return out;
}

/** Subjects of a kind connected now, from the trigger-kept counter of `presence`. */
export async function connectedCount(db: Db, kind: SubjectKind = 'device'): Promise<number> {
  const [r] = await db
    .select({ n: sql<string | number | null>`sum(${counters.n})` })
    .from(counters)
    .where(eq(counters.key, `presence.${kind}.connected`));
  return Number(r?.n ?? 0);
}

/** Revocations of whole subjects since `since`, by kind (an index range over the revocations only). */
export async function revocationsSince(db: Db, since: Date): Promise<Record<SubjectKind, number>> {
  checkDate(since, 'since');
  const rows = await db
    .select({ kind: statusChanges.kind, n: count() })
    .from(statusChanges)
    .where(
      and(eq(statusChanges.status, 'revoked'), gte(statusChanges.at, since), isNull(statusChanges.serial)),
    )
    .groupBy(statusChanges.kind);
  const out: Record<SubjectKind, number> = { device: 0, service: 0, station: 0, operator: 0 };
  for (const r of rows) out[r.kind] = Number(r.n);
  return out;
}

/** Active certificates whose notAfter is before `now + days` (expired ones included), by subject kind. */
export async function expiringCount(db: Db, days: number): Promise<number> {
  if (typeof days !== 'number' || !Number.isFinite(days) || days < 0)
    throw invalid('days must be a non-negative number', 'days');
  const [r] = await db
    .select({ n: count() })
    .from(certificates)
    .where(
      and(
        eq(certificates.status, 'active'),
        sql`${certificates.notAfter} <= now() + (${days} * interval '1 day')`,
      ),
    );
  return Number(r?.n ?? 0);
}

// ------------------------------------------------------------------------------------------------ devices

export interface DeviceSearch {
  /** Devices whose id starts with this. */
  prefix?: string;
  product?: string;
  fleet?: string;
  /** Station id that enrolled them. */
  station?: string;
  status?: SubjectStatus;
  /** true: connected now; false: not connected now. */
  connected?: boolean;
  /** The last id of the previous page. */
  cursor?: string;
  /** Default 50, at most 200. */
  limit?: number;
}

export interface DeviceListRow extends DeviceRow {
  connected: boolean;
  connectedAt: Date | null;
  disconnectedAt: Date | null;
  brokerNode: string | null;
  remoteAddress: string | null;
}

function checkSearch(q: DeviceSearch): void {
  if (q.prefix !== undefined && q.prefix !== '') assertId(q.prefix, 'id prefix');
  if (q.product !== undefined) assertId(q.product, 'product');
  if (q.fleet !== undefined) assertId(q.fleet, 'fleet');
  if (q.station !== undefined) assertId(q.station, 'station id');
  if (q.status !== undefined && !SUBJECT_STATUSES.includes(q.status))
    throw invalid(`status must be one of ${SUBJECT_STATUSES.join(', ')}`, 'status');
  if (q.connected !== undefined && typeof q.connected !== 'boolean')
    throw invalid('connected must be true or false', 'connected');
  if (q.cursor !== undefined) assertId(q.cursor, 'cursor');
}

/** The filters on `devices` (the connected filter is the caller's: it changes the query's shape). */
function deviceFilters(q: DeviceSearch): SQL[] {
  const where: SQL[] = [];
  if (q.prefix) {
    where.push(sql`${byteOrder(devices.id)} >= ${q.prefix}`);
    where.push(sql`${byteOrder(devices.id)} < ${prefixUpperBound(q.prefix)}`);
  }
  if (q.product !== undefined) where.push(eq(devices.product, q.product));
  if (q.fleet !== undefined) where.push(eq(devices.fleet, q.fleet));
  if (q.station !== undefined) where.push(eq(devices.enrolledBy, q.station));
  if (q.status !== undefined) where.push(eq(devices.status, q.status));
  return where;
}

const listColumns = {
  id: devices.id,
  product: devices.product,
  fleet: devices.fleet,
  status: devices.status,
  revocationReason: devices.revocationReason,
  revokedAt: devices.revokedAt,
  statusChangedAt: devices.statusChangedAt,
  enrolledBy: devices.enrolledBy,
  createdAt: devices.createdAt,
  reenrollAllowed: devices.reenrollAllowed,
  connected: sql<boolean>`coalesce(${presence.connected}, false)`.mapWith(Boolean),
  connectedAt: presence.connectedAt,
  disconnectedAt: presence.disconnectedAt,
  brokerNode: presence.brokerNode,
  remoteAddress: presence.remoteAddress,
};

/**
 * One page of devices in id order, with their presence. With `connected: true` the page is read from the
 * connected devices' index (presence_connected_idx); otherwise from the devices index that fits the filter.
 */
export async function searchDevices(db: Db, q: DeviceSearch = {}): Promise<Page<DeviceListRow>> {
  checkSearch(q);
  const limit = checkLimit(q.limit);
  const where = deviceFilters(q);
  const presenceJoin = and(eq(presence.kind, 'device'), eq(presence.id, devices.id));
  let rows: DeviceListRow[];
  if (q.connected === true) {
    if (q.cursor !== undefined) where.push(sql`${byteOrder(presence.id)} > ${q.cursor}`);
    if (q.prefix) {
      where.push(sql`${byteOrder(presence.id)} >= ${q.prefix}`);
      where.push(sql`${byteOrder(presence.id)} < ${prefixUpperBound(q.prefix)}`);
    }
    rows = (await db
      .select(listColumns)
      .from(presence)
      .innerJoin(devices, eq(devices.id, presence.id))
      .where(and(eq(presence.kind, 'device'), eq(presence.connected, true), ...where))
      .orderBy(byteOrder(presence.id))
      .limit(limit + 1)) as DeviceListRow[];
  } else {
    if (q.cursor !== undefined) where.push(sql`${byteOrder(devices.id)} > ${q.cursor}`);
    if (q.connected === false) {
      where.push(notConnected);
    }
    rows = (await db
      .select(listColumns)
      .from(devices)
      .leftJoin(presence, presenceJoin)
      .where(where.length > 0 ? and(...where) : undefined)
      .orderBy(byteOrder(devices.id))
      .limit(limit + 1)) as DeviceListRow[];
  }
  if (rows.length <= limit) return { items: rows };
  const items = rows.slice(0, limit);
  return { items, nextCursor: items[items.length - 1]!.id };
}

/**
 * How many devices match. Without a filter, by status alone, or "connected now" alone, the exact number
 * from the counters; otherwise counted along the same index as the page, stopping after `cap` matches (a
 * search over a large fleet says "1,000+" rather than walking every match).
 */
export async function countDevices(
  db: Db,
  q: DeviceSearch = {},
  cap = 1000,
): Promise<{ n: number; capped: boolean }> {
  checkSearch(q);
  if (!q.prefix && q.product === undefined && q.fleet === undefined && q.station === undefined) {
    if (q.connected === undefined) {
      const c = await deviceCounts(db);
      return { n: q.status ? c[q.status] : c.total, capped: false };
    }
    if (q.connected === true && q.status === undefined) return { n: await connectedCount(db), capped: false };
  }
  const where = deviceFilters(q);
  let inner: SQL;
  if (q.connected === true) {
    // Along the connected devices' index, as the page is read, one primary-key lookup per entry: the
    // lateral sub-select with OFFSET 0 is not flattened into a join the planner could hash.
    inner = sql`select 1 from ${presence} cross join lateral (select 1 from ${devices}
        where ${devices.id} = ${presence.id} ${where.length ? sql`and ${and(...where)}` : sql``} offset 0) d
      where ${presence.kind} = 'device' and ${presence.connected}
      order by ${byteOrder(presence.id)} limit ${cap + 1}`;
  } else {
    if (q.connected === false) {
      where.push(notConnected);
    }
    // In index order: the walk stops after cap + 1 matches whatever the filter's selectivity.
    inner = sql`select 1 from ${devices} ${where.length ? sql`where ${and(...where)}` : sql``}
      order by ${byteOrder(devices.id)} limit ${cap + 1}`;
  }
  const [r] = (await db
    .execute(sql`select count(*)::int as n from (${inner}) m`)
    .then((x) => (Array.isArray(x) ? x : (x as { rows: unknown[] }).rows))) as { n: number | string }[];
  const n = Number(r?.n ?? 0);
  return n > cap ? { n: cap, capped: true } : { n, capped: false };
}

/** A device's connections, newest first. */
export async function presenceHistoryOf(
  db: Db,
  kind: SubjectKind,
  id: string,
  limit = 20,
): Promise<PresenceHistoryRow[]> {
  assertId(id, `${kind} id`);
  return db
    .select()
    .from(presenceHistory)
    .where(and(eq(presenceHistory.kind, kind), eq(presenceHistory.id, id)))
    .orderBy(desc(presenceHistory.connectedAt), desc(presenceHistory.seq))
    .limit(checkLimit(limit));
}

/** Deletes connection history that began before `before`, at most `batch` rows a call. Returns how many. */
export async function prunePresenceHistory(db: Db, before: Date, batch = 10_000): Promise<number> {
  checkDate(before, 'before');
  const old = db
    .select({ seq: presenceHistory.seq })
    .from(presenceHistory)
    .where(lt(presenceHistory.connectedAt, before))
    .limit(batch);
  const rows = await db
    .delete(presenceHistory)
    .where(sql`${presenceHistory.seq} in (${old})`)
    .returning({ seq: presenceHistory.seq });
  return rows.length;
}

/** The cascade a station revocation over [from, to] would do: devices not revoked yet, and how many are connected. */
export async function cascadePreview(
  db: Db,
  stationId: string,
  from: Date,
  to: Date,
): Promise<{ devices: number; connected: number }> {
  assertId(stationId, 'station id');
  checkDate(from, 'from');
  checkDate(to, 'to');
  if (to.getTime() < from.getTime()) throw invalid('the window ends before it starts', 'to');
  const [r] = await db
    .select({
      devices: count(),
      // A correlated sub-select stays a primary-key lookup per device in the window (a join may hash the
      // whole presence table).
      connected: sql<string | number>`count(*) filter (where exists (select 1 from ${presence} p
        where p.kind = 'device' and p.id = ${DEVICE_ID} and p.connected))`,
    })
    .from(devices)
    .where(
      and(
        eq(devices.enrolledBy, stationId),
        gte(devices.createdAt, from),
        lte(devices.createdAt, to),
        sql`${devices.status} <> 'revoked'`,
      ),
    );
  return { devices: Number(r?.devices ?? 0), connected: Number(r?.connected ?? 0) };
}

/**
 * After a cascade over [from, to]: of the station's devices in the window, how many are still connected
 * and when the last of the others' sessions ended.
 */
export async function cascadeSessions(
  db: Db,
  stationId: string,
  from: Date,
  to: Date,
): Promise<{ stillConnected: number; lastClosedAt: Date | null }> {
  assertId(stationId, 'station id');
  checkDate(from, 'from');
  checkDate(to, 'to');
  const [r] = await db
    .select({
      stillConnected: sql<string | number>`count(*) filter (where exists (select 1 from ${presence} p
        where p.kind = 'device' and p.id = ${DEVICE_ID} and p.connected))`,
      lastClosedAt: sql<Date | string | null>`max((select p.disconnected_at from ${presence} p
        where p.kind = 'device' and p.id = ${DEVICE_ID}))`,
    })
    .from(devices)
    .where(and(eq(devices.enrolledBy, stationId), gte(devices.createdAt, from), lte(devices.createdAt, to)));
  const last = r?.lastClosedAt;
  return {
    stillConnected: Number(r?.stillConnected ?? 0),
    lastClosedAt: last == null ? null : new Date(last),
  };
}

/** Certificates each station enrolled in the last `windowSeconds`: one indexed range count per station. */
export async function stationUsage(
  db: Db,
  stationIds: string[],
  windowSeconds = 3600,
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(
    stationIds.map(async (id) => {
      assertId(id, 'station id');
      const [r] = await db
        .select({ n: count() })
        .from(certificates)
        .where(
          and(
            eq(certificates.enrolledBy, id),
            gt(certificates.createdAt, sql`now() - (${windowSeconds} * interval '1 second')`),
          ),
        );
      out.set(id, Number(r?.n ?? 0));
    }),
  );
  return out;
}

/** How many devices a station enrolled, counting at most `cap` (an index range on enrolled_by). */
export async function stationDeviceCount(db: Db, stationId: string, cap = 100_000): Promise<number> {
  assertId(stationId, 'station id');
  const inner = db
    .select({ one: sql`1` })
    .from(devices)
    .where(eq(devices.enrolledBy, stationId))
    .orderBy(byteOrder(devices.id))
    .limit(cap)
    .as('m');
  const [r] = await db.select({ n: count() }).from(inner);
  return Number(r?.n ?? 0);
}

// ------------------------------------------------------------------------------------------------ sign-in

/** Records a one-time sign-in link (its token's SHA-256 only). */
export async function createConsoleLink(
  db: Db,
  link: { tokenSha256: string; operator: string; expiresAt: Date },
): Promise<ConsoleLinkRow> {
  checkSha256(link.tokenSha256, 'tokenSha256');
  assertId(link.operator, 'operator id');
  checkDate(link.expiresAt, 'expiresAt');
  const [row] = await db.insert(consoleLinks).values(link).returning();
  return row!;
}

export type LinkRefusal = 'unknown' | 'expired' | 'used';

export interface NewConsoleSession {
  idSha256: string;
  csrf: string;
  expiresAt: Date;
  address: string | null;
  userAgent: string | null;
}

/**
 * Uses a link and opens its session, in one transaction: the link is marked used by a single conditional
 * UPDATE, so of two requests racing with one link at most one gets a session. A refusal names why, and
 * the operator when the link was real (for the audit).
 */
export async function redeemConsoleLink(
  db: Db,
  tokenSha256: string,
  session: NewConsoleSession,
): Promise<{ session: ConsoleSessionRow } | { refused: LinkRefusal; operator?: string }> {
  checkSha256(tokenSha256, 'tokenSha256');
  checkSha256(session.idSha256, 'idSha256');
  checkDate(session.expiresAt, 'expiresAt');
  return db.transaction(async (tx) => {
    const [used] = await tx
      .update(consoleLinks)
      .set({ usedAt: sql`now()` })
      .where(
        and(
          eq(consoleLinks.tokenSha256, tokenSha256),
          isNull(consoleLinks.usedAt),
          gt(consoleLinks.expiresAt, sql`now()`),
        ),
      )
      .returning();
    if (!used) {
      const [link] = await tx.select().from(consoleLinks).where(eq(consoleLinks.tokenSha256, tokenSha256));
      if (!link) return { refused: 'unknown' as const };
      return { refused: link.usedAt ? ('used' as const) : ('expired' as const), operator: link.operator };
    }
    const [row] = await tx
      .insert(consoleSessions)
      .values({ ...session, operator: used.operator })
      .returning();
    return { session: row! };
  });
}

export interface LiveSession {
  session: ConsoleSessionRow;
  /** The operator principal's status now (a suspended or revoked operator's sessions are refused). */
  operatorStatus: SubjectStatus | null;
}

/** A session that is neither revoked, past its end, nor idle for longer than `idleSeconds`; else undefined. */
export async function liveConsoleSession(
  db: Db,
  idSha256: string,
  idleSeconds: number,
): Promise<LiveSession | undefined> {
  if (!HEX_SHA256.test(idSha256)) return undefined;
  const [r] = await db
    .select({ session: consoleSessions, operatorStatus: principals.status })
    .from(consoleSessions)
    .leftJoin(principals, and(eq(principals.kind, 'operator'), eq(principals.id, consoleSessions.operator)))
    .where(
      and(
        eq(consoleSessions.idSha256, idSha256),
        isNull(consoleSessions.revokedAt),
        gt(consoleSessions.expiresAt, sql`now()`),
        gt(consoleSessions.lastSeenAt, sql`now() - (${idleSeconds} * interval '1 second')`),
      ),
    );
  return r ? { session: r.session, operatorStatus: r.operatorStatus ?? null } : undefined;
}

/** Moves a session's last-seen time to now (callers do it at most once a minute per session). */
export async function touchConsoleSession(db: Db, idSha256: string): Promise<void> {
  await db
    .update(consoleSessions)
    .set({ lastSeenAt: sql`now()` })
    .where(eq(consoleSessions.idSha256, checkSha256(idSha256, 'idSha256')));
}

/**
 * Ends sessions: one (`idSha256`), or every live one of an operator (`operator`). Returns the sessions
 * ended (already ended ones are not counted).
 */
export async function revokeConsoleSessions(
  db: Db,
  which: { idSha256: string } | { operator: string },
  by: string,
): Promise<ConsoleSessionRow[]> {
  let target: SQL;
  if ('idSha256' in which) {
    target = eq(consoleSessions.idSha256, checkSha256(which.idSha256, 'idSha256'));
  } else {
    assertId(which.operator, 'operator id');
    target = eq(consoleSessions.operator, which.operator);
  }
  return db
    .update(consoleSessions)
    .set({ revokedAt: sql`now()`, revokedBy: by })
    .where(and(target, isNull(consoleSessions.revokedAt), gt(consoleSessions.expiresAt, sql`now()`)))
    .returning();
}

/** Sessions not revoked and not past their end, newest first (idle ones included: they say so). */
export async function listConsoleSessions(db: Db, limit = 100): Promise<ConsoleSessionRow[]> {
  return db
    .select()
    .from(consoleSessions)
    .where(and(isNull(consoleSessions.revokedAt), gt(consoleSessions.expiresAt, sql`now()`)))
    .orderBy(desc(consoleSessions.createdAt))
    .limit(checkLimit(limit));
}

/** Finds a live session by the first hex digits of its id (the form the console shows). */
export async function findConsoleSessionByPrefix(
  db: Db,
  idPrefix: string,
): Promise<ConsoleSessionRow | undefined> {
  if (!/^[0-9a-f]{16,64}$/.test(idPrefix)) throw invalid('a session id is 16 to 64 hex digits', 'session');
  const rows = await db
    .select()
    .from(consoleSessions)
    .where(
      and(
        gte(consoleSessions.idSha256, idPrefix),
        lt(consoleSessions.idSha256, prefixUpperBound(idPrefix)),
        isNull(consoleSessions.revokedAt),
      ),
    )
    .limit(2);
  return rows.length === 1 ? rows[0] : undefined;
}

/** Deletes links and sessions that ended more than `keepSeconds` ago. */
export async function pruneConsoleSignIns(db: Db, keepSeconds = 7 * 86_400): Promise<number> {
  const cutoff = sql`now() - (${keepSeconds} * interval '1 second')`;
  const links = await db
    .delete(consoleLinks)
    .where(lt(consoleLinks.expiresAt, cutoff))
    .returning({ t: consoleLinks.tokenSha256 });
  const sessions = await db
    .delete(consoleSessions)
    .where(or(lt(consoleSessions.expiresAt, cutoff), lt(consoleSessions.revokedAt, cutoff)))
    .returning({ t: consoleSessions.idSha256 });
  return links.length + sessions.length;
}
