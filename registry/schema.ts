/**
 * The registry schema, as code. Row types are derived from it (`typeof devices.$inferSelect`); migrations
 * are generated from it with `npm run db:generate` (drizzle-kit) and committed under registry/migrations/.
 *
 * Conventions: times are timestamptz (UTC), serials and hashes lowercase hex, statuses are text constrained
 * by CHECK (simpler to evolve than PostgreSQL enums).
 */
import { sql } from 'drizzle-orm';
import {
  bigserial,
  boolean,
  check,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';
import { REVOCATION_REASON_NAMES as REVOCATION_REASONS } from '../pki/crl.ts';

export const SUBJECT_KINDS = ['device', 'service', 'station', 'operator'] as const;
export type SubjectKind = (typeof SUBJECT_KINDS)[number];
export const PRINCIPAL_KINDS = ['service', 'station', 'operator'] as const;
export type PrincipalKind = (typeof PRINCIPAL_KINDS)[number];

/** A device, service, station or operator: suspended is reversible, revoked is final. */
export const SUBJECT_STATUSES = ['active', 'suspended', 'revoked'] as const;
export type SubjectStatus = (typeof SUBJECT_STATUSES)[number];

export const CERTIFICATE_STATUSES = ['active', 'superseded', 'revoked'] as const;
export type CertificateStatus = (typeof CERTIFICATE_STATUSES)[number];

// The reasons are pki's (the lowest part that owns their meaning); re-exported for the registry's users.
export {
  REVOCATION_REASON_NAMES as REVOCATION_REASONS,
  REVOCATION_REASONS as REVOCATION_REASON_CODES,
  type RevocationReason,
} from '../pki/crl.ts';

export const AUDIT_OUTCOMES = ['success', 'failure', 'denied'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

const inList = (values: readonly string[]) => sql.raw(values.map((v) => `'${v}'`).join(', '));

const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({
  dataType: () => 'bytea',
  // Both drivers hand back Buffer/Uint8Array; normalise to a plain Uint8Array view.
  fromDriver: (v) => (v instanceof Uint8Array ? v : new Uint8Array(v as ArrayLike<number>)),
});

/** `id` in byte order (collation "C"), for index ranges on id prefixes whatever the database collation. */
const idC = sql`"id" collate "C"`;

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const devices = pgTable(
  'devices',
  {
    id: text('id').primaryKey(),
    product: text('product').notNull(),
    fleet: text('fleet').notNull(),
    status: text('status', { enum: SUBJECT_STATUSES }).notNull().default('active'),
    revocationReason: text('revocation_reason', { enum: REVOCATION_REASONS }),
    revokedAt: tz('revoked_at'),
    statusChangedAt: tz('status_changed_at'),
    /** Station id that enrolled it (null when enrolled another way, e.g. by an operator). */
    enrolledBy: text('enrolled_by'),
    createdAt: tz('created_at').notNull().defaultNow(),
    /** Set by an operator "reset": the next enrollment of this id may replace its certificate. */
    reenrollAllowed: boolean('reenroll_allowed').notNull().default(false),
  },
  (t) => [
    check('devices_status_check', sql`${t.status} in (${inList(SUBJECT_STATUSES)})`),
    check(
      'devices_revocation_reason_check',
      sql`${t.revocationReason} is null or ${t.revocationReason} in (${inList(REVOCATION_REASONS)})`,
    ),
    index('devices_enrolled_by_created_idx').on(t.enrolledBy, t.createdAt),
    index('devices_created_idx').on(t.createdAt),
    // The console's paged lists and searches walk these in id order (byte order, "C", whatever the
    // database's collation, so an id prefix is one index range): registry/console.ts.
    index('devices_id_c_idx').on(idC),
    index('devices_product_id_idx').on(t.product, idC),
    index('devices_fleet_id_idx').on(t.fleet, idC),
    index('devices_station_id_idx').on(t.enrolledBy, idC),
    index('devices_not_active_idx').on(t.status, idC).where(sql`${t.status} <> 'active'`),
  ],
);

export const certificates = pgTable(
  'certificates',
  {
    serial: text('serial').primaryKey(),
    subjectKind: text('subject_kind', { enum: SUBJECT_KINDS }).notNull(),
    subjectId: text('subject_id').notNull(),
    /** Name of the issuing CA (e.g. 'device', 'infrastructure'). */
    issuerCa: text('issuer_ca').notNull(),
    der: bytea('der').notNull(),
    fingerprintSha256: text('fingerprint_sha256').notNull(),
    /** SHA-256 of the SubjectPublicKeyInfo DER: same device + same key = same certificate back. */
    spkiSha256: text('spki_sha256').notNull(),
    notBefore: tz('not_before').notNull(),
    notAfter: tz('not_after').notNull(),
    status: text('status', { enum: CERTIFICATE_STATUSES }).notNull().default('active'),
    revocationReason: text('revocation_reason', { enum: REVOCATION_REASONS }),
    revokedAt: tz('revoked_at'),
    supersededBy: text('superseded_by'),
    /**
     * A superseded certificate stays usable until its successor first connects or until this time,
     * whichever is first; then it is retired: revoked with reason superseded (registry/rotation.ts).
     */
    graceUntil: tz('grace_until'),
    createdAt: tz('created_at').notNull().defaultNow(),
    /** Station id that enrolled it, when a station did. */
    enrolledBy: text('enrolled_by'),
  },
  (t) => [
    check('certificates_serial_check', sql`${t.serial} ~ '^[0-9a-f]{1,40}$'`),
    check('certificates_fingerprint_check', sql`${t.fingerprintSha256} ~ '^[0-9a-f]{64}$'`),
    check('certificates_spki_check', sql`${t.spkiSha256} ~ '^[0-9a-f]{64}$'`),
    check('certificates_subject_kind_check', sql`${t.subjectKind} in (${inList(SUBJECT_KINDS)})`),
    check('certificates_status_check', sql`${t.status} in (${inList(CERTIFICATE_STATUSES)})`),
    check(
      'certificates_revocation_reason_check',
      sql`${t.revocationReason} is null or ${t.revocationReason} in (${inList(REVOCATION_REASONS)})`,
    ),
    uniqueIndex('certificates_fingerprint_idx').on(t.fingerprintSha256),
    index('certificates_subject_idx').on(t.subjectKind, t.subjectId, t.spkiSha256),
    index('certificates_enrolled_by_created_idx').on(t.enrolledBy, t.createdAt),
    // Only active certificates expire usefully (the expiring list and the console's 30/90-day counts).
    index('certificates_active_not_after_idx').on(t.notAfter).where(sql`${t.status} = 'active'`),
    index('certificates_revoked_idx').on(t.issuerCa).where(sql`${t.status} = 'revoked'`),
    // The rotation sweep's next deadline and the certificates in their grace period (registry/rotation.ts).
    index('certificates_grace_idx').on(t.graceUntil).where(sql`${t.status} = 'superseded'`),
  ],
);

export const principals = pgTable(
  'principals',
  {
    kind: text('kind', { enum: PRINCIPAL_KINDS }).notNull(),
    id: text('id').notNull(),
    status: text('status', { enum: SUBJECT_STATUSES }).notNull().default('active'),
    revocationReason: text('revocation_reason', { enum: REVOCATION_REASONS }),
    revokedAt: tz('revoked_at'),
    statusChangedAt: tz('status_changed_at'),
    /** Station: the products it may enroll (null = none until an operator sets a scope). */
    products: text('products').array(),
    /** Station: enrollments allowed per rolling hour (null = unlimited). */
    hourlyQuota: integer('hourly_quota'),
    /** Service: the role its MQTT policy grants. */
    role: text('role'),
    createdAt: tz('created_at').notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.kind, t.id] }),
    check('principals_kind_check', sql`${t.kind} in (${inList(PRINCIPAL_KINDS)})`),
    check('principals_status_check', sql`${t.status} in (${inList(SUBJECT_STATUSES)})`),
    check(
      'principals_revocation_reason_check',
      sql`${t.revocationReason} is null or ${t.revocationReason} in (${inList(REVOCATION_REASONS)})`,
    ),
    check('principals_quota_check', sql`${t.hourlyQuota} is null or ${t.hourlyQuota} >= 0`),
    index('principals_not_active_idx').on(t.status).where(sql`${t.status} <> 'active'`),
  ],
);

