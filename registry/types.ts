/**
 * The registry's public types: what callers pass in and get back. Row types come from the schema
 * (schema.ts); these are the shapes around them.
 */
import type {
  AuditOutcome,
  CertificateRow,
  CertificateStatus,
  DeviceRow,
  PresenceRow,
  PrincipalKind,
  RevocationReason,
  SubjectKind,
  SubjectStatus,
} from './schema.ts';

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

export interface NewCertificate {
  /** Canonical form (pki/serial.ts): lowercase hex in whole octets, no leading zero octet, at most 20
   * octets (RFC 5280 §4.1.2.2). What pki issues is already in this form. */
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
  /** Newest first, without DER. */
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
  /** The RFC 5280 reason of a revocation (superseded: retired by the rotation rule). */
  reason?: RevocationReason;
  /** With status superseded: the certificate is usable until then (registry/rotation.ts). */
  graceUntil?: Date;
}

export type ChangeListener = (event: ChangeEvent) => void;

export interface RevokedSet {
  /** max(seq) of the status-change log when the set was read; 0 when nothing ever changed. */
  generation: number;
  /** Every subject that is not active (suspended or revoked). */
  subjects: { kind: SubjectKind; id: string; status: Exclude<SubjectStatus, 'active'> }[];
  /** Serials of revoked certificates (retired ones included). */
  serials: string[];
  /** The serials above retired by the rotation rule (reason superseded). */
  retired: string[];
  /** Superseded certificates still in their grace period, with their deadline (registry/rotation.ts). */
  grace: { kind: SubjectKind; id: string; serial: string; graceUntil: Date | null }[];
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
  /** A superseded certificate is usable until then (registry/rotation.ts). */
  graceUntil: Date | null;
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
