/**
 * Subjects: devices and principals (services, stations, operators): reading and listing them, creating
 * principals, a station's scope and quota count, and the operator's device reset.
 */
import { and, asc, count, desc, eq, gt, gte, lte, type SQL, sql } from 'drizzle-orm';
import { ref, writeAudit } from './audit.ts';
import type { Db, Tx } from './db.ts';
import { RegistryError } from './errors.ts';
import { retireAllOf } from './rotation.ts';
import {
  certificates,
  type DeviceRow,
  devices,
  type PrincipalKind,
  type PrincipalRow,
  presence,
  principals,
  SUBJECT_STATUSES,
  type SubjectKind,
  type SubjectStatus,
} from './schema.ts';
import { certificateSummaryColumns, page } from './sql.ts';
import type { Written } from './status.ts';
import type {
  DeviceDetail,
  DeviceFilter,
  IssueSubject,
  NewPrincipal,
  Page,
  PrincipalFilter,
} from './types.ts';
import {
  assertActor,
  assertDate,
  assertId,
  assertPrincipalKind,
  checkDays,
  checkLimit,
  checkProducts,
  checkQuota,
  checkRole,
  invalid,
} from './validation.ts';

// ------------------------------------------------------------------------------------------ devices

/** DEVICE_REVOKED: what every refusal that meets a revoked device id says (design.md: revocation is final). */
export function deviceRevoked(d: { id: string; revokedAt: Date | null; revocationReason: string | null }) {
  const when = d.revokedAt ? ` on ${d.revokedAt.toISOString()}` : '';
  return new RegistryError(
    'DEVICE_REVOKED',
    `device ${d.id} was revoked${when}${d.revocationReason ? ` (${d.revocationReason})` : ''}; revocation is final ` +
      'and its id is never issued again: enroll the device under a new id',
    {
      details: {
        id: d.id,
        revokedAt: d.revokedAt?.toISOString() ?? null,
        reason: d.revocationReason,
        instead: 'enroll the device under a new device id',
      },
    },
  );
}

export async function getDevice(db: Db, id: string): Promise<DeviceDetail | undefined> {
  assertId(id, 'device id');
  const [device] = await db.select().from(devices).where(eq(devices.id, id));
  if (!device) return undefined;
  const [certs, pres] = await Promise.all([
    db
      .select(certificateSummaryColumns)
      .from(certificates)
      .where(and(eq(certificates.subjectKind, 'device'), eq(certificates.subjectId, id)))
      .orderBy(desc(certificates.createdAt), desc(certificates.serial)),
    db
      .select()
      .from(presence)
      .where(and(eq(presence.kind, 'device'), eq(presence.id, id))),
  ]);
  return { ...device, certificates: certs, presence: pres[0] ?? null };
}

/** A device's row alone, in one query (the broker's CONNECT path; getDevice adds certificates and presence). */
export async function getDeviceRow(db: Db, id: string): Promise<DeviceRow | undefined> {
  assertId(id, 'device id');
  const [row] = await db.select().from(devices).where(eq(devices.id, id));
  return row;
}

/** Devices ordered by id, keyset-paginated. */
export async function listDevices(db: Db, filter: DeviceFilter): Promise<Page<DeviceRow>> {
  const limit = checkLimit(filter.limit);
  const where: SQL[] = [];
  if (filter.status !== undefined) {
    if (!SUBJECT_STATUSES.includes(filter.status)) throw invalid('unknown status', { field: 'status' });
    where.push(eq(devices.status, filter.status));
  }
  if (filter.product !== undefined) {
    assertId(filter.product, 'product');
    where.push(eq(devices.product, filter.product));
  }
  if (filter.fleet !== undefined) {
    assertId(filter.fleet, 'fleet');
    where.push(eq(devices.fleet, filter.fleet));
  }
  if (filter.enrolledBy !== undefined) {
    assertId(filter.enrolledBy, 'station id');
    where.push(eq(devices.enrolledBy, filter.enrolledBy));
  }
  if (filter.enrolledFrom !== undefined) {
    assertDate(filter.enrolledFrom, 'enrolledFrom');
    where.push(gte(devices.createdAt, filter.enrolledFrom));
  }
  if (filter.enrolledTo !== undefined) {
    assertDate(filter.enrolledTo, 'enrolledTo');
    where.push(lte(devices.createdAt, filter.enrolledTo));
  }
  if (filter.expiringWithinDays !== undefined) {
    const days = checkDays(filter.expiringWithinDays, 'expiringWithinDays');
    where.push(sql`exists (select 1 from ${certificates} c
      where c.subject_kind = 'device' and c.subject_id = ${devices.id} and c.status = 'active'
        and c.not_after <= now() + (${days} * interval '1 day'))`);
  }
  if (filter.cursor !== undefined) {
    assertId(filter.cursor, 'cursor');
    where.push(gt(devices.id, filter.cursor));
  }
  const rows = await db
    .select()
    .from(devices)
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(asc(devices.id))
    .limit(limit + 1);
  return page(rows, limit, (d) => d.id);
}

