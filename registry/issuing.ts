/**
 * Issuing: recording the certificates pki issued, with their device or principal and an audit entry, all
 * or nothing; re-enrollment (supersede); finding a subject's certificate for a key.
 */
import { and, desc, eq, inArray, ne, sql } from 'drizzle-orm';
import { ref, writeAudit } from './audit.ts';
import type { Db, Tx } from './db.ts';
import { RegistryError } from './errors.ts';
import { checkGraceMs, retireAllOf } from './rotation.ts';
import {
  type CertificateRow,
  certificates,
  devices,
  principals,
  type StatusChangeRow,
  statusChanges,
} from './schema.ts';
import { BULK_CHUNK, chunks, duplicates, exec, textArray } from './sql.ts';
import type { Written } from './status.ts';
import { deviceRevoked, lockSubjectStatus, principalInsert, principalValues } from './subjects.ts';
import type {
  IssueRecord,
  IssueSubject,
  NewAuditEntry,
  NewCertificate,
  NewPrincipal,
  SubjectRef,
} from './types.ts';
import {
  assertActor,
  assertId,
  assertKind,
  assertSha256,
  checkCertificate,
  checkIssueRecord,
  checkSerial,
  invalid,
} from './validation.ts';

type DeviceSubject = Extract<IssueSubject, { kind: 'device' }>;

function listNames(ids: string[]): string {
  return ids.length <= 5 ? ids.join(', ') : `${ids.slice(0, 5).join(', ')} and ${ids.length - 5} more`;
}

/**
 * Records many issued certificates in ONE transaction with multi-row inserts: all or nothing. Refuses
 * with DEVICE_REVOKED (a revoked device id: revocation is final, the id is never issued again),
 * DEVICE_EXISTS (a device id already recorded, unless an operator reset it, in which case any certificate
 * of it still not revoked is retired at once: registry/rotation.ts), CERTIFICATE_EXISTS (serial or
 * fingerprint already recorded), SUBJECT_NOT_ACTIVE (a suspended or revoked principal or re-enrolling
 * device). Returns the status-change rows of what it retired, for the caller to publish.
 */
export async function recordIssuedBatch(db: Db, records: IssueRecord[]): Promise<Written<CertificateRow[]>> {
  if (!Array.isArray(records)) throw invalid('records must be an array');
  if (records.length === 0) return { result: [], changes: [] };
  checkBatch(records);
  const deviceRecs = records.filter((r) => r.subject.kind === 'device');
  const principalRecs = records.filter((r) => r.subject.kind !== 'device');
  return db.transaction(async (tx) => {
    const reenrolled = await insertDevices(tx, deviceRecs);
    await ensurePrincipalsActive(tx, principalRecs);
    const rows = await insertCertificates(tx, records);
    const changes = await retireReenrolled(tx, deviceRecs, reenrolled);
    await writeAudit(
      tx,
      records.map((r) => issueAuditEntry(r, reenrolled)),
    );
    return { result: rows, changes };
  });
}

/** Every record valid, and no device id, serial or fingerprint twice in the batch. */
function checkBatch(records: IssueRecord[]): void {
  records.forEach(checkIssueRecord);
  const dupDevices = duplicates(records.filter((r) => r.subject.kind === 'device').map((r) => r.subject.id));
  if (dupDevices.length > 0) {
    throw new RegistryError('DEVICE_EXISTS', `device id repeated in one batch: ${listNames(dupDevices)}`, {
      details: { ids: dupDevices },
    });
  }
  const dupSerials = duplicates(records.map((r) => r.certificate.serial));
  const dupFingerprints = duplicates(records.map((r) => r.certificate.fingerprintSha256));
  if (dupSerials.length > 0 || dupFingerprints.length > 0) {
    throw new RegistryError('CERTIFICATE_EXISTS', 'certificate serial or fingerprint repeated in one batch', {
      details: { serials: dupSerials, fingerprints: dupFingerprints },
    });
  }
}

/**
 * Inserts the new devices; an existing one may only be re-enrolled when an operator allowed it and it is
 * active (locked for the rest of the transaction). Returns the ids being re-enrolled.
 */
