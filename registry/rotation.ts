/**
 * The rotation rule, in one place (design.md, Rotation and retirement). A certificate is `active`,
 * `superseded` or `revoked`:
 *
 * - Re-enrollment (EST simplereenroll) supersedes the old certificate with a deadline, `grace_until`
 *   (default 24 hours, FLEET_ROTATION_GRACE_HOURS). Until then it stays usable, so a device that lost the
 *   answer or has not installed the new certificate yet is not locked out.
 * - It is retired (revoked with RFC 5280 reason superseded, 4) as soon as the first of these happens: its
 *   successor connects (a broker node reports it, retireSuperseded), or its deadline passes (derived on
 *   every read from `grace_until`, and written by the sweep, retireExpiredGrace, that provisioning runs at
 *   the next deadline).
 * - An operator reset retires every certificate of the device at once (retireAllOf): a reset means its key
 *   is to be replaced.
 *
 * Every retirement writes a status-change row per certificate (status revoked, reason superseded), so the
 * change feed closes a live session on it on every broker node, and provisioning rebuilds the CRL.
 * Every reader (the revoked set brokers load, the CRL, OCSP, the API's standing check) treats a superseded
 * certificate past its deadline as retired whether the sweep wrote it yet or not (`effectiveStatus`,
 * `RETIRED_BY_DEADLINE`): the deadline is a fact of the row, not of a timer.
 */
import { and, eq, inArray, ne, sql } from 'drizzle-orm';
import { ref, writeAudit } from './audit.ts';
import type { Db, Tx } from './db.ts';
import {
  type CertificateStatus,
  certificates,
  type RevocationReason,
  type StatusChangeRow,
  type SubjectKind,
  statusChanges,
} from './schema.ts';
import type { NewAuditEntry } from './types.ts';

/** The default grace period of a superseded certificate (the configuration's default too). */
export const DEFAULT_ROTATION_GRACE_MS = 24 * 3600_000;

/** A superseded certificate whose grace ended: retired, whether or not the sweep wrote it yet. */
export const RETIRED_BY_DEADLINE = sql`(${certificates.status} = 'superseded' and ${certificates.graceUntil} <= now())`;

/** What a certificate's status means now: a superseded one past its deadline is revoked (superseded). */
export function effectiveStatus<
  T extends {
    status: CertificateStatus;
    reason: RevocationReason | null;
    revokedAt: Date | null;
    graceUntil: Date | null;
  },
>(c: T, now = Date.now()): T {
  if (c.status === 'superseded' && c.graceUntil && c.graceUntil.getTime() <= now) {
    return { ...c, status: 'revoked', reason: 'superseded', revokedAt: c.graceUntil };
  }
  return c;
}

/** Checks a grace period: a whole number of milliseconds, at most ten years. */
export function checkGraceMs(ms: number | undefined): number {
  const v = ms ?? DEFAULT_ROTATION_GRACE_MS;
  if (!Number.isSafeInteger(v) || v < 0 || v > 3650 * 86_400_000) {
    throw new RangeError(`grace period out of range: ${v} ms`);
  }
  return v;
}

type Cause = 'successor_connected' | 'grace_ended' | 'reset' | 'no_grace';

interface Retired {
  serial: string;
  subjectKind: SubjectKind;
  subjectId: string;
}

/** Writes the status-change rows and one audit entry per subject for certificates just retired. */
async function recordRetired(
  tx: Tx,
  rows: Retired[],
  actor: string,
  cause: Cause,
  extra: Record<string, unknown> = {},
): Promise<StatusChangeRow[]> {
  if (rows.length === 0) return [];
  const changes = await tx
    .insert(statusChanges)
    .values(
      rows.map((r) => ({
        kind: r.subjectKind,
        id: r.subjectId,
        serial: r.serial,
        status: 'revoked' as const,
        reason: 'superseded' as const,
        actor,
      })),
    )
    .returning();
  const bySubject = new Map<string, string[]>();
  for (const r of rows) {
    const k = ref(r.subjectKind, r.subjectId);
    bySubject.set(k, [...(bySubject.get(k) ?? []), r.serial]);
  }
  const audit: NewAuditEntry[] = [...bySubject].map(([subject, serials]) => ({
    actor,
    action: 'certificate.retire',
    subject,
    outcome: 'success',
    details: { serials: serials.sort(), reason: 'superseded', cause, ...extra },
  }));
  await writeAudit(tx, audit);
  return changes;
}