/**
 * Append-only. `actor` and `subject` are references of the form `<kind>:<id>` (see `ref()`). A refusal
 * (outcome denied or failure) is aggregated: one row per actor, action, outcome and error code per window,
 * keyed by `agg_key`, counting repeats from `at` (the first) to `last_at` (registry/audit.ts).
 */
export const auditLog = pgTable(
  'audit_log',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: tz('at').notNull().defaultNow(),
    actor: text('actor').notNull(),
    action: text('action').notNull(),
    subject: text('subject'),
    outcome: text('outcome', { enum: AUDIT_OUTCOMES }).notNull(),
    details: jsonb('details').$type<Record<string, unknown>>(),
    /** How many times this row happened (refusals aggregated within a window; 1 otherwise). */
    count: integer('count').notNull().default(1),
    /** The last time an aggregated refusal happened (null for a single event). */
    lastAt: tz('last_at'),
    /** The aggregation key of a refusal row: actor, action, outcome, code and window. */
    aggKey: text('agg_key'),
  },
  (t) => [
    check('audit_outcome_check', sql`${t.outcome} in (${inList(AUDIT_OUTCOMES)})`),
    check('audit_count_check', sql`${t.count} >= 1`),
    uniqueIndex('audit_agg_key_idx').on(t.aggKey).where(sql`${t.aggKey} is not null`),
    index('audit_actor_idx').on(t.actor, t.id),
    index('audit_subject_idx').on(t.subject, t.id),
    index('audit_action_idx').on(t.action, t.id),
    index('audit_at_idx').on(t.at),
  ],
);