async function insertDevices(tx: Tx, deviceRecs: IssueRecord[]): Promise<Set<string>> {
  const reenrolled = new Set<string>();
  if (deviceRecs.length === 0) return reenrolled;
  const inserted = new Set<string>();
  for (const part of chunks(deviceRecs, BULK_CHUNK)) {
    const rows = await exec(
      tx,
      sql`insert into ${devices} (id, product, fleet, enrolled_by)
        select * from unnest(${textArray(part.map((r) => r.subject.id))}::text[],
          ${textArray(part.map((r) => (r.subject as DeviceSubject).product))}::text[],
          ${textArray(part.map((r) => (r.subject as DeviceSubject).fleet))}::text[],
          ${textArray(part.map((r) => r.enrolledBy ?? null))}::text[])
        on conflict do nothing returning id`,
    );
    for (const row of rows) inserted.add(row['id'] as string);
  }
  const existing = deviceRecs.map((r) => r.subject.id).filter((id) => !inserted.has(id));
  if (existing.length === 0) return reenrolled;
  const rows = await tx
    .select({
      id: devices.id,
      status: devices.status,
      reenrollAllowed: devices.reenrollAllowed,
      revokedAt: devices.revokedAt,
      revocationReason: devices.revocationReason,
    })
    .from(devices)
    .where(inArray(devices.id, existing))
    .for('update');
  // Revocation is final: a revoked id is a dead end, and the refusal says so (not "reset it first").
  const revoked = rows.find((d) => d.status === 'revoked');
  if (revoked) throw deviceRevoked(revoked);
  const refused = rows.filter((d) => !d.reenrollAllowed).map((d) => d.id);
  if (refused.length > 0) {
    throw new RegistryError('DEVICE_EXISTS', `device already enrolled: ${listNames(refused)}`, {
      details: { ids: refused },
    });
  }
  const inactive = rows.filter((d) => d.status !== 'active');
  if (inactive.length > 0) {
    throw new RegistryError(
      'SUBJECT_NOT_ACTIVE',
      `device is ${inactive[0]!.status} and cannot be re-enrolled: ${listNames(inactive.map((d) => d.id))}`,
      { details: { ids: inactive.map((d) => d.id) } },
    );
  }
  for (const d of rows) reenrolled.add(d.id);
  return reenrolled;
}

/** Principals are created when absent; an existing one must be active to get a certificate. */
async function ensurePrincipalsActive(tx: Tx, principalRecs: IssueRecord[]): Promise<void> {
  if (principalRecs.length === 0) return;
  const unique = new Map<string, NewPrincipal>();
  for (const r of principalRecs) unique.set(ref(r.subject.kind, r.subject.id), principalValues(r.subject));
  for (const part of chunks([...unique.values()])) {
    await tx.insert(principals).values(part.map(principalInsert)).onConflictDoNothing();
  }
  const keys = [...unique.values()];
  const blocked = await tx
    .select({ kind: principals.kind, id: principals.id, status: principals.status })
    .from(principals)
    .where(
      and(
        ne(principals.status, 'active'),
        sql`(${principals.kind}, ${principals.id}) in (${sql.join(
          keys.map((k) => sql`(${k.kind}, ${k.id})`),
          sql`, `,
        )})`,
      ),
    );
  if (blocked.length > 0) {
    const b = blocked[0]!;
    throw new RegistryError('SUBJECT_NOT_ACTIVE', `${b.kind} ${b.id} is ${b.status}`, {
      details: { kind: b.kind, id: b.id, status: b.status },
    });
  }
}

