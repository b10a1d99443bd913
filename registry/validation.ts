/**
 * Validation at the registry's edge: every argument is checked before any SQL runs, so bad input is a
 * RegistryError (REGISTRY_INVALID_INPUT, ID_INVALID) and changes nothing. The id rules and the canonical
 * serial form are pki's (pki/ids.ts, pki/serial.ts); the registry only raises its own errors for them.
 */
import { idProblem } from '../pki/ids.ts';
import { canonicalSerial } from '../pki/serial.ts';
import { RegistryError } from './errors.ts';
import {
  AUDIT_OUTCOMES,
  PRINCIPAL_KINDS,
  type PrincipalKind,
  REVOCATION_REASONS,
  type RevocationReason,
  SUBJECT_KINDS,
  SUBJECT_STATUSES,
  type SubjectKind,
  type SubjectStatus,
} from './schema.ts';
import type { IssueRecord, NewAuditEntry, NewCertificate, PresenceUpdate } from './types.ts';

/** The most rows one page or one read returns. */
export const MAX_LIMIT = 1000;
/** RFC 5280 §4.1.2.2: a serial is at most 20 octets; the `certificates.serial` CHECK allows 40 hex digits. */
const MAX_SERIAL_DIGITS = 40;
const HEX_SHA256 = /^[0-9a-f]{64}$/;

export function invalid(message: string, details?: Record<string, unknown>): RegistryError {
  return new RegistryError('REGISTRY_INVALID_INPUT', message, details ? { details } : {});
}

/** ID_INVALID naming the rule the id broke (the rules are pki's, the error the registry's). */
export function assertId(id: unknown, what = 'id'): asserts id is string {
  const problem = idProblem(id, what);
  if (problem) throw new RegistryError('ID_INVALID', problem.message, { details: problem.details });
}

/**
 * A serial given to a lookup (an API query, an OCSP CertID, a broker's identity): 1 to 40 hex digits in
 * either case, returned in the canonical form rows are stored in.
 */
export function checkSerial(serial: unknown, what = 'serial'): string {
  if (typeof serial !== 'string') throw invalid(`${what} is not a string`, { field: what });
  const s = serial.length <= MAX_SERIAL_DIGITS ? canonicalSerial(serial) : undefined;
  if (s === undefined) throw invalid(`${what} must be 1 to 40 hex digits`, { field: what });
  return s;
}

export function assertSha256(v: unknown, what: string): asserts v is string {
  if (typeof v !== 'string' || !HEX_SHA256.test(v)) {
    throw invalid(`${what} must be 64 lowercase hex digits`, { field: what });
  }
}

export function assertDate(v: unknown, what: string): asserts v is Date {
  if (!(v instanceof Date) || Number.isNaN(v.getTime()))
    throw invalid(`${what} is not a valid Date`, { field: what });
}

export function assertActor(actor: unknown): asserts actor is string {
  if (typeof actor !== 'string' || actor.length === 0 || actor.length > 200 || CONTROL.test(actor)) {
    throw invalid('actor must be a non-empty string of at most 200 characters', { field: 'actor' });
  }
}

export function assertKind(kind: unknown): asserts kind is SubjectKind {
  if (!SUBJECT_KINDS.includes(kind as SubjectKind)) {
    throw invalid(`kind must be one of ${SUBJECT_KINDS.join(', ')}`, { field: 'kind' });
  }
}

export function assertPrincipalKind(kind: unknown): asserts kind is PrincipalKind {
  if (!PRINCIPAL_KINDS.includes(kind as PrincipalKind)) {
    throw invalid(`principal kind must be one of ${PRINCIPAL_KINDS.join(', ')}`, { field: 'kind' });
  }
}

export function assertStatus(status: unknown): asserts status is SubjectStatus {
  if (!SUBJECT_STATUSES.includes(status as SubjectStatus)) {
    throw invalid(`status must be one of ${SUBJECT_STATUSES.join(', ')}`, { field: 'status' });
  }
}

export function checkReason(reason: unknown): RevocationReason {
  if (reason === undefined) return 'unspecified';
  if (!REVOCATION_REASONS.includes(reason as RevocationReason)) {
    throw invalid(`reason must be an RFC 5280 CRLReason: ${REVOCATION_REASONS.join(', ')}`, {
      field: 'reason',
    });
  }
  return reason as RevocationReason;
}

export function checkLimit(limit: number | undefined, dflt = 100): number {
  if (limit === undefined) return dflt;
  if (!Number.isInteger(limit) || limit < 1)
    throw invalid('limit must be a positive integer', { field: 'limit' });
  return Math.min(limit, MAX_LIMIT);
}

