/**
 * The registry: the one query API over devices, certificates, principals, audit, presence and the
 * status-change log, on PostgreSQL (postgres.js pool) or embedded PGlite.
 *
 * `Registry` is a thin face, as drizzle keeps its database class: each method delegates to the module of
 * its concern, a function taking the connection (or a transaction). Every method is async, so a closed
 * registry (REGISTRY_CLOSED) or bad input is a rejected promise, never a synchronous throw.
 *
 *   issuing.ts      recording issued certificates, re-enrollment
 *   subjects.ts     devices and principals
 *   status.ts       suspend, reinstate, revoke, the station cascade
 *   revocation.ts   what brokers, the CRL and OCSP read
 *   rotation.ts     the rotation rule: superseded certificates, their grace, their retirement
 *   feed.ts         the change feed
 *   presence.ts     who is connected where
 *   audit.ts        the audit log, and its one writer
 *   sql.ts, validation.ts   shared SQL helpers and the checks at the edge
 *
 * Every write that must be atomic is one transaction. Status changes append to `status_changes`, whose
 * max(seq) is the revocation generation; a trigger NOTIFYs `fleet_status` on commit (PostgreSQL), and on
 * PGlite the registry emits the same events in process after commit.
 */
import { mkdirSync } from 'node:fs';
import * as audit from './audit.ts';
import { type Connection, connectPglite, connectPostgres, type Db } from './db.ts';
import { RegistryError } from './errors.ts';
import { ChangeFeed } from './feed.ts';
import * as issuing from './issuing.ts';
import { acquireDirLock, type DirLock } from './lock.ts';
import { migrate } from './migrate.ts';
import * as presence from './presence.ts';
import * as revocation from './revocation.ts';
import * as rotation from './rotation.ts';
import type {
  AuditRow,
  CertificateRow,
  DeviceRow,
  PresenceRow,
  PrincipalKind,
  PrincipalRow,
  RevocationReason,
  StatusChangeRow,
  SubjectKind,
} from './schema.ts';
import * as status from './status.ts';
import * as subjects from './subjects.ts';
import type {
  AuditFilter,
  CascadeInput,
  CertificateStatusInfo,
  CertificateSummary,
  ChangeListener,
  DeviceDetail,
  DeviceFilter,
  IssueRecord,
  NewAuditEntry,
  NewCertificate,
  NewPrincipal,
  OpenRegistryOptions,
  Page,
  PresenceUpdate,
  PrincipalFilter,
  RegistryLogger,
  RevokedCertificate,
  RevokedSet,
  SetStatusInput,
  StatusChangeResult,
  SubjectRef,
} from './types.ts';

const noopLogger: RegistryLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** The registry's face: see the module comment for where each concern's work lives. */
export class Registry {
  readonly driver: 'postgres' | 'pglite';
  private readonly conn: Connection;
  private readonly lock: DirLock | undefined;
  private readonly log: RegistryLogger;
  private readonly feed: ChangeFeed;
  private closed = false;