/** Inserts the certificates; a conflict on serial or fingerprint refuses the whole batch. */
async function insertCertificates(tx: Tx, records: IssueRecord[]): Promise<CertificateRow[]> {
  const out: CertificateRow[] = [];
  for (const part of chunks(records, BULK_CHUNK)) {
    const col = (f: (r: IssueRecord) => string | null) => textArray(part.map(f));
    const rows = await exec(
      tx,
      sql`insert into ${certificates} (serial, subject_kind, subject_id, issuer_ca, der, fingerprint_sha256,
          spki_sha256, not_before, not_after, enrolled_by)
        select s, k, i, ca, decode(d, 'hex'), f, sp, nb::timestamptz, na::timestamptz, eb
        from unnest(${col((r) => r.certificate.serial)}::text[], ${col((r) => r.subject.kind)}::text[],
          ${col((r) => r.subject.id)}::text[], ${col((r) => r.certificate.issuerCa)}::text[],
          ${col((r) => Buffer.from(r.certificate.der).toString('hex'))}::text[],
          ${col((r) => r.certificate.fingerprintSha256)}::text[], ${col((r) => r.certificate.spkiSha256)}::text[],
          ${col((r) => r.certificate.notBefore.toISOString())}::text[],
          ${col((r) => r.certificate.notAfter.toISOString())}::text[], ${col((r) => r.enrolledBy ?? null)}::text[])
          as t(s, k, i, ca, d, f, sp, nb, na, eb)
        on conflict do nothing
        returning serial, (extract(epoch from created_at) * 1000)::float8 as created_ms`,
    );
    if (rows.length !== part.length) {
      const got = new Set(rows.map((x) => x['serial'] as string));
      const clashing = part.map((r) => r.certificate.serial).filter((s) => !got.has(s));
      throw new RegistryError(
        'CERTIFICATE_EXISTS',
        `certificate serial or fingerprint already recorded: ${listNames(clashing)}`,
        { details: { serials: clashing } },
      );
    }
    const createdAt = new Map(rows.map((x) => [x['serial'] as string, new Date(Number(x['created_ms']))]));
    for (const r of part) out.push(certificateRow(r, createdAt.get(r.certificate.serial)!));
  }
  return out;
}

/** The row as inserted, without reading it back. */
function certificateRow(r: IssueRecord, createdAt: Date): CertificateRow {
  return {
    serial: r.certificate.serial,
    subjectKind: r.subject.kind,
    subjectId: r.subject.id,
    issuerCa: r.certificate.issuerCa,
    der: r.certificate.der,
    fingerprintSha256: r.certificate.fingerprintSha256,
    spkiSha256: r.certificate.spkiSha256,
    notBefore: r.certificate.notBefore,
    notAfter: r.certificate.notAfter,
    status: 'active',
    revocationReason: null,
    revokedAt: null,
    supersededBy: null,
    graceUntil: null,
    createdAt,
    enrolledBy: r.enrolledBy ?? null,
  };
}

/**
 * Re-enrollments an operator reset allowed. The reset retired the old certificates already; one still not
 * revoked (written before the rule, or by a concurrent re-enrollment) is retired now, with no grace.
 */
async function retireReenrolled(
  tx: Tx,
  deviceRecs: IssueRecord[],
  reenrolled: Set<string>,
): Promise<StatusChangeRow[]> {
  const changes: StatusChangeRow[] = [];
  for (const r of deviceRecs) {
    if (!reenrolled.has(r.subject.id)) continue;
    changes.push(
      ...(await retireAllOf(tx, { kind: 'device', id: r.subject.id }, r.actor, 'reset', [
        r.certificate.serial,
      ])),
    );
    await tx.update(devices).set({ reenrollAllowed: false }).where(eq(devices.id, r.subject.id));
  }
  return changes;
}

function issueAuditEntry(r: IssueRecord, reenrolled: Set<string>): NewAuditEntry {
  return {
    actor: r.actor,
    action:
      reenrolled.has(r.subject.id) && r.subject.kind === 'device' ? 'device.reenroll' : 'certificate.issue',
    subject: ref(r.subject.kind, r.subject.id),
    outcome: 'success',
    details: {
      serial: r.certificate.serial,
      issuerCa: r.certificate.issuerCa,
      ...(r.enrolledBy ? { enrolledBy: r.enrolledBy } : {}),
      ...(r.details ?? {}),
    },
  };
}

/**
 * Re-enrollment: the active certificate `oldSerial` becomes superseded by `next` (same subject), in one
 * transaction, usable for `graceMs` more (default 24 hours) unless `next` connects first
 * (registry/rotation.ts); with a grace of 0 it is retired at once. Refuses CERTIFICATE_NOT_FOUND,
 * ALREADY_REVOKED, CERTIFICATE_NOT_ACTIVE (already superseded), SUBJECT_NOT_ACTIVE, CERTIFICATE_EXISTS.
 * Returns the status-change row to publish.
 */
