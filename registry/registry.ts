/**
 * The registry: the one query API over devices, certificates, principals, audit, presence and the
 * status-change log, on PostgreSQL (postgres.js pool) or embedded PGlite.
 *
 * Every write that must be atomic is one transaction. Status changes append to `status_changes`, whose
 * max(seq) is the revocation generation; a trigger NOTIFYs `fleet_status` on commit (PostgreSQL), and on
 * PGlite the registry emits the same events in process after commit.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { and, asc, count, desc, eq, gt, gte, inArray, lt, lte, ne, type SQL, sql } from 'drizzle-orm';
import { assertValidId } from '../pki/ids.ts';
import { type Connection, connectPglite, connectPostgres, type Db, type Tx } from './db.ts';
import { RegistryError } from './errors.ts';
import { acquireDirLock, type DirLock } from './lock.ts';
import { migrate } from './migrate.ts';
import {
  AUDIT_OUTCOMES,
  type AuditOutcome,
  type AuditRow,
  auditLog,
  type CertificateRow,
  type CertificateStatus,
  certificates,
  type DeviceRow,
  devices,
  PRINCIPAL_KINDS,
  type PresenceRow,
  type PrincipalKind,
  type PrincipalRow,
  presence,
  principals,
  REVOCATION_REASONS,
  type RevocationReason,
  type StatusChangeRow,
  SUBJECT_KINDS,
  SUBJECT_STATUSES,
  type SubjectKind,
  type SubjectStatus,
  statusChanges,
} from './schema.ts';

// ---------------------------------------------------------------------------------------------------------
// Public types

/** Minimal structured logger; a pino logger fits. */
export interface RegistryLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface OpenRegistryOptions {
  /** PostgreSQL URL; when absent the registry is embedded PGlite. */
  databaseUrl?: string;
  /** PGlite data lives in `<dataDir>/registry`; undefined = in memory (tests). Ignored with databaseUrl. */
  dataDir?: string;
  logger?: RegistryLogger;
  /** postgres.js pool size (default 10). */
  poolSize?: number;
}

export interface SubjectRef {
  kind: SubjectKind;
  id: string;
}

/** `<kind>:<id>`, the form actors and subjects take in the audit log. Ids never contain ':'. */
export function ref(kind: string, id: string): string {
  return `${kind}:${id}`;
}

export interface NewCertificate {
  /** Lowercase hex, at most 20 octets (RFC 5280 §4.1.2.2). */
  serial: string;
  /** Name of the issuing CA, e.g. 'device' or 'infrastructure'. */
  issuerCa: string;
  der: Uint8Array;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprintSha256: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, lowercase hex. */
  spkiSha256: string;
  notBefore: Date;
  notAfter: Date;
}

/** Who the certificate is for. A device is created (and must be new unless an operator allowed a
 * re-enrollment); a principal is created when absent and must be active when present. */
export type IssueSubject =
  | { kind: 'device'; id: string; product: string; fleet: string }
  | { kind: 'station'; id: string; products?: string[]; hourlyQuota?: number | null }
  | { kind: 'service'; id: string; role?: string | null }
  | { kind: 'operator'; id: string };

export interface IssueRecord {
  subject: IssueSubject;
  certificate: NewCertificate;
  /** Station id that enrolled it, when a station did (used for quotas and cascades). */
  enrolledBy?: string | null;
  /** Audit actor, `<kind>:<id>` (see ref()). */
  actor: string;
  /** Extra public audit detail. */
  details?: Record<string, unknown>;
}

export interface NewPrincipal {
  kind: PrincipalKind;
  id: string;
  products?: string[] | null;
  hourlyQuota?: number | null;
  role?: string | null;
}

export type CertificateSummary = Omit<CertificateRow, 'der'>;

export interface DeviceDetail extends DeviceRow {
  /** Newest first, without DER (getCertificate() has it). */
  certificates: CertificateSummary[];
  presence: PresenceRow | null;
}

export interface Page<T> {
  items: T[];
  /** Pass back as `cursor` for the next page; undefined on the last page. */
  nextCursor?: string;
}

export interface DeviceFilter {
  status?: SubjectStatus;
  product?: string;
  fleet?: string;
  /** Station id that enrolled them. */
  enrolledBy?: string;
  /** created_at >= enrolledFrom */
  enrolledFrom?: Date;
  /** created_at <= enrolledTo */
  enrolledTo?: Date;
  /** Devices with an active certificate whose notAfter is within this many days (already expired included). */
  expiringWithinDays?: number;
  cursor?: string;
  /** Default 100, at most 1000. */
  limit?: number;
}

export interface PrincipalFilter {
  kind?: PrincipalKind;
  status?: SubjectStatus;
  cursor?: string;
  limit?: number;
}

export interface SetStatusInput {
  kind: SubjectKind;
  id: string;
  status: SubjectStatus;
  /** RFC 5280 reason; recorded when revoking (default 'unspecified'). */
  reason?: RevocationReason;
  actor: string;
  details?: Record<string, unknown>;
}

export interface StatusChangeResult {
  previous: SubjectStatus;
  status: SubjectStatus;
  /** False when the subject already had that status (nothing written). */
  changed: boolean;
  /** The status-change sequence number written, when changed. */
  seq?: number;
}

export interface CascadeInput {
  stationId: string;
  /** Inclusive window on the devices' enrollment time. */
  from: Date;
  to: Date;
  reason?: RevocationReason;
  actor: string;
}

/** One change on the feed: the JSON payload of NOTIFY fleet_status. */
export interface ChangeEvent {
  seq: number;
  kind: SubjectKind;
  id: string;
  serial?: string;
  status: SubjectStatus | 'superseded';
}

export type ChangeListener = (event: ChangeEvent) => void;

export interface RevokedSet {
  /** max(seq) of the status-change log when the set was read; 0 when nothing ever changed. */
  generation: number;
  /** Every subject that is not active (suspended or revoked). */
  subjects: { kind: SubjectKind; id: string; status: Exclude<SubjectStatus, 'active'> }[];
  /** Serials of revoked certificates. */
  serials: string[];
}

export interface RevokedCertificate {
  serial: string;
  revokedAt: Date;
  reason: RevocationReason;
}