const retireSet = (revokedAt: ReturnType<typeof sql>) => ({
  status: 'revoked' as const,
  revocationReason: 'superseded' as const,
  revokedAt,
});

/**
 * The successor `serial` of `kind:id` connected: every certificate it superseded (still in grace) is
 * retired now. Nothing happens when `serial` is not the subject's active certificate (a certificate in
 * grace connecting retires nobody). Idempotent: a second report finds nothing left to retire.
 */
export async function retireSuperseded(
  db: Db,
  input: { kind: SubjectKind; id: string; serial: string; actor: string },
): Promise<StatusChangeRow[]> {
  return db.transaction(async (tx) => {
    const [succ] = await tx
      .select({ status: certificates.status })
      .from(certificates)
      .where(
        and(
          eq(certificates.serial, input.serial),
          eq(certificates.subjectKind, input.kind),
          eq(certificates.subjectId, input.id),
        ),
      );
    if (succ?.status !== 'active') return [];
    const rows = await tx
      .update(certificates)
      .set(retireSet(sql`now()`))
      .where(
        and(
          eq(certificates.subjectKind, input.kind),
          eq(certificates.subjectId, input.id),
          eq(certificates.status, 'superseded'),
        ),
      )
      .returning({
        serial: certificates.serial,
        subjectKind: certificates.subjectKind,
        subjectId: certificates.subjectId,
      });
    return recordRetired(tx, rows, input.actor, 'successor_connected', { successor: input.serial });
  });
}

/** The sweep: retires every superseded certificate whose grace ended (revokedAt = its deadline). */
export async function retireExpiredGrace(db: Db, actor: string): Promise<StatusChangeRow[]> {
  return db.transaction(async (tx) => {
    const rows = await tx
      .update(certificates)
      .set(retireSet(sql`${certificates.graceUntil}`))
      .where(RETIRED_BY_DEADLINE)
      .returning({
        serial: certificates.serial,
        subjectKind: certificates.subjectKind,
        subjectId: certificates.subjectId,
      });
    return recordRetired(tx, rows, actor, 'grace_ended');
  });
}

/** The earliest deadline of a certificate still in its grace period, for the sweep's next run. */
export async function nextGraceDeadline(db: Db): Promise<Date | undefined> {
  const [row] = await db
    .select({ at: sql<Date | string | null>`min(${certificates.graceUntil})` })
    .from(certificates)
    .where(eq(certificates.status, 'superseded'));
  return row?.at == null ? undefined : new Date(row.at);
}

/**
 * Retires at once every certificate of a subject that is not revoked yet, but `keep` (an operator reset,
 * or a re-enrollment recorded after one): in the caller's transaction.
 */
export async function retireAllOf(
  tx: Tx,
  subject: { kind: SubjectKind; id: string },
  actor: string,
  cause: Cause,
  keep: readonly string[] = [],
): Promise<StatusChangeRow[]> {
  const rows = await tx
    .update(certificates)
    .set(retireSet(sql`now()`))
    .where(
      and(
        eq(certificates.subjectKind, subject.kind),
        eq(certificates.subjectId, subject.id),
        ne(certificates.status, 'revoked'),
        ...(keep.length > 0 ? [sql`not ${inArray(certificates.serial, [...keep])}`] : []),
      ),
    )
    .returning({
      serial: certificates.serial,
      subjectKind: certificates.subjectKind,
      subjectId: certificates.subjectId,
    });
  return recordRetired(tx, rows, actor, cause);
}