export async function supersede(
  db: Db,
  oldSerial: string,
  next: NewCertificate,
  opts: { actor: string; enrolledBy?: string | null; details?: Record<string, unknown>; graceMs?: number },
): Promise<Written<CertificateRow>> {
  const serial = checkSerial(oldSerial, 'oldSerial');
  checkCertificate(next, 'certificate');
  assertActor(opts.actor);
  let graceMs: number;
  try {
    graceMs = checkGraceMs(opts.graceMs);
  } catch {
    throw invalid('graceMs must be a whole number of milliseconds from 0 to ten years', { field: 'graceMs' });
  }
  if (opts.enrolledBy !== undefined && opts.enrolledBy !== null) assertId(opts.enrolledBy, 'station id');
  return db.transaction(async (tx) => {
    const [old] = await tx.select().from(certificates).where(eq(certificates.serial, serial)).for('update');
    if (!old) throw new RegistryError('CERTIFICATE_NOT_FOUND', `no certificate with serial ${serial}`);
    if (old.status === 'revoked') {
      throw new RegistryError('ALREADY_REVOKED', `certificate ${serial} is revoked`);
    }
    if (old.status !== 'active') {
      throw new RegistryError('CERTIFICATE_NOT_ACTIVE', `certificate ${serial} is ${old.status}`, {
        details: { supersededBy: old.supersededBy },
      });
    }
    const subjectStatus = await lockSubjectStatus(tx, old.subjectKind, old.subjectId);
    if (subjectStatus !== 'active') {
      throw new RegistryError(
        'SUBJECT_NOT_ACTIVE',
        `${old.subjectKind} ${old.subjectId} is ${subjectStatus}`,
      );
    }
    const [row] = await tx
      .insert(certificates)
      .values({
        serial: next.serial,
        subjectKind: old.subjectKind,
        subjectId: old.subjectId,
        issuerCa: next.issuerCa,
        der: next.der,
        fingerprintSha256: next.fingerprintSha256,
        spkiSha256: next.spkiSha256,
        notBefore: next.notBefore,
        notAfter: next.notAfter,
        enrolledBy: opts.enrolledBy ?? null,
      })
      .onConflictDoNothing()
      .returning();
    if (!row) {
      throw new RegistryError(
        'CERTIFICATE_EXISTS',
        `certificate serial or fingerprint already recorded: ${next.serial}`,
      );
    }
    const retireNow = graceMs === 0;
    const [marked] = await tx
      .update(certificates)
      .set(
        retireNow
          ? {
              status: 'revoked',
              revocationReason: 'superseded',
              revokedAt: sql`now()`,
              supersededBy: next.serial,
            }
          : {
              status: 'superseded',
              supersededBy: next.serial,
              graceUntil: sql`now() + ${graceMs} * interval '1 millisecond'`,
            },
      )
      .where(eq(certificates.serial, serial))
      .returning({ graceUntil: certificates.graceUntil });
    // The feed tells every broker node: the deadline (superseded), or the retirement (no grace).
    const changes = await tx
      .insert(statusChanges)
      .values({
        kind: old.subjectKind,
        id: old.subjectId,
        serial,
        status: retireNow ? 'revoked' : 'superseded',
        reason: 'superseded',
        actor: opts.actor,
        graceUntil: retireNow ? null : marked!.graceUntil,
      })
      .returning();
    if (old.subjectKind === 'device') {
      await tx.update(devices).set({ reenrollAllowed: false }).where(eq(devices.id, old.subjectId));
    }
    await writeAudit(tx, [
      {
        actor: opts.actor,
        action: 'certificate.supersede',
        subject: ref(old.subjectKind, old.subjectId),
        outcome: 'success',
        details: {
          serial: next.serial,
          supersedes: serial,
          graceUntil: marked!.graceUntil?.toISOString() ?? null,
          ...(opts.details ?? {}),
        },
      },
    ]);
    return { result: row, changes };
  });
}

/** The active certificate of a subject for a given public key: same key, same certificate back. */
export async function findCertificateForKey(
  db: Db,
  subject: SubjectRef,
  spkiSha256: string,
): Promise<CertificateRow | undefined> {
  assertKind(subject.kind);
  assertId(subject.id, `${subject.kind} id`);
  assertSha256(spkiSha256, 'spkiSha256');
  const [row] = await db
    .select()
    .from(certificates)
    .where(
      and(
        eq(certificates.subjectKind, subject.kind),
        eq(certificates.subjectId, subject.id),
        eq(certificates.spkiSha256, spkiSha256),
        eq(certificates.status, 'active'),
      ),
    )
    .orderBy(desc(certificates.createdAt))
    .limit(1);
  return row;
}
