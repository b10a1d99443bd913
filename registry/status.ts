/**
 * Status changes: suspending, reinstating and revoking a subject, revoking one certificate, and a
 * station's cascade. Each is one transaction that writes the rows, the status-change log (whose max(seq)
 * is the revocation generation) and the audit; it returns the status-change rows written so the caller
 * publishes them on the change feed after commit.
 */
import { and, eq, gte, inArray, lte, ne, sql } from 'drizzle-orm';
import { ref, writeAudit } from './audit.ts';
import type { Db } from './db.ts';
import { RegistryError } from './errors.ts';
import { generationOf } from './revocation.ts';
import {
  certificates,
  devices,
  principals,
  type RevocationReason,
  type StatusChangeRow,
  type SubjectStatus,
  statusChanges,
} from './schema.ts';
import { chunks } from './sql.ts';
import { lockSubjectStatus } from './subjects.ts';
import type { CascadeInput, NewAuditEntry, SetStatusInput, StatusChangeResult } from './types.ts';
import {
  assertActor,
  assertDate,
  assertId,
  assertKind,
  assertStatus,
  checkReason,
  checkSerial,
  invalid,
} from './validation.ts';

/** What a status change returns: its result, and the status-change rows to publish after commit. */
export interface Written<T> {
  result: T;
  changes: StatusChangeRow[];
}

function statusAction(status: SubjectStatus): string {
  switch (status) {
    case 'revoked':
      return 'subject.revoke';
    case 'suspended':
      return 'subject.suspend';
    default:
      return 'subject.reinstate';
  }
}

/**
 * Changes a subject's status. Revoked is final (ALREADY_REVOKED); active and suspended switch freely.
 * Revoking also revokes all of the subject's certificates with the RFC 5280 reason.
 */
export async function setStatus(db: Db, input: SetStatusInput): Promise<Written<StatusChangeResult>> {
  assertKind(input.kind);
  assertId(input.id, `${input.kind} id`);
  assertActor(input.actor);
  assertStatus(input.status);
  const reason = checkReason(input.reason);
  const { kind, id, status, actor } = input;

  return db.transaction(async (tx) => {
    const previous = await lockSubjectStatus(tx, kind, id);
    if (previous === undefined) throw new RegistryError('SUBJECT_NOT_FOUND', `no ${kind} ${id}`);
    if (previous === 'revoked') {
      throw new RegistryError('ALREADY_REVOKED', `${kind} ${id} is revoked; revocation is final`);
    }
    if (previous === status) return { result: { previous, status, changed: false }, changes: [] };

    const revoking = status === 'revoked';
    const set = {
      status,
      statusChangedAt: sql`now()`,
      ...(revoking ? { revocationReason: reason, revokedAt: sql`now()` } : {}),
    };
    if (kind === 'device') {
      await tx.update(devices).set(set).where(eq(devices.id, id));
    } else {
      await tx
        .update(principals)
        .set(set)
        .where(and(eq(principals.kind, kind), eq(principals.id, id)));
    }
    let revokedSerials = 0;
    if (revoking) {
      const rows = await tx
        .update(certificates)
        .set({ status: 'revoked', revocationReason: reason, revokedAt: sql`now()` })
        .where(
          and(
            eq(certificates.subjectKind, kind),
            eq(certificates.subjectId, id),
            ne(certificates.status, 'revoked'),
          ),
        )
        .returning({ serial: certificates.serial });
      revokedSerials = rows.length;
    }
    const [change] = await tx
      .insert(statusChanges)
      .values({ kind, id, status, reason: revoking ? reason : null, actor })
      .returning();
    await writeAudit(tx, [
      {
        actor,
        action: statusAction(status),
        subject: ref(kind, id),
        outcome: 'success',
        details: {
          from: previous,
          to: status,
          seq: change!.seq,
          ...(revoking ? { reason, certificatesRevoked: revokedSerials } : {}),
          ...(input.details ?? {}),
        },
      },
    ]);
    return { result: { previous, status, changed: true, seq: change!.seq }, changes: [change!] };
  });
}