/**
 * Operator "reset": the next enrollment of this device id may replace its certificate, and every
 * certificate of it still not revoked is retired at once (revoked, reason superseded: registry/rotation.ts),
 * so a live session on it is closed on every broker node. A revoked device is a dead end: DEVICE_REVOKED
 * (revocation is final; enroll the device under a new id). Returns the status-change rows to publish.
 */
export async function allowReenroll(db: Db, deviceId: string, actor: string): Promise<Written<DeviceRow>> {
  assertId(deviceId, 'device id');
  assertActor(actor);
  return db.transaction(async (tx) => {
    const [d] = await tx.select().from(devices).where(eq(devices.id, deviceId)).for('update');
    if (!d) throw new RegistryError('SUBJECT_NOT_FOUND', `no device ${deviceId}`);
    if (d.status === 'revoked') throw deviceRevoked(d);
    const [row] = await tx
      .update(devices)
      .set({ reenrollAllowed: true })
      .where(eq(devices.id, deviceId))
      .returning();
    const changes = await retireAllOf(tx, { kind: 'device', id: deviceId }, actor, 'reset');
    await writeAudit(tx, [
      {
        actor,
        action: 'device.reset',
        subject: ref('device', deviceId),
        outcome: 'success',
        details: { certificatesRetired: changes.map((c) => c.serial) },
      },
    ]);
    return { result: row!, changes };
  });
}

// ------------------------------------------------------------------------------------------ principals

export async function createPrincipal(db: Db, p: NewPrincipal, actor: string): Promise<PrincipalRow> {
  assertPrincipalKind(p.kind);
  assertId(p.id, `${p.kind} id`);
  assertActor(actor);
  return db.transaction(async (tx) => {
    const [row] = await tx.insert(principals).values(principalInsert(p)).onConflictDoNothing().returning();
    if (!row) throw new RegistryError('PRINCIPAL_EXISTS', `${p.kind} ${p.id} already exists`);
    await writeAudit(tx, [
      {
        actor,
        action: 'principal.create',
        subject: ref(p.kind, p.id),
        outcome: 'success',
        details: { products: row.products, hourlyQuota: row.hourlyQuota, role: row.role },
      },
    ]);
    return row;
  });
}

export async function getPrincipal(
  db: Db,
  kind: PrincipalKind,
  id: string,
): Promise<PrincipalRow | undefined> {
  assertPrincipalKind(kind);
  assertId(id, `${kind} id`);
  const [row] = await db
    .select()
    .from(principals)
    .where(and(eq(principals.kind, kind), eq(principals.id, id)));
  return row;
}

/** Ordered by (kind, id); the cursor is `<kind>:<id>` of the last row. */
export async function listPrincipals(db: Db, filter: PrincipalFilter): Promise<Page<PrincipalRow>> {
  const limit = checkLimit(filter.limit);
  const where: SQL[] = [];
  if (filter.kind !== undefined) {
    assertPrincipalKind(filter.kind);
    where.push(eq(principals.kind, filter.kind));
  }
  if (filter.status !== undefined) where.push(eq(principals.status, filter.status));
  if (filter.cursor !== undefined) {
    const [kind, id] = filter.cursor.split(':');
    assertPrincipalKind(kind);
    assertId(id, 'cursor');
    where.push(sql`(${principals.kind}, ${principals.id}) > (${kind}, ${id})`);
  }
  const rows = await db
    .select()
    .from(principals)
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(asc(principals.kind), asc(principals.id))
    .limit(limit + 1);
  return page(rows, limit, (p) => ref(p.kind, p.id));
}