/** What an OCSP responder needs about one serial. */
export interface CertificateStatusInfo {
  serial: string;
  status: CertificateStatus;
  revokedAt: Date | null;
  reason: RevocationReason | null;
  issuerCa: string;
  notBefore: Date;
  notAfter: Date;
  subjectKind: SubjectKind;
  subjectId: string;
  /** Status of the subject (a suspended device's certificates are still 'active' themselves). */
  subjectStatus: SubjectStatus | null;
}

export interface PresenceUpdate {
  kind: SubjectKind;
  id: string;
  /** connect and disconnect change `connected`; seen only moves last_seen. */
  event: 'connect' | 'disconnect' | 'seen';
  at: Date;
  remoteAddress?: string | null;
  brokerNode?: string | null;
}

export interface NewAuditEntry {
  actor: string;
  action: string;
  subject?: string | null;
  outcome: AuditOutcome;
  details?: Record<string, unknown> | null;
}

export interface AuditFilter {
  actor?: string;
  subject?: string;
  action?: string;
  from?: Date;
  to?: Date;
  /** Newest first; the cursor is the last id seen. */
  cursor?: string;
  limit?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Validation at the edge

const HEX_SERIAL = /^[0-9a-f]{1,40}$/;
const HEX_SHA256 = /^[0-9a-f]{64}$/;
const MAX_LIMIT = 1000;
/** Rows per multi-row INSERT: well below PostgreSQL's 65,535 bind parameters. */
const CHUNK = 1000;
/** Rows per column-array (unnest) statement. */
const BULK_CHUNK = 5000;

function invalid(message: string, details?: Record<string, unknown>): RegistryError {
  return new RegistryError('REGISTRY_INVALID_INPUT', message, details ? { details } : {});
}

/** Canonical serial: lowercase hex. Accepts upper case on lookups; refuses anything else. */
export function canonicalSerial(serial: unknown, what = 'serial'): string {
  if (typeof serial !== 'string') throw invalid(`${what} is not a string`, { field: what });
  const s = serial.toLowerCase();
  if (!HEX_SERIAL.test(s)) throw invalid(`${what} must be 1 to 40 hex digits`, { field: what });
  return s;
}

function assertSha256(v: unknown, what: string): asserts v is string {
  if (typeof v !== 'string' || !HEX_SHA256.test(v)) {
    throw invalid(`${what} must be 64 lowercase hex digits`, { field: what });
  }
}

function assertDate(v: unknown, what: string): asserts v is Date {
  if (!(v instanceof Date) || Number.isNaN(v.getTime()))
    throw invalid(`${what} is not a valid Date`, { field: what });
}

function assertActor(actor: unknown): asserts actor is string {
  if (typeof actor !== 'string' || actor.length === 0 || actor.length > 200) {
    throw invalid('actor must be a non-empty string of at most 200 characters', { field: 'actor' });
  }
}

function assertKind(kind: unknown): asserts kind is SubjectKind {
  if (!SUBJECT_KINDS.includes(kind as SubjectKind)) {
    throw invalid(`kind must be one of ${SUBJECT_KINDS.join(', ')}`, { field: 'kind' });
  }
}

function assertPrincipalKind(kind: unknown): asserts kind is PrincipalKind {
  if (!PRINCIPAL_KINDS.includes(kind as PrincipalKind)) {
    throw invalid(`principal kind must be one of ${PRINCIPAL_KINDS.join(', ')}`, { field: 'kind' });
  }
}

function checkReason(reason: unknown): RevocationReason {
  if (reason === undefined) return 'unspecified';
  if (!REVOCATION_REASONS.includes(reason as RevocationReason)) {
    throw invalid(`reason must be an RFC 5280 CRLReason: ${REVOCATION_REASONS.join(', ')}`, {
      field: 'reason',
    });
  }
  return reason as RevocationReason;
}

function checkLimit(limit: number | undefined, dflt = 100): number {
  if (limit === undefined) return dflt;
  if (!Number.isInteger(limit) || limit < 1)
    throw invalid('limit must be a positive integer', { field: 'limit' });
  return Math.min(limit, MAX_LIMIT);
}

function checkProducts(products: unknown): string[] | null {
  if (products === undefined || products === null) return null;
  if (!Array.isArray(products)) throw invalid('products must be an array of ids', { field: 'products' });
  for (const p of products) assertValidId(p, 'product');
  return [...new Set(products as string[])];
}

function checkQuota(q: unknown): number | null {
  if (q === undefined || q === null) return null;
  if (!Number.isInteger(q) || (q as number) < 0) {
    throw invalid('hourlyQuota must be a non-negative integer', { field: 'hourlyQuota' });
  }
  return q as number;
}

function checkIssueRecord(r: IssueRecord, i: number): void {
  const at = (f: string) => `records[${i}].${f}`;
  if (r === null || typeof r !== 'object') throw invalid(`records[${i}] is not an object`);
  assertActor(r.actor);
  assertKind(r.subject?.kind);
  assertValidId(r.subject.id, `${r.subject.kind} id`);
  if (r.subject.kind === 'device') {
    assertValidId(r.subject.product, 'product');
    assertValidId(r.subject.fleet, 'fleet');
  }
  if (r.enrolledBy !== undefined && r.enrolledBy !== null) assertValidId(r.enrolledBy, 'station id');
  checkCertificate(r.certificate, at('certificate'));
}

function checkCertificate(c: NewCertificate, what: string): void {
  if (c === null || typeof c !== 'object') throw invalid(`${what} is missing`);
  if (typeof c.serial !== 'string' || !HEX_SERIAL.test(c.serial)) {
    throw invalid(`${what}.serial must be 1 to 40 lowercase hex digits`, { field: 'serial' });
  }
  if (typeof c.issuerCa !== 'string' || c.issuerCa.length === 0) {
    throw invalid(`${what}.issuerCa is missing`, { field: 'issuerCa' });
  }
  if (!(c.der instanceof Uint8Array) || c.der.length === 0) {
    throw invalid(`${what}.der must be non-empty bytes`, { field: 'der' });
  }
  assertSha256(c.fingerprintSha256, `${what}.fingerprintSha256`);
  assertSha256(c.spkiSha256, `${what}.spkiSha256`);
  assertDate(c.notBefore, `${what}.notBefore`);
  assertDate(c.notAfter, `${what}.notAfter`);
  if (c.notAfter.getTime() <= c.notBefore.getTime()) {
    throw invalid(`${what}.notAfter must be after notBefore`, { field: 'notAfter' });
  }
}

type DeviceSubject = Extract<IssueSubject, { kind: 'device' }>;

/** One array bind parameter (drizzle would otherwise expand a JS array into a list of parameters). */
function textArray(values: (string | null)[]): SQL {
  return sql`${sql.param(values)}`;
}

/** Rows of a raw statement: postgres.js returns an array, PGlite `{ rows }`. */
async function exec(db: Db, query: SQL): Promise<Record<string, unknown>[]> {
  const r = (await db.execute(query)) as unknown;
  return (Array.isArray(r) ? r : (r as { rows: Record<string, unknown>[] }).rows) as Record<
    string,
    unknown
  >[];
}

/**
 * Multi-row audit insert as ONE statement of column arrays (unnest): the parameter count stays constant
 * whatever the batch size, and it avoids building a large query per row.
 */
async function insertAudit(db: Db, entries: NewAuditEntry[]): Promise<void> {
  for (const part of chunks(entries, BULK_CHUNK)) {
    await db.execute(sql`insert into ${auditLog} (actor, action, subject, outcome, details)
      select * from unnest(${textArray(part.map((e) => e.actor))}::text[], ${textArray(part.map((e) => e.action))}::text[],
        ${textArray(part.map((e) => e.subject ?? null))}::text[], ${textArray(part.map((e) => e.outcome))}::text[],
        ${textArray(part.map((e) => (e.details ? JSON.stringify(e.details) : null)))}::text[]::jsonb[])`);
  }
}

function chunks<T>(items: T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function listNames(ids: string[]): string {
  return ids.length <= 5 ? ids.join(', ') : `${ids.slice(0, 5).join(', ')} and ${ids.length - 5} more`;
}

const certificateSummaryColumns = {
  serial: certificates.serial,
  subjectKind: certificates.subjectKind,
  subjectId: certificates.subjectId,
  issuerCa: certificates.issuerCa,
  fingerprintSha256: certificates.fingerprintSha256,
  spkiSha256: certificates.spkiSha256,
  notBefore: certificates.notBefore,
  notAfter: certificates.notAfter,
  status: certificates.status,
  revocationReason: certificates.revocationReason,
  revokedAt: certificates.revokedAt,
  supersededBy: certificates.supersededBy,
  createdAt: certificates.createdAt,
  enrolledBy: certificates.enrolledBy,
};

const noopLogger: RegistryLogger = { debug() {}, info() {}, warn() {}, error() {} };

// ---------------------------------------------------------------------------------------------------------

export class Registry {
  readonly driver: 'postgres' | 'pglite';
  private readonly conn: Connection;
  private readonly lock: DirLock | undefined;
  private readonly log: RegistryLogger;
  private readonly feed = new EventEmitter();
  private unlisten: (() => Promise<void>) | undefined;
  private listening: Promise<void> | undefined;
  private closed = false;

  /** Use openRegistry(). */
  constructor(conn: Connection, lock: DirLock | undefined, log: RegistryLogger) {
    this.conn = conn;
    this.driver = conn.driver;
    this.lock = lock;
    this.log = log;
    this.feed.setMaxListeners(0);
  }

  private get db(): Db {
    if (this.closed) throw new RegistryError('REGISTRY_CLOSED', 'the registry is closed');
    return this.conn.db;
  }

  // ------------------------------------------------------------------------------------------ issuing

  /** Records one issued certificate with its device or principal and an audit entry, in one transaction. */
  async recordIssued(record: IssueRecord): Promise<CertificateRow> {
    const [row] = await this.recordIssuedBatch([record]);
    return row!;
  }

  /**
   * Records many issued certificates in ONE transaction with multi-row inserts: all or nothing. Refuses
   * with DEVICE_EXISTS (a device id already recorded, unless an operator allowed its re-enrollment, in
   * which case its active certificates become superseded), CERTIFICATE_EXISTS (serial or fingerprint
   * already recorded), SUBJECT_NOT_ACTIVE (a suspended or revoked principal or re-enrolling device).
   */
  async recordIssuedBatch(records: IssueRecord[]): Promise<CertificateRow[]> {
    if (!Array.isArray(records)) throw invalid('records must be an array');
    if (records.length === 0) return [];
    records.forEach(checkIssueRecord);
    const deviceRecs = records.filter((r) => r.subject.kind === 'device');
    const dupDevices = duplicates(deviceRecs.map((r) => r.subject.id));
    if (dupDevices.length > 0) {
      throw new RegistryError('DEVICE_EXISTS', `device id repeated in one batch: ${listNames(dupDevices)}`, {
        details: { ids: dupDevices },
      });
    }
    const dupSerials = duplicates(records.map((r) => r.certificate.serial));
    const dupFingerprints = duplicates(records.map((r) => r.certificate.fingerprintSha256));
    if (dupSerials.length > 0 || dupFingerprints.length > 0) {
      throw new RegistryError(
        'CERTIFICATE_EXISTS',
        'certificate serial or fingerprint repeated in one batch',
        {
          details: { serials: dupSerials, fingerprints: dupFingerprints },
        },
      );
    }

    return this.db.transaction(async (tx) => {
      // Devices first: new ones are inserted; existing ones may only be re-enrolled when allowed.
      const reenrolled = new Set<string>();
      if (deviceRecs.length > 0) {
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
        if (existing.length > 0) {
          const rows = await tx
            .select({ id: devices.id, status: devices.status, reenrollAllowed: devices.reenrollAllowed })
            .from(devices)
            .where(inArray(devices.id, existing))
            .for('update');
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
        }
      }

      // Principals: created when absent; an existing one must be active to get a certificate.
      const principalRecs = records.filter((r) => r.subject.kind !== 'device');
      if (principalRecs.length > 0) {
        const unique = new Map<string, NewPrincipal>();
        for (const r of principalRecs)
          unique.set(ref(r.subject.kind, r.subject.id), principalValues(r.subject));
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

      // Certificates: a conflict on serial or fingerprint refuses the whole batch.
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
        const createdAt = new Map(
          rows.map((x) => [x['serial'] as string, new Date(Number(x['created_ms']))]),
        );
        for (const r of part) {
          out.push({
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
            createdAt: createdAt.get(r.certificate.serial)!,
            enrolledBy: r.enrolledBy ?? null,
          });
        }
      }

      // Re-enrollments allowed by an operator reset: the old certificates are superseded by the new one.
      for (const r of deviceRecs) {
        if (!reenrolled.has(r.subject.id)) continue;
        await supersedeActive(tx, 'device', r.subject.id, r.certificate.serial);
        await tx.update(devices).set({ reenrollAllowed: false }).where(eq(devices.id, r.subject.id));
      }

      await insertAudit(
        tx,
        records.map((r) => ({
          actor: r.actor,
          action:
            reenrolled.has(r.subject.id) && r.subject.kind === 'device'
              ? 'device.reenroll'
              : 'certificate.issue',
          subject: ref(r.subject.kind, r.subject.id),
          outcome: 'success',
          details: {
            serial: r.certificate.serial,
            issuerCa: r.certificate.issuerCa,
            ...(r.enrolledBy ? { enrolledBy: r.enrolledBy } : {}),
            ...(r.details ?? {}),
          },
        })),
      );
      return out;
    });
  }

  /**
   * Re-enrollment: the active certificate `oldSerial` becomes superseded by `next` (same subject), in one
   * transaction. Refuses CERTIFICATE_NOT_FOUND, ALREADY_REVOKED, CERTIFICATE_NOT_ACTIVE (already superseded),
   * SUBJECT_NOT_ACTIVE, CERTIFICATE_EXISTS.
   */
  async supersede(
    oldSerial: string,
    next: NewCertificate,
    opts: { actor: string; enrolledBy?: string | null; details?: Record<string, unknown> },
  ): Promise<CertificateRow> {
    const serial = canonicalSerial(oldSerial, 'oldSerial');
    checkCertificate(next, 'certificate');
    assertActor(opts.actor);
    if (opts.enrolledBy !== undefined && opts.enrolledBy !== null)
      assertValidId(opts.enrolledBy, 'station id');
    return this.db.transaction(async (tx) => {
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
      await tx
        .update(certificates)
        .set({ status: 'superseded', supersededBy: next.serial })
        .where(eq(certificates.serial, serial));
      if (old.subjectKind === 'device') {
        await tx.update(devices).set({ reenrollAllowed: false }).where(eq(devices.id, old.subjectId));
      }
      await tx.insert(auditLog).values({
        actor: opts.actor,
        action: 'certificate.supersede',
        subject: ref(old.subjectKind, old.subjectId),
        outcome: 'success',
        details: { serial: next.serial, supersedes: serial, ...(opts.details ?? {}) },
      });
      return row;
    });
  }

  /** The active certificate of a subject for a given public key: same key, same certificate back. */
  async findCertificateForKey(subject: SubjectRef, spkiSha256: string): Promise<CertificateRow | undefined> {
    assertKind(subject.kind);
    assertValidId(subject.id, `${subject.kind} id`);
    assertSha256(spkiSha256, 'spkiSha256');
    const [row] = await this.db
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

  async getCertificate(serial: string): Promise<CertificateRow | undefined> {
    const s = canonicalSerial(serial);
    const [row] = await this.db.select().from(certificates).where(eq(certificates.serial, s));
    return row;
  }

  // ------------------------------------------------------------------------------------------ devices

  async getDevice(id: string): Promise<DeviceDetail | undefined> {
    assertValidId(id, 'device id');
    const db = this.db;
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

  /** Devices ordered by id, keyset-paginated. */
  async listDevices(filter: DeviceFilter = {}): Promise<Page<DeviceRow>> {
    const limit = checkLimit(filter.limit);
    const where: SQL[] = [];
    if (filter.status !== undefined) {
      if (!SUBJECT_STATUSES.includes(filter.status)) throw invalid('unknown status', { field: 'status' });
      where.push(eq(devices.status, filter.status));
    }
    if (filter.product !== undefined) {
      assertValidId(filter.product, 'product');
      where.push(eq(devices.product, filter.product));
    }
    if (filter.fleet !== undefined) {
      assertValidId(filter.fleet, 'fleet');
      where.push(eq(devices.fleet, filter.fleet));
    }
    if (filter.enrolledBy !== undefined) {
      assertValidId(filter.enrolledBy, 'station id');
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
      const days = filter.expiringWithinDays;
      if (typeof days !== 'number' || !Number.isFinite(days) || days < 0) {
        throw invalid('expiringWithinDays must be a non-negative number', { field: 'expiringWithinDays' });
      }
      where.push(sql`exists (select 1 from ${certificates} c
        where c.subject_kind = 'device' and c.subject_id = ${devices.id} and c.status = 'active'
          and c.not_after <= now() + (${days} * interval '1 day'))`);
    }
    if (filter.cursor !== undefined) {
      assertValidId(filter.cursor, 'cursor');
      where.push(gt(devices.id, filter.cursor));
    }
    const rows = await this.db
      .select()
      .from(devices)
      .where(where.length > 0 ? and(...where) : undefined)
      .orderBy(asc(devices.id))
      .limit(limit + 1);
    return page(rows, limit, (d) => d.id);
  }

  /** Operator "reset": the next enrollment of this device id may replace its certificate. */
  async allowReenroll(deviceId: string, actor: string): Promise<DeviceRow> {
    assertValidId(deviceId, 'device id');
    assertActor(actor);
    return this.db.transaction(async (tx) => {
      const [d] = await tx.select().from(devices).where(eq(devices.id, deviceId)).for('update');
      if (!d) throw new RegistryError('SUBJECT_NOT_FOUND', `no device ${deviceId}`);
      if (d.status === 'revoked') throw new RegistryError('ALREADY_REVOKED', `device ${deviceId} is revoked`);
      const [row] = await tx
        .update(devices)
        .set({ reenrollAllowed: true })
        .where(eq(devices.id, deviceId))
        .returning();
      await tx.insert(auditLog).values({
        actor,
        action: 'device.reset',
        subject: ref('device', deviceId),
        outcome: 'success',
      });
      return row!;
    });
  }

  // ------------------------------------------------------------------------------------------ principals

  async createPrincipal(p: NewPrincipal, actor: string): Promise<PrincipalRow> {
    assertPrincipalKind(p.kind);
    assertValidId(p.id, `${p.kind} id`);
    assertActor(actor);
    return this.db.transaction(async (tx) => {
      const [row] = await tx.insert(principals).values(principalInsert(p)).onConflictDoNothing().returning();
      if (!row) throw new RegistryError('PRINCIPAL_EXISTS', `${p.kind} ${p.id} already exists`);
      await tx.insert(auditLog).values({
        actor,
        action: 'principal.create',
        subject: ref(p.kind, p.id),
        outcome: 'success',
        details: { products: row.products, hourlyQuota: row.hourlyQuota, role: row.role },
      });
      return row;
    });
  }

  /** A device's row alone, in one query (the broker's CONNECT path; getDevice adds certificates and presence). */
  async getDeviceRow(id: string): Promise<DeviceRow | undefined> {
    assertValidId(id, 'device id');
    const [row] = await this.db.select().from(devices).where(eq(devices.id, id));
    return row;
  }

  async getPrincipal(kind: PrincipalKind, id: string): Promise<PrincipalRow | undefined> {
    assertPrincipalKind(kind);
    assertValidId(id, `${kind} id`);
    const [row] = await this.db
      .select()
      .from(principals)
      .where(and(eq(principals.kind, kind), eq(principals.id, id)));
    return row;
  }

  /** Ordered by (kind, id); the cursor is `<kind>:<id>` of the last row. */
  async listPrincipals(filter: PrincipalFilter = {}): Promise<Page<PrincipalRow>> {
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
      assertValidId(id, 'cursor');
      where.push(sql`(${principals.kind}, ${principals.id}) > (${kind}, ${id})`);
    }
    const rows = await this.db
      .select()
      .from(principals)
      .where(where.length > 0 ? and(...where) : undefined)
      .orderBy(asc(principals.kind), asc(principals.id))
      .limit(limit + 1);
    return page(rows, limit, (p) => ref(p.kind, p.id));
  }

  /** Sets a station's product scope and/or hourly quota (a field left undefined is unchanged). */
  async setStationScope(
    stationId: string,
    scope: { products?: string[] | null; hourlyQuota?: number | null },
    actor: string,
  ): Promise<PrincipalRow> {
    assertValidId(stationId, 'station id');
    assertActor(actor);
    const set: Partial<typeof principals.$inferInsert> = {};
    if (scope.products !== undefined) set.products = checkProducts(scope.products);
    if (scope.hourlyQuota !== undefined) set.hourlyQuota = checkQuota(scope.hourlyQuota);
    return this.db.transaction(async (tx) => {
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
      await tx.insert(auditLog).values({
        actor,
        action: 'station.scope',
        subject: ref('station', stationId),
        outcome: 'success',
        details: { products: row.products, hourlyQuota: row.hourlyQuota },
      });
      return row;
    });
  }

  /** Certificates a station enrolled in the last `windowSeconds` (default one hour), for its quota. */
  async countStationIssuances(stationId: string, windowSeconds = 3600): Promise<number> {
    assertValidId(stationId, 'station id');
    if (!Number.isFinite(windowSeconds) || windowSeconds <= 0)
      throw invalid('windowSeconds must be positive');
    const [row] = await this.db
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

  // ------------------------------------------------------------------------------------------ status

  /**
   * Changes a subject's status. Revoked is final (ALREADY_REVOKED); active and suspended switch freely.
   * Revoking also revokes all of the subject's certificates with the RFC 5280 reason. Writes the subject,
   * its certificates, the status-change log and the audit in one transaction; the change feed fires on commit.
   */
  async setStatus(input: SetStatusInput): Promise<StatusChangeResult> {
    assertKind(input.kind);
    assertValidId(input.id, `${input.kind} id`);
    assertActor(input.actor);
    if (!SUBJECT_STATUSES.includes(input.status)) {
      throw invalid(`status must be one of ${SUBJECT_STATUSES.join(', ')}`, { field: 'status' });
    }
    const reason = checkReason(input.reason);
    const { kind, id, status, actor } = input;

    const { result, change } = await this.db.transaction(async (tx) => {
      const previous = await lockSubjectStatus(tx, kind, id);
      if (previous === undefined) throw new RegistryError('SUBJECT_NOT_FOUND', `no ${kind} ${id}`);
      if (previous === 'revoked') {
        throw new RegistryError('ALREADY_REVOKED', `${kind} ${id} is revoked; revocation is final`);
      }
      if (previous === status) return { result: { previous, status, changed: false }, change: undefined };

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
      await tx.insert(auditLog).values({
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
      });
      return { result: { previous, status, changed: true, seq: change!.seq }, change };
    });
    if (change) this.publish([change]);
    return result;
  }

  /** Revokes one certificate (its subject keeps its status). Revoked is final. */
  async revokeCertificate(input: {
    serial: string;
    reason?: RevocationReason;
    actor: string;
    details?: Record<string, unknown>;
  }): Promise<StatusChangeResult & { serial: string }> {
    const serial = canonicalSerial(input.serial);
    const reason = checkReason(input.reason);
    assertActor(input.actor);
    const { result, change } = await this.db.transaction(async (tx) => {
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
      await tx.insert(auditLog).values({
        actor: input.actor,
        action: 'certificate.revoke',
        subject: ref(cert.subjectKind, cert.subjectId),
        outcome: 'success',
        details: { serial, reason, from: cert.status, seq: change!.seq, ...(input.details ?? {}) },
      });
      return {
        result: {
          serial,
          previous: 'active' as const,
          status: 'revoked' as const,
          changed: true,
          seq: change!.seq,
        },
        change,
      };
    });
    this.publish([change!]);
    return result;
  }

  /**
   * Cascade: revokes every device the station enrolled within [from, to] that is not revoked yet, with
   * their certificates, in one transaction. Returns the device ids revoked.
   */
  async revokeEnrolledBy(input: CascadeInput): Promise<{ ids: string[]; generation: number }> {
    assertValidId(input.stationId, 'station id');
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

    const { ids, changes, generation } = await this.db.transaction(async (tx) => {
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
                part.map((id) => ({
                  kind: 'device' as const,
                  id,
                  status: 'revoked' as const,
                  reason,
                  actor,
                })),
              )
              .returning()),
          );
          await tx.insert(auditLog).values(
            part.map((id) => ({
              actor,
              action: 'device.revoke',
              subject: ref('device', id),
              outcome: 'success' as const,
              details: { reason, cascadeFrom: ref('station', stationId) },
            })),
          );
        }
      }
      await tx.insert(auditLog).values({
        actor,
        action: 'station.cascade_revoke',
        subject: ref('station', stationId),
        outcome: 'success',
        details: { from: from.toISOString(), to: to.toISOString(), reason, devicesRevoked: ids.length },
      });
      return { ids, changes, generation: await generationOf(tx) };
    });
    this.publish(changes);
    return { ids, generation };
  }

  // ------------------------------------------------------------------------------------------ revocation data

  /** The revocation generation: max(seq) of the status-change log (0 when empty). */
  async generation(): Promise<number> {
    return generationOf(this.db);
  }

  /** Everything not active, with the generation it corresponds to (one consistent snapshot). */
  async revokedSet(): Promise<RevokedSet> {
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
      const serials = await tx
        .select({ serial: certificates.serial })
        .from(certificates)
        .where(eq(certificates.status, 'revoked'));
      type Inactive = Exclude<SubjectStatus, 'active'>;
      return {
        generation,
        subjects: [
          ...devs.map((d) => ({ kind: 'device' as const, id: d.id, status: d.status as Inactive })),
          ...prins.map((p) => ({ kind: p.kind, id: p.id, status: p.status as Inactive })),
        ],
        serials: serials.map((s) => s.serial),
      };
    };
    return this.driver === 'postgres'
      ? this.db.transaction(read, { isolationLevel: 'repeatable read', accessMode: 'read only' })
      : this.db.transaction(read);
  }

  /** Status changes after `seq`, in order (for catching up after a missed notification). */
  async changesSince(seq: number, limit = MAX_LIMIT): Promise<StatusChangeRow[]> {
    if (!Number.isInteger(seq) || seq < 0)
      throw invalid('seq must be a non-negative integer', { field: 'seq' });
    return this.db
      .select()
      .from(statusChanges)
      .where(gt(statusChanges.seq, seq))
      .orderBy(asc(statusChanges.seq))
      .limit(checkLimit(limit));
  }

  /** Revoked certificates of one issuing CA, for its CRL (ordered by serial). */
  async revokedCertificates(issuerCa: string): Promise<RevokedCertificate[]> {
    const rows = await this.db
      .select({
        serial: certificates.serial,
        revokedAt: certificates.revokedAt,
        reason: certificates.revocationReason,
      })
      .from(certificates)
      .where(and(eq(certificates.issuerCa, issuerCa), eq(certificates.status, 'revoked')))
      .orderBy(asc(certificates.serial));
    return rows.map((r) => ({
      serial: r.serial,
      revokedAt: r.revokedAt!,
      reason: r.reason ?? 'unspecified',
    }));
  }

  /**
   * Active certificates of one issuing CA whose subject is suspended, with the time of the suspension: a
   * CRL lists them on hold (RFC 5280 §5.3.1 certificateHold) until the subject is reinstated.
   */
  async heldCertificates(issuerCa: string): Promise<RevokedCertificate[]> {
    const rows = await exec(
      this.db,
      sql`select c.serial, coalesce(d.status_changed_at, p.status_changed_at, c.created_at) as held_at
        from ${certificates} c
        left join ${devices} d on c.subject_kind = 'device' and d.id = c.subject_id
        left join ${principals} p on c.subject_kind <> 'device' and p.kind = c.subject_kind and p.id = c.subject_id
        where c.issuer_ca = ${issuerCa} and c.status = 'active' and coalesce(d.status, p.status) = 'suspended'
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
  async expiringCertificates(opts: {
    withinDays: number;
    limit?: number;
    cursor?: string;
  }): Promise<Page<CertificateSummary>> {
    const days = opts.withinDays;
    if (typeof days !== 'number' || !Number.isFinite(days) || days < 0)
      throw invalid('withinDays must be a non-negative number', { field: 'withinDays' });
    const limit = checkLimit(opts.limit);
    const where: SQL[] = [
      eq(certificates.status, 'active'),
      sql`${certificates.notAfter} <= now() + (${days} * interval '1 day')`,
    ];
    if (opts.cursor !== undefined) {
      const c = canonicalSerial(opts.cursor, 'cursor');
      where.push(
        sql`(${certificates.notAfter}, ${certificates.serial}) > (select not_after, serial from ${certificates} where serial = ${c})`,
      );
    }
    const rows = await this.db
      .select(certificateSummaryColumns)
      .from(certificates)
      .where(and(...where))
      .orderBy(asc(certificates.notAfter), asc(certificates.serial))
      .limit(limit + 1);
    return page(rows, limit, (c) => c.serial);
  }

  /** Status of one certificate by serial, for OCSP; undefined when unknown. */
  async certificateStatus(serial: string): Promise<CertificateStatusInfo | undefined> {
    const s = canonicalSerial(serial);
    const [c] = await this.db
      .select({
        serial: certificates.serial,
        status: certificates.status,
        revokedAt: certificates.revokedAt,
        reason: certificates.revocationReason,
        issuerCa: certificates.issuerCa,
        notBefore: certificates.notBefore,
        notAfter: certificates.notAfter,
        subjectKind: certificates.subjectKind,
        subjectId: certificates.subjectId,
      })
      .from(certificates)
      .where(eq(certificates.serial, s));
    if (!c) return undefined;
    const subjectStatus = (await subjectStatusOf(this.db, c.subjectKind, c.subjectId)) ?? null;
    return { ...c, subjectStatus };
  }

  // ------------------------------------------------------------------------------------------ change feed

  /**
   * Subscribes to status changes. On PostgreSQL it LISTENs on `fleet_status`, so changes written by any
   * process arrive; on PGlite changes are emitted in process after commit. Resolves once listening, with
   * the unsubscribe function. A notification missed while the listening connection was down is not
   * replayed: consumers resync periodically (revokedSet / changesSince).
   */
  async onChange(listener: ChangeListener): Promise<() => Promise<void>> {
    if (this.closed) throw new RegistryError('REGISTRY_CLOSED', 'the registry is closed');
    this.feed.on('change', listener);
    if (this.conn.driver === 'postgres') {
      try {
        await this.startListening();
      } catch (e) {
        this.feed.off('change', listener);
        throw e;
      }
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      this.feed.off('change', listener);
      if (this.feed.listenerCount('change') === 0) await this.stopListening();
    };
  }

  private startListening(): Promise<void> {
    if (this.conn.driver !== 'postgres') return Promise.resolve();
    if (this.listening) return this.listening;
    const sqlClient = this.conn.sql;
    this.listening = sqlClient
      .listen(
        'fleet_status',
        (payload) => {
          const event = parseChange(payload);
          if (!event) {
            this.log.warn(
              { event: 'registry_change_payload_invalid', payload },
              'ignored a malformed notification',
            );
            return;
          }
          this.emit(event);
        },
        () => this.log.debug({ event: 'registry_change_feed_listening' }),
      )
      .then((meta) => {
        this.unlisten = meta.unlisten;
      })
      .catch((e) => {
        this.listening = undefined;
        throw e;
      });
    return this.listening;
  }

  private async stopListening(): Promise<void> {
    const pending = this.listening;
    this.listening = undefined;
    if (!pending) return;
    await pending.catch(() => {});
    const unlisten = this.unlisten;
    this.unlisten = undefined;
    if (unlisten && !this.closed) await unlisten().catch(() => {});
  }

  /** On PGlite, the in-process feed (PostgreSQL delivers through NOTIFY instead). */
  private publish(rows: StatusChangeRow[]): void {
    if (this.conn.driver !== 'pglite') return;
    for (const r of rows) {
      this.emit({
        seq: r.seq,
        kind: r.kind,
        id: r.id,
        ...(r.serial ? { serial: r.serial } : {}),
        status: r.status,
      });
    }
  }

  private emit(event: ChangeEvent): void {
    for (const listener of this.feed.listeners('change') as ChangeListener[]) {
      try {
        listener(event);
      } catch (e) {
        this.log.error({ event: 'registry_change_listener_failed', err: e }, 'a change listener threw');
      }
    }
  }

  // ------------------------------------------------------------------------------------------ presence

  /**
   * Records a batch of presence events with ONE multi-row upsert. Order-insensitive: the latest
   * connect/disconnect by time wins, so a late disconnect from the node a device left does not mark it
   * offline after it connected elsewhere.
   */
  async recordPresence(batch: PresenceUpdate[]): Promise<void> {
    if (!Array.isArray(batch)) throw invalid('batch must be an array');
    if (batch.length === 0) return;
    const merged = new Map<string, typeof presence.$inferInsert>();
    for (const u of batch) {
      assertKind(u.kind);
      assertValidId(u.id, `${u.kind} id`);
      assertDate(u.at, 'at');
      if (u.event !== 'connect' && u.event !== 'disconnect' && u.event !== 'seen') {
        throw invalid('event must be connect, disconnect or seen', { field: 'event' });
      }
      const key = ref(u.kind, u.id);
      const row = merged.get(key) ?? {
        kind: u.kind,
        id: u.id,
        connected: true,
        lastSeen: u.at,
        remoteAddress: null,
        brokerNode: null,
        connectedAt: null,
        disconnectedAt: null,
      };
      if (u.at > row.lastSeen!) row.lastSeen = u.at;
      if (u.event === 'connect' && (!row.connectedAt || u.at >= row.connectedAt)) {
        row.connectedAt = u.at;
        row.remoteAddress = u.remoteAddress ?? null;
        row.brokerNode = u.brokerNode ?? null;
      }
      if (u.event === 'disconnect' && (!row.disconnectedAt || u.at >= row.disconnectedAt)) {
        row.disconnectedAt = u.at;
        // With no connect in this batch, the node is the disconnecting one: the upsert below lets a
        // disconnect end the presence only when it comes from the node that holds the connection.
        if (!row.connectedAt) row.brokerNode = u.brokerNode ?? null;
      }
      if (row.connectedAt || row.disconnectedAt) {
        // Connected if the latest state event was a connect.
        row.connected = !row.disconnectedAt || (!!row.connectedAt && row.connectedAt > row.disconnectedAt);
      }
      merged.set(key, row);
    }
    const newerConnect = sql`excluded.connected_at is not null and excluded.connected_at >= coalesce(${presence.connectedAt}, '-infinity'::timestamptz)`;
    for (const part of chunks([...merged.values()])) {
      await this.db
        .insert(presence)
        .values(part)
        .onConflictDoUpdate({
          target: [presence.kind, presence.id],
          set: {
            // Presence belongs to the node of the latest connect. A device that moved nodes is
            // disconnected by its old node after the new node's connect, and the two nodes' batches
            // arrive in either order: a batch with the latest connect decides for itself, and a
            // disconnect alone ends the presence only when it comes from that node, after that connect.
            connected: sql`case
              when ${newerConnect} then excluded.connected
              when excluded.disconnected_at is not null
                and excluded.disconnected_at >= coalesce(${presence.connectedAt}, '-infinity'::timestamptz)
                and (${presence.brokerNode} is null or excluded.broker_node is null
                  or excluded.broker_node = ${presence.brokerNode}) then false
              else ${presence.connected} end`,
            lastSeen: sql`greatest(${presence.lastSeen}, excluded.last_seen)`,
            connectedAt: sql`greatest(${presence.connectedAt}, excluded.connected_at)`,
            disconnectedAt: sql`greatest(${presence.disconnectedAt}, excluded.disconnected_at)`,
            remoteAddress: sql`case when ${newerConnect} then excluded.remote_address else ${presence.remoteAddress} end`,
            brokerNode: sql`case when ${newerConnect} then excluded.broker_node else ${presence.brokerNode} end`,
          },
        });
    }
  }

  async getPresence(kind: SubjectKind, id: string): Promise<PresenceRow | undefined> {
    assertKind(kind);
    assertValidId(id, `${kind} id`);
    const [row] = await this.db
      .select()
      .from(presence)
      .where(and(eq(presence.kind, kind), eq(presence.id, id)));
    return row;
  }

  // ------------------------------------------------------------------------------------------ audit

  async appendAudit(entry: NewAuditEntry): Promise<AuditRow> {
    assertActor(entry.actor);
    if (typeof entry.action !== 'string' || entry.action.length === 0) throw invalid('action is missing');
    if (!AUDIT_OUTCOMES.includes(entry.outcome))
      throw invalid(`outcome must be one of ${AUDIT_OUTCOMES.join(', ')}`);
    const [row] = await this.db
      .insert(auditLog)
      .values({
        actor: entry.actor,
        action: entry.action,
        subject: entry.subject ?? null,
        outcome: entry.outcome,
        details: entry.details ?? null,
      })
      .returning();
    return row!;
  }

  /** Newest first; `cursor` is the id of the last entry of the previous page. */
  async listAudit(filter: AuditFilter = {}): Promise<Page<AuditRow>> {
    const limit = checkLimit(filter.limit);
    const where: SQL[] = [];
    if (filter.actor !== undefined) where.push(eq(auditLog.actor, filter.actor));
    if (filter.subject !== undefined) where.push(eq(auditLog.subject, filter.subject));
    if (filter.action !== undefined) where.push(eq(auditLog.action, filter.action));
    if (filter.from !== undefined) {
      assertDate(filter.from, 'from');
      where.push(gte(auditLog.at, filter.from));
    }
    if (filter.to !== undefined) {
      assertDate(filter.to, 'to');
      where.push(lte(auditLog.at, filter.to));
    }
    if (filter.cursor !== undefined) {
      const id = Number(filter.cursor);
      if (!Number.isSafeInteger(id) || id < 0)
        throw invalid('cursor is not an audit id', { field: 'cursor' });
      where.push(lt(auditLog.id, id));
    }
    const rows = await this.db
      .select()
      .from(auditLog)
      .where(where.length > 0 ? and(...where) : undefined)
      .orderBy(desc(auditLog.id))
      .limit(limit + 1);
    return page(rows, limit, (a) => String(a.id));
  }

  // ------------------------------------------------------------------------------------------ lifecycle

  /**
   * The database handle, for the query modules beside this class that take it (registry/console.ts).
   * REGISTRY_CLOSED once closed.
   */
  get database(): Db {
    return this.db;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.stopListening();
    this.closed = true;
    this.feed.removeAllListeners();
    try {
      await this.conn.close();
    } finally {
      this.lock?.release();
      this.log.info({ event: 'registry_closed', driver: this.driver });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

function duplicates(values: string[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const v of values) (seen.has(v) ? dup : seen).add(v);
  return [...dup];
}

function page<T>(rows: T[], limit: number, cursorOf: (row: T) => string): Page<T> {
  if (rows.length <= limit) return { items: rows };
  const items = rows.slice(0, limit);
  return { items, nextCursor: cursorOf(items[items.length - 1]!) };
}

function principalValues(s: IssueSubject): NewPrincipal {
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

function principalInsert(p: NewPrincipal): typeof principals.$inferInsert {
  return {
    kind: p.kind,
    id: p.id,
    products: p.kind === 'station' ? checkProducts(p.products) : null,
    hourlyQuota: p.kind === 'station' ? checkQuota(p.hourlyQuota) : null,
    role: p.kind === 'service' ? (p.role ?? null) : null,
  };
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

async function generationOf(db: Db): Promise<number> {
  const [row] = await db
    .select({ g: sql<string | number | null>`max(${statusChanges.seq})` })
    .from(statusChanges);
  return row?.g == null ? 0 : Number(row.g);
}

async function subjectStatusOf(db: Db, kind: SubjectKind, id: string): Promise<SubjectStatus | undefined> {
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
async function lockSubjectStatus(tx: Tx, kind: SubjectKind, id: string): Promise<SubjectStatus | undefined> {
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

async function supersedeActive(tx: Tx, kind: SubjectKind, id: string, by: string): Promise<void> {
  await tx
    .update(certificates)
    .set({ status: 'superseded', supersededBy: by })
    .where(
      and(
        eq(certificates.subjectKind, kind),
        eq(certificates.subjectId, id),
        eq(certificates.status, 'active'),
        ne(certificates.serial, by),
      ),
    );
}

function parseChange(payload: string): ChangeEvent | undefined {
  try {
    const p = JSON.parse(payload) as Record<string, unknown>;
    const seq = Number(p['seq']);
    if (!Number.isSafeInteger(seq) || !SUBJECT_KINDS.includes(p['kind'] as SubjectKind)) return undefined;
    if (typeof p['id'] !== 'string' || typeof p['status'] !== 'string') return undefined;
    return {
      seq,
      kind: p['kind'] as SubjectKind,
      id: p['id'],
      ...(typeof p['serial'] === 'string' ? { serial: p['serial'] } : {}),
      status: p['status'] as ChangeEvent['status'],
    };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------

/**
 * Opens the registry: PostgreSQL when `databaseUrl` is given, else PGlite in `<dataDir>/registry` (locked
 * against a second process: REGISTRY_LOCKED) or in memory. Applies pending migrations before returning.
 */
export async function openRegistry(opts: OpenRegistryOptions = {}): Promise<Registry> {
  const log = opts.logger ?? noopLogger;
  let conn: Connection;
  let lock: DirLock | undefined;
  if (opts.databaseUrl) {
    conn = connectPostgres(opts.databaseUrl, opts.poolSize ?? 10);
  } else {
    if (opts.dataDir !== undefined) {
      mkdirSync(opts.dataDir, { recursive: true });
      lock = acquireDirLock(opts.dataDir);
    }
    try {
      conn = await connectPglite(opts.dataDir);
    } catch (e) {
      lock?.release();
      throw e;
    }
  }
  try {
    const applied = await migrate(conn.db);
    if (applied.length > 0) log.info({ event: 'registry_migrated', applied }, 'applied registry migrations');
  } catch (e) {
    await conn.close().catch(() => {});
    lock?.release();
    throw e;
  }
  log.info({ event: 'registry_opened', driver: conn.driver, dataDir: opts.dataDir ?? null });
  return new Registry(conn, lock, log);
}