/**
 * The most days ahead a query may look (about 2,700 years: more than any certificate lives, far inside
 * PostgreSQL's timestamp range, which `now() + n days` left for `expiringWithinDays=1e20`, a 500). Refused
 * here, before any SQL. The API takes at most 36,500 (100 years) in its query strings.
 */
export const MAX_DAYS = 1_000_000;

/** A number of days ahead (expiring certificates); `what` names the field. */
export function checkDays(days: unknown, what: string): number {
  if (typeof days !== 'number' || !Number.isFinite(days) || days < 0 || days > MAX_DAYS) {
    throw invalid(`${what} must be a number of days from 0 to ${MAX_DAYS}`, { field: what });
  }
  return days;
}

/** C0 controls and DEL: PostgreSQL text cannot hold NUL, and none of them belongs in a name or filter. */
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * A free-text value compared against a text column (an audit filter): a string of at most `max`
 * characters without control characters. A NUL byte reached PostgreSQL and came back as a 500.
 */
export function checkText(v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v.length > max || CONTROL.test(v)) {
    throw invalid(`${what} must be a string of at most ${max} characters without control characters`, {
      field: what,
    });
  }
  return v;
}

/** A service's role fills `${role}` in topic rules: it follows the id rules (no `/`, `+`, `#`, controls). */
export function checkRole(role: unknown): string | null {
  if (role === undefined || role === null) return null;
  assertId(role, 'service role');
  return role;
}

export function checkProducts(products: unknown): string[] | null {
  if (products === undefined || products === null) return null;
  if (!Array.isArray(products)) throw invalid('products must be an array of ids', { field: 'products' });
  for (const p of products) assertId(p, 'product');
  return [...new Set(products as string[])];
}

/** `principals.hourly_quota` is a PostgreSQL integer: above this the insert failed (a 500). */
export const MAX_QUOTA = 2_147_483_647;

export function checkQuota(q: unknown): number | null {
  if (q === undefined || q === null) return null;
  if (!Number.isInteger(q) || (q as number) < 0 || (q as number) > MAX_QUOTA) {
    throw invalid(`hourlyQuota must be an integer from 0 to ${MAX_QUOTA}`, { field: 'hourlyQuota' });
  }
  return q as number;
}

export function checkIssueRecord(r: IssueRecord, i: number): void {
  const at = (f: string) => `records[${i}].${f}`;
  if (r === null || typeof r !== 'object') throw invalid(`records[${i}] is not an object`);
  assertActor(r.actor);
  assertKind(r.subject?.kind);
  assertId(r.subject.id, `${r.subject.kind} id`);
  if (r.subject.kind === 'device') {
    assertId(r.subject.product, 'product');
    assertId(r.subject.fleet, 'fleet');
  }
  if (r.enrolledBy !== undefined && r.enrolledBy !== null) assertId(r.enrolledBy, 'station id');
  checkCertificate(r.certificate, at('certificate'));
}

/**
 * A certificate to record: its serial must already be canonical (what pki issues is), so the row's key is
 * the form every lookup, the CRL and OCSP compare; anything else is refused rather than rewritten.
 */
export function checkCertificate(c: NewCertificate, what: string): void {
  if (c === null || typeof c !== 'object') throw invalid(`${what} is missing`);
  if (
    typeof c.serial !== 'string' ||
    c.serial.length > MAX_SERIAL_DIGITS ||
    canonicalSerial(c.serial) !== c.serial
  ) {
    throw invalid(
      `${what}.serial must be 1 to 20 octets of lowercase hex without a leading zero octet (pki/serial.ts)`,
      { field: 'serial' },
    );
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

export function checkAuditEntry(entry: NewAuditEntry): void {
  assertActor(entry.actor);
  if (typeof entry.action !== 'string' || entry.action.length === 0) throw invalid('action is missing');
  checkText(entry.action, 'action', 100);
  if (entry.subject !== undefined && entry.subject !== null) checkText(entry.subject, 'subject', 200);
  if (!AUDIT_OUTCOMES.includes(entry.outcome))
    throw invalid(`outcome must be one of ${AUDIT_OUTCOMES.join(', ')}`);
}

export function checkPresenceUpdate(u: PresenceUpdate): void {
  assertKind(u.kind);
  assertId(u.id, `${u.kind} id`);
  assertDate(u.at, 'at');
  if (u.event !== 'connect' && u.event !== 'disconnect' && u.event !== 'seen') {
    throw invalid('event must be connect, disconnect or seen', { field: 'event' });
  }
}