/** Sets a station's product scope and/or hourly quota (a field left undefined is unchanged). */
export async function setStationScope(
  db: Db,
  stationId: string,
  scope: { products?: string[] | null; hourlyQuota?: number | null },
  actor: string,
): Promise<PrincipalRow> {
  assertId(stationId, 'station id');
  assertActor(actor);
  const set: Partial<typeof principals.$inferInsert> = {};
  if (scope.products !== undefined) set.products = checkProducts(scope.products);
  if (scope.hourlyQuota !== undefined) set.hourlyQuota = checkQuota(scope.hourlyQuota);
  return db.transaction(async (tx) => {
    const [row] =
      Object.keys(set).length > 0
        ? await tx
            .update(principals)
            .set(set)
            .where(and(eq(principals.kind, 'station'), eq(principals.id, stationId)))
            .returning()
        : await tx
            .select()
            .from(principals)
            .where(and(eq(principals.kind, 'station'), eq(principals.id, stationId)));
    if (!row) throw new RegistryError('SUBJECT_NOT_FOUND', `no station ${stationId}`);
    await writeAudit(tx, [
      {
        actor,
        action: 'station.scope',
        subject: ref('station', stationId),
        outcome: 'success',
        details: { products: row.products, hourlyQuota: row.hourlyQuota },
      },
    ]);
    return row;
  });
}

/** Certificates a station enrolled in the last `windowSeconds` (default one hour), for its quota. */
export async function countStationIssuances(
  db: Db,
  stationId: string,
  windowSeconds: number,
): Promise<number> {
  assertId(stationId, 'station id');
  if (!Number.isFinite(windowSeconds) || windowSeconds <= 0) throw invalid('windowSeconds must be positive');
  const [row] = await db
    .select({ n: count() })
    .from(certificates)
    .where(
      and(
        eq(certificates.enrolledBy, stationId),
        gt(certificates.createdAt, sql`now() - (${windowSeconds} * interval '1 second')`),
      ),
    );
  return row?.n ?? 0;
}

// ------------------------------------------------------------------------------------------ shared

/** The principal row an issued certificate's subject needs (created when absent). */
export function principalValues(s: IssueSubject): NewPrincipal {
  switch (s.kind) {
    case 'station':
      return { kind: 'station', id: s.id, products: s.products ?? null, hourlyQuota: s.hourlyQuota ?? null };
    case 'service':
      return { kind: 'service', id: s.id, role: s.role ?? null };
    case 'operator':
      return { kind: 'operator', id: s.id };
    default:
      throw invalid(`${s.kind} is not a principal kind`);
  }
}

export function principalInsert(p: NewPrincipal): typeof principals.$inferInsert {
  return {
    kind: p.kind,
    id: p.id,
    products: p.kind === 'station' ? checkProducts(p.products) : null,
    hourlyQuota: p.kind === 'station' ? checkQuota(p.hourlyQuota) : null,
    role: p.kind === 'service' ? checkRole(p.role) : null,
  };
}

export async function subjectStatusOf(
  db: Db,
  kind: SubjectKind,
  id: string,
): Promise<SubjectStatus | undefined> {
  if (kind === 'device') {
    const [d] = await db.select({ status: devices.status }).from(devices).where(eq(devices.id, id));
    return d?.status;
  }
  const [p] = await db
    .select({ status: principals.status })
    .from(principals)
    .where(and(eq(principals.kind, kind), eq(principals.id, id)));
  return p?.status;
}

/** Reads a subject's status with a row lock, so concurrent status changes serialise. */
export async function lockSubjectStatus(
  tx: Tx,
  kind: SubjectKind,
  id: string,
): Promise<SubjectStatus | undefined> {
  if (kind === 'device') {
    const [d] = await tx
      .select({ status: devices.status })
      .from(devices)
      .where(eq(devices.id, id))
      .for('update');
    return d?.status;
  }
  const [p] = await tx
    .select({ status: principals.status })
    .from(principals)
    .where(and(eq(principals.kind, kind), eq(principals.id, id)))
    .for('update');
  return p?.status;
}