  /** Use openRegistry(). */
  constructor(conn: Connection, lock: DirLock | undefined, log: RegistryLogger) {
    this.conn = conn;
    this.driver = conn.driver;
    this.lock = lock;
    this.log = log;
    this.feed = new ChangeFeed(conn, log);
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

  /** Many issued certificates in ONE transaction, all or nothing (see issuing.ts for the refusals). */
  async recordIssuedBatch(records: IssueRecord[]): Promise<CertificateRow[]> {
    const { result, changes } = await issuing.recordIssuedBatch(this.db, records);
    this.feed.publish(changes);
    return result;
  }

  /**
   * Re-enrollment: the active certificate `oldSerial` becomes superseded by `next` (same subject), usable
   * until `next` first connects or `graceMs` (default 24 hours) ends: registry/rotation.ts.
   */
  async supersede(
    oldSerial: string,
    next: NewCertificate,
    opts: { actor: string; enrolledBy?: string | null; details?: Record<string, unknown>; graceMs?: number },
  ): Promise<CertificateRow> {
    const { result, changes } = await issuing.supersede(this.db, oldSerial, next, opts);
    this.feed.publish(changes);
    return result;
  }

  /**
   * The certificate `serial` of `kind:id` connected: the certificates it superseded are retired now
   * (revoked, reason superseded). Returns the serials retired ([] when none, or when `serial` is not the
   * subject's active certificate). A broker node calls it on a successor's first connect.
   */
  async retireSuperseded(input: {
    kind: SubjectKind;
    id: string;
    serial: string;
    actor: string;
  }): Promise<string[]> {
    const changes = await rotation.retireSuperseded(this.db, input);
    this.feed.publish(changes);
    return changes.map((c) => c.serial!);
  }

  /** The rotation sweep: retires every superseded certificate whose grace ended; returns their serials. */
  async retireExpiredGrace(actor: string): Promise<string[]> {
    const changes = await rotation.retireExpiredGrace(this.db, actor);
    this.feed.publish(changes);
    return changes.map((c) => c.serial!);
  }

  /** When the next grace period ends (undefined when no certificate is in one). */
  async nextGraceDeadline(): Promise<Date | undefined> {
    return rotation.nextGraceDeadline(this.db);
  }

  /** The active certificate of a subject for a given public key: same key, same certificate back. */
  async findCertificateForKey(subject: SubjectRef, spkiSha256: string): Promise<CertificateRow | undefined> {
    return issuing.findCertificateForKey(this.db, subject, spkiSha256);
  }

  // ------------------------------------------------------------------------------------------ subjects

  async getDevice(id: string): Promise<DeviceDetail | undefined> {
    return subjects.getDevice(this.db, id);
  }

  /** A device's row alone, in one query (the broker's CONNECT path; getDevice adds certificates and presence). */
  async getDeviceRow(id: string): Promise<DeviceRow | undefined> {
    return subjects.getDeviceRow(this.db, id);
  }

  /** Devices ordered by id, keyset-paginated. */
  async listDevices(filter: DeviceFilter = {}): Promise<Page<DeviceRow>> {
    return subjects.listDevices(this.db, filter);
  }

  /**
   * Operator "reset": the next enrollment of this device id may replace its certificate; its certificates
   * are retired at once (DEVICE_REVOKED for a revoked device: revocation is final).
   */
  async allowReenroll(deviceId: string, actor: string): Promise<DeviceRow> {
    const { result, changes } = await subjects.allowReenroll(this.db, deviceId, actor);
    this.feed.publish(changes);
    return result;
  }

  async createPrincipal(p: NewPrincipal, actor: string): Promise<PrincipalRow> {
    return subjects.createPrincipal(this.db, p, actor);
  }

  async getPrincipal(kind: PrincipalKind, id: string): Promise<PrincipalRow | undefined> {
    return subjects.getPrincipal(this.db, kind, id);
  }

  /** Ordered by (kind, id); the cursor is `<kind>:<id>` of the last row. */
  async listPrincipals(filter: PrincipalFilter = {}): Promise<Page<PrincipalRow>> {
    return subjects.listPrincipals(this.db, filter);
  }

  /** Sets a station's product scope and/or hourly quota (a field left undefined is unchanged). */
  async setStationScope(
    stationId: string,
    scope: { products?: string[] | null; hourlyQuota?: number | null },
    actor: string,
  ): Promise<PrincipalRow> {
    return subjects.setStationScope(this.db, stationId, scope, actor);
  }

  /** Certificates a station enrolled in the last `windowSeconds` (default one hour), for its quota. */
  async countStationIssuances(stationId: string, windowSeconds = 3600): Promise<number> {
    return subjects.countStationIssuances(this.db, stationId, windowSeconds);
  }

  // ------------------------------------------------------------------------------------------ status

  /**
   * Changes a subject's status (revoked is final; revoking revokes its certificates too). The change feed
   * fires on commit.
   */
  async setStatus(input: SetStatusInput): Promise<StatusChangeResult> {
    const { result, changes } = await status.setStatus(this.db, input);
    this.feed.publish(changes);
    return result;
  }

  /**
   * Revokes one certificate (its subject keeps its status). Revoked is final. (Retiring a superseded
   * certificate is rotation's: retireSuperseded, retireExpiredGrace.)
   */
  async revokeCertificate(input: {
    serial: string;
    reason?: RevocationReason;
    actor: string;
    details?: Record<string, unknown>;
  }): Promise<StatusChangeResult & { serial: string }> {
    const { result, changes } = await status.revokeCertificate(this.db, input);
    this.feed.publish(changes);
    return result;
  }

  /** Cascade: revokes every device the station enrolled within [from, to]; returns the ids revoked. */
  async revokeEnrolledBy(input: CascadeInput): Promise<{ ids: string[]; generation: number }> {
    const { result, changes } = await status.revokeEnrolledBy(this.db, input);
    this.feed.publish(changes);
    return result;
  }

  // ------------------------------------------------------------------------------------------ revocation data

  /** The revocation generation: max(seq) of the status-change log (0 when empty). */
  async generation(): Promise<number> {
    return revocation.generationOf(this.db);
  }

  /** Everything not active, with the generation it corresponds to (one consistent snapshot). */
  async revokedSet(): Promise<RevokedSet> {
    return revocation.revokedSet(this.db, this.driver);
  }

  /** Revoked certificates of one issuing CA, for its CRL (ordered by serial). */
  async revokedCertificates(issuerCa: string): Promise<RevokedCertificate[]> {
    return revocation.revokedCertificates(this.db, issuerCa);
  }

  /** Active certificates of one issuing CA whose subject is suspended: on hold on the CRL. */
  async heldCertificates(issuerCa: string): Promise<RevokedCertificate[]> {
    return revocation.heldCertificates(this.db, issuerCa);
  }

  /** Active certificates whose notAfter is within `withinDays` (expired ones included), soonest first. */
  async expiringCertificates(opts: {
    withinDays: number;
    limit?: number;
    cursor?: string;
  }): Promise<Page<CertificateSummary>> {
    return revocation.expiringCertificates(this.db, opts);
  }

  /** Status of one certificate by serial, for OCSP; undefined when unknown. */
  async certificateStatus(serial: string): Promise<CertificateStatusInfo | undefined> {
    return revocation.certificateStatus(this.db, serial);
  }

  /** Status changes after `seq`, in order (catching up after a missed notification; the console reads the
   * time of a change it made). */
  async changesSince(seq: number, limit?: number): Promise<StatusChangeRow[]> {
    return revocation.changesSince(this.db, seq, limit);
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
    return this.feed.subscribe(listener);
  }

  // ------------------------------------------------------------------------------------------ presence

  /** Records a batch of presence events with ONE multi-row upsert; the latest event by time wins. */
  async recordPresence(batch: PresenceUpdate[]): Promise<void> {
    return presence.recordPresence(this.db, batch);
  }

  /** One subject's presence row (the console's live device view). */
  async getPresence(kind: SubjectKind, id: string): Promise<PresenceRow | undefined> {
    return presence.getPresence(this.db, kind, id);
  }

  // ------------------------------------------------------------------------------------------ audit

  async appendAudit(entry: NewAuditEntry): Promise<AuditRow> {
    return audit.appendAudit(this.db, entry);
  }

  /** Newest first; `cursor` is the id of the last entry of the previous page. */
  async listAudit(filter: AuditFilter = {}): Promise<Page<AuditRow>> {
    return audit.listAudit(this.db, filter);
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
    await this.feed.close();
    this.closed = true;
    try {
      await this.conn.close();
    } finally {
      this.lock?.release();
      this.log.info({ event: 'registry_closed', driver: this.driver });
    }
  }
}

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
