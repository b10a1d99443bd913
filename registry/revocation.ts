/**
 * Revocation data: what brokers, the CRL and the OCSP responder read. The generation (max(seq) of the
 * status-change log) and the log itself, the revoked set, a CA's revoked and held certificates, one
 * serial's status, and the certificates that expire soon.
 */
import { and, asc, eq, gt, ne, or, type SQL, sql } from 'drizzle-orm';
import type { Db, Tx } from './db.ts';
import { effectiveStatus, RETIRED_BY_DEADLINE } from './rotation.ts';
import {
  certificates,
  devices,
  principals,
  type StatusChangeRow,
  type SubjectStatus,
  statusChanges,
} from './schema.ts';
import { certificateSummaryColumns, exec, page } from './sql.ts';
import { subjectStatusOf } from './subjects.ts';
import type {
  CertificateStatusInfo,
  CertificateSummary,
  Page,
  RevokedCertificate,
  RevokedSet,
} from './types.ts';
import { checkDays, checkLimit, checkSerial, invalid, MAX_LIMIT } from './validation.ts';

/** The revocation generation: max(seq) of the status-change log (0 when empty). */
export async function generationOf(db: Db): Promise<number> {
  const [row] = await db
    .select({ g: sql<string | number | null>`max(${statusChanges.seq})` })
    .from(statusChanges);
  return row?.g == null ? 0 : Number(row.g);
}

/** Status changes after `seq`, in order. */
export async function changesSince(db: Db, seq: number, limit = MAX_LIMIT): Promise<StatusChangeRow[]> {
  if (!Number.isInteger(seq) || seq < 0)
    throw invalid('seq must be a non-negative integer', { field: 'seq' });
  return db
    .select()
    .from(statusChanges)
    .where(gt(statusChanges.seq, seq))
    .orderBy(asc(statusChanges.seq))
    .limit(checkLimit(limit));
}

/** Everything not active, with the generation it corresponds to (one consistent snapshot). */
export async function revokedSet(db: Db, driver: 'postgres' | 'pglite'): Promise<RevokedSet> {
  const read = async (tx: Tx): Promise<RevokedSet> => {
    const generation = await generationOf(tx);
    const devs = await tx
      .select({ id: devices.id, status: devices.status })
      .from(devices)
      .where(ne(devices.status, 'active'));
    const prins = await tx
      .select({ kind: principals.kind, id: principals.id, status: principals.status })
      .from(principals)
      .where(ne(principals.status, 'active'));
    // Revoked certificates, those retired by the rotation rule (reason superseded, or past their grace
    // deadline whether the sweep wrote it yet or not), and those still in their grace period.
    const certs = await tx
      .select({
        serial: certificates.serial,
        kind: certificates.subjectKind,
        id: certificates.subjectId,
        status: certificates.status,
        reason: certificates.revocationReason,
        graceUntil: certificates.graceUntil,
        past: sql<boolean>`coalesce(${RETIRED_BY_DEADLINE}, false)`,
      })
      .from(certificates)
      .where(or(eq(certificates.status, 'revoked'), eq(certificates.status, 'superseded')));
    type Inactive = Exclude<SubjectStatus, 'active'>;
    const serials: string[] = [];
    const retired: string[] = [];
    const grace: RevokedSet['grace'] = [];
    for (const c of certs) {
      if (c.status === 'superseded' && !c.past) {
        grace.push({ kind: c.kind, id: c.id, serial: c.serial, graceUntil: c.graceUntil });
        continue;
      }
      serials.push(c.serial);
      if (c.status === 'superseded' || c.reason === 'superseded') retired.push(c.serial);
    }
    return {
      generation,
      subjects: [
        ...devs.map((d) => ({ kind: 'device' as const, id: d.id, status: d.status as Inactive })),
        ...prins.map((p) => ({ kind: p.kind, id: p.id, status: p.status as Inactive })),
      ],
      serials,
      retired,
      grace,
    };
  };
  // PGlite has one connection, so nothing else commits between the reads.
  return driver === 'postgres'
    ? db.transaction(read, { isolationLevel: 'repeatable read', accessMode: 'read only' })
    : db.transaction(read);
}