/** Revokes one certificate (its subject keeps its status). Revoked is final. */
export async function revokeCertificate(
  db: Db,
  input: { serial: string; reason?: RevocationReason; actor: string; details?: Record<string, unknown> },
): Promise<Written<StatusChangeResult & { serial: string }>> {
  const serial = checkSerial(input.serial);
  const reason = checkReason(input.reason);
  assertActor(input.actor);
  return db.transaction(async (tx) => {
    const [cert] = await tx
      .select({
        status: certificates.status,
        subjectKind: certificates.subjectKind,
        subjectId: certificates.subjectId,
      })
      .from(certificates)
      .where(eq(certificates.serial, serial))
      .for('update');
    if (!cert) throw new RegistryError('CERTIFICATE_NOT_FOUND', `no certificate with serial ${serial}`);
    if (cert.status === 'revoked') {
      throw new RegistryError('ALREADY_REVOKED', `certificate ${serial} is revoked; revocation is final`);
    }
    await tx
      .update(certificates)
      .set({ status: 'revoked', revocationReason: reason, revokedAt: sql`now()` })
      .where(eq(certificates.serial, serial));
    const [change] = await tx
      .insert(statusChanges)
      .values({
        kind: cert.subjectKind,
        id: cert.subjectId,
        serial,
        status: 'revoked',
        reason,
        actor: input.actor,
      })
      .returning();
    await writeAudit(tx, [
      {
        actor: input.actor,
        action: 'certificate.revoke',
        subject: ref(cert.subjectKind, cert.subjectId),
        outcome: 'success',
        details: { serial, reason, from: cert.status, seq: change!.seq, ...(input.details ?? {}) },
      },
    ]);
    return {
      result: {
        serial,
        previous: 'active' as const,
        status: 'revoked' as const,
        changed: true,
        seq: change!.seq,
      },
      changes: [change!],
    };
  });
}

/**
 * Cascade: revokes every device the station enrolled within [from, to] that is not revoked yet, with
 * their certificates, in one transaction. Returns the device ids revoked.
 */
export async function revokeEnrolledBy(
  db: Db,
  input: CascadeInput,
): Promise<Written<{ ids: string[]; generation: number }>> {
  assertId(input.stationId, 'station id');
  assertDate(input.from, 'from');
  assertDate(input.to, 'to');
  if (input.to.getTime() < input.from.getTime())
    throw invalid('the window ends before it starts', { field: 'to' });
  assertActor(input.actor);
  const reason = checkReason(input.reason);
  const { stationId, from, to, actor } = input;
  const inWindow = and(
    eq(devices.enrolledBy, stationId),
    gte(devices.createdAt, from),
    lte(devices.createdAt, to),
  );

  return db.transaction(async (tx) => {
    const revoked = await tx
      .update(devices)
      .set({
        status: 'revoked',
        statusChangedAt: sql`now()`,
        revocationReason: reason,
        revokedAt: sql`now()`,
      })
      .where(and(inWindow, ne(devices.status, 'revoked')))
      .returning({ id: devices.id, createdAt: devices.createdAt });
    const ids = revoked.map((d) => d.id).sort();
    const changes: StatusChangeRow[] = [];
    const audit: NewAuditEntry[] = [];
    if (ids.length > 0) {
      // Every device in the window is revoked now, so revoke all their certificates not revoked yet.
      await tx
        .update(certificates)
        .set({ status: 'revoked', revocationReason: reason, revokedAt: sql`now()` })
        .where(
          and(
            eq(certificates.subjectKind, 'device'),
            ne(certificates.status, 'revoked'),
            inArray(certificates.subjectId, tx.select({ id: devices.id }).from(devices).where(inWindow)),
          ),
        );
      for (const part of chunks(ids)) {
        changes.push(
          ...(await tx
            .insert(statusChanges)
            .values(
              part.map((id) => ({ kind: 'device' as const, id, status: 'revoked' as const, reason, actor })),
            )
            .returning()),
        );
      }
      for (const id of ids) {
        audit.push({
          actor,
          action: 'device.revoke',
          subject: ref('device', id),
          outcome: 'success',
          details: { reason, cascadeFrom: ref('station', stationId) },
        });
      }
    }
    audit.push({
      actor,
      action: 'station.cascade_revoke',
      subject: ref('station', stationId),
      outcome: 'success',
      details: { from: from.toISOString(), to: to.toISOString(), reason, devicesRevoked: ids.length },
    });
    await writeAudit(tx, audit);
    return { result: { ids, generation: await generationOf(tx) }, changes };
  });
}
