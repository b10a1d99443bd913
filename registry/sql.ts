/**
 * SQL helpers shared by the per-concern modules: array parameters, raw statements on both drivers,
 * chunking, keyset pages and the column lists reads share.
 */
import { type SQL, sql } from 'drizzle-orm';
import type { Db } from './db.ts';
import { type CertificateStatus, certificates, type RevocationReason } from './schema.ts';
import type { Page } from './types.ts';

/** Rows per multi-row INSERT: well below PostgreSQL's 65,535 bind parameters. */
export const CHUNK = 1000;
/** Rows per column-array (unnest) statement. */
export const BULK_CHUNK = 5000;

/** One array bind parameter (drizzle would otherwise expand a JS array into a list of parameters). */
export function textArray(values: (string | null)[]): SQL {
  return sql`${sql.param(values)}`;
}

/** Rows of a raw statement: postgres.js returns an array, PGlite `{ rows }`. */
export async function exec(db: Db, query: SQL): Promise<Record<string, unknown>[]> {
  const r = (await db.execute(query)) as unknown;
  return (Array.isArray(r) ? r : (r as { rows: Record<string, unknown>[] }).rows) as Record<
    string,
    unknown
  >[];
}

export function chunks<T>(items: T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Values that occur more than once. */
export function duplicates(values: string[]): string[] {
  const seen = new Set<string>();
  const dup = new Set<string>();
  for (const v of values) (seen.has(v) ? dup : seen).add(v);
  return [...dup];
}

/** A keyset page from `limit + 1` rows: the extra row only says that there is a next page. */
export function page<T>(rows: T[], limit: number, cursorOf: (row: T) => string): Page<T> {
  if (rows.length <= limit) return { items: rows };
  const items = rows.slice(0, limit);
  return { items, nextCursor: cursorOf(items[items.length - 1]!) };
}

/**
 * A certificate without its DER (lists and device details), with its status as the rotation rule says it
 * is now: a superseded certificate past its grace deadline reads as revoked (superseded), whether or not the
 * sweep wrote it yet (registry/rotation.ts).
 */
const pastGrace = sql`(${certificates.status} = 'superseded' and ${certificates.graceUntil} <= now())`;
export const certificateSummaryColumns = {
  serial: certificates.serial,
  subjectKind: certificates.subjectKind,
  subjectId: certificates.subjectId,
  issuerCa: certificates.issuerCa,
  fingerprintSha256: certificates.fingerprintSha256,
  spkiSha256: certificates.spkiSha256,
  notBefore: certificates.notBefore,
  notAfter: certificates.notAfter,
  status: sql<CertificateStatus>`case when ${pastGrace} then 'revoked' else ${certificates.status} end`.as(
    'status',
  ),
  revocationReason:
    sql<RevocationReason | null>`case when ${pastGrace} then 'superseded' else ${certificates.revocationReason} end`.as(
      'revocation_reason',
    ),
  revokedAt:
    sql<Date | null>`case when ${pastGrace} then ${certificates.graceUntil} else ${certificates.revokedAt} end`
      .mapWith(certificates.revokedAt)
      .as('revoked_at'),
  supersededBy: certificates.supersededBy,
  graceUntil: certificates.graceUntil,
  createdAt: certificates.createdAt,
  enrolledBy: certificates.enrolledBy,
};