/**
 * Revoked certificates of one issuing CA, for its CRL (ordered by serial): superseded ones past their grace
 * deadline included, revoked with reason superseded from their deadline (registry/rotation.ts).
 */
export async function revokedCertificates(db: Db, issuerCa: string): Promise<RevokedCertificate[]> {
  const rows = await db
    .select({
      serial: certificates.serial,
      status: certificates.status,
      revokedAt: certificates.revokedAt,
      reason: certificates.revocationReason,
      graceUntil: certificates.graceUntil,
    })
    .from(certificates)
    .where(
      and(eq(certificates.issuerCa, issuerCa), or(eq(certificates.status, 'revoked'), RETIRED_BY_DEADLINE)),
    )
    .orderBy(asc(certificates.serial));
  return rows.map((row) => {
    const r = effectiveStatus(row);
    return { serial: r.serial, revokedAt: r.revokedAt!, reason: r.reason ?? 'unspecified' };
  });
}

/**
 * Usable certificates (active, or superseded and still in their grace period) of one issuing CA whose
 * subject is suspended, with the time of the suspension: a
 * CRL lists them on hold (RFC 5280 §5.3.1 certificateHold) until the subject is reinstated.
 */
export async function heldCertificates(db: Db, issuerCa: string): Promise<RevokedCertificate[]> {
  const rows = await exec(
    db,
    sql`select c.serial, coalesce(d.status_changed_at, p.status_changed_at, c.created_at) as held_at
      from ${certificates} c
      left join ${devices} d on c.subject_kind = 'device' and d.id = c.subject_id
      left join ${principals} p on c.subject_kind <> 'device' and p.kind = c.subject_kind and p.id = c.subject_id
      where c.issuer_ca = ${issuerCa} and coalesce(d.status, p.status) = 'suspended'
        and (c.status = 'active' or (c.status = 'superseded' and c.grace_until > now()))
      order by c.serial`,
  );
  return rows.map((r) => ({
    serial: r['serial'] as string,
    revokedAt: new Date(r['held_at'] as string | Date),
    reason: 'certificateHold' as const,
  }));
}

/**
 * Active certificates (of any subject not revoked) whose notAfter is within `withinDays` (expired ones
 * included), soonest first: the "expires at 3 AM" list. The cursor is the last serial of a page.
 */
export async function expiringCertificates(
  db: Db,
  opts: { withinDays: number; limit?: number; cursor?: string },
): Promise<Page<CertificateSummary>> {
  const days = checkDays(opts.withinDays, 'withinDays');
  const limit = checkLimit(opts.limit);
  const where: SQL[] = [
    eq(certificates.status, 'active'),
    sql`${certificates.notAfter} <= now() + (${days} * interval '1 day')`,
  ];
  if (opts.cursor !== undefined) {
    const c = checkSerial(opts.cursor, 'cursor');
    where.push(
      sql`(${certificates.notAfter}, ${certificates.serial}) > (select not_after, serial from ${certificates} where serial = ${c})`,
    );
  }
  const rows = await db
    .select(certificateSummaryColumns)
    .from(certificates)
    .where(and(...where))
    .orderBy(asc(certificates.notAfter), asc(certificates.serial))
    .limit(limit + 1);
  return page(rows, limit, (c) => c.serial);
}

/** Status of one certificate by serial, for OCSP; undefined when unknown. */
export async function certificateStatus(db: Db, serial: string): Promise<CertificateStatusInfo | undefined> {
  const s = checkSerial(serial);
  const [c] = await db
    .select({
      serial: certificates.serial,
      status: certificates.status,
      revokedAt: certificates.revokedAt,
      reason: certificates.revocationReason,
      graceUntil: certificates.graceUntil,
      issuerCa: certificates.issuerCa,
      notBefore: certificates.notBefore,
      notAfter: certificates.notAfter,
      subjectKind: certificates.subjectKind,
      subjectId: certificates.subjectId,
    })
    .from(certificates)
    .where(eq(certificates.serial, s));
  if (!c) return undefined;
  const subjectStatus = (await subjectStatusOf(db, c.subjectKind, c.subjectId)) ?? null;
  return { ...effectiveStatus(c), subjectStatus };
}