export const presence = pgTable(
  'presence',
  {
    kind: text('kind', { enum: SUBJECT_KINDS }).notNull(),
    id: text('id').notNull(),
    connected: boolean('connected').notNull(),
    lastSeen: tz('last_seen').notNull(),
    remoteAddress: text('remote_address'),
    brokerNode: text('broker_node'),
    connectedAt: tz('connected_at'),
    disconnectedAt: tz('disconnected_at'),
  },
  (t) => [
    primaryKey({ columns: [t.kind, t.id] }),
    check('presence_kind_check', sql`${t.kind} in (${inList(SUBJECT_KINDS)})`),
    // Connected devices in id order: the console's "connected" filter (registry/console.ts).
    index('presence_connected_idx').on(idC).where(sql`${t.kind} = 'device' and ${t.connected}`),
  ],
);

/**
 * Every status change of a subject or a single certificate, in order. max(seq) is the revocation
 * generation brokers compare against. A trigger NOTIFYs `fleet_status` for each row (see migrations).
 */
export const statusChanges = pgTable(
  'status_changes',
  {
    seq: bigserial('seq', { mode: 'number' }).primaryKey(),
    kind: text('kind', { enum: SUBJECT_KINDS }).notNull(),
    id: text('id').notNull(),
    /** Set when one certificate changed, null when the whole subject did. */
    serial: text('serial'),
    status: text('status', { enum: [...SUBJECT_STATUSES, 'superseded'] as const }).notNull(),
    reason: text('reason', { enum: REVOCATION_REASONS }),
    actor: text('actor').notNull(),
    at: tz('at').notNull().defaultNow(),
    /** With status superseded: until when the certificate stays usable (brokers refuse it after). */
    graceUntil: tz('grace_until'),
  },
  (t) => [
    check(
      'status_changes_status_check',
      sql`${t.status} in ('active', 'suspended', 'revoked', 'superseded')`,
    ),
    index('status_changes_subject_idx').on(t.kind, t.id),
    // Revocations in a time range (the console's "revoked today").
    index('status_changes_revoked_at_idx').on(t.at).where(sql`${t.status} = 'revoked'`),
  ],
);

export type DeviceRow = typeof devices.$inferSelect;
export type CertificateRow = typeof certificates.$inferSelect;
export type PrincipalRow = typeof principals.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;
export type PresenceRow = typeof presence.$inferSelect;
export type StatusChangeRow = typeof statusChanges.$inferSelect;
