/**
 * The audit log: append-only rows of who did what to whom. Every place that appends (issuing, status
 * changes, principals, refusals recorded by provisioning) goes through the one writer, `writeAudit`.
 */
import { and, desc, eq, gte, lt, lte, type SQL, sql } from 'drizzle-orm';
import type { Db } from './db.ts';
import { type AuditRow, auditLog } from './schema.ts';
import { BULK_CHUNK, chunks, exec, page, textArray } from './sql.ts';
import type { AuditFilter, NewAuditEntry, Page } from './types.ts';
import { assertDate, checkAuditEntry, checkLimit, invalid } from './validation.ts';

/** `<kind>:<id>`, the form actors and subjects take in the audit log. Ids never contain ':'. */
export function ref(kind: string, id: string): string {
  return `${kind}:${id}`;
}

/**
 * The one audit writer: appends `entries` in order, in the caller's transaction. One statement of column
 * arrays (unnest) per BULK_CHUNK entries: the parameter count stays constant whatever the batch size, and
 * no large query is built per row. With `returning`, gives back the ids written, in order, else [] (only
 * appendAudit asks: on PGlite a RETURNING measured 0.2 to 0.7 ms more CPU per statement). Callers validate
 * their entries.
 */
export async function writeAudit(
  db: Db,
  entries: readonly NewAuditEntry[],
  opts: { returning?: boolean } = {},
): Promise<number[]> {
  const ids: number[] = [];
  for (const part of chunks([...entries], BULK_CHUNK)) {
    const insert = sql`insert into ${auditLog} (actor, action, subject, outcome, details)
      select * from unnest(${textArray(part.map((e) => e.actor))}::text[], ${textArray(part.map((e) => e.action))}::text[],
        ${textArray(part.map((e) => e.subject ?? null))}::text[], ${textArray(part.map((e) => e.outcome))}::text[],
        ${textArray(part.map((e) => (e.details ? JSON.stringify(e.details) : null)))}::text[]::jsonb[])`;
    if (!opts.returning) {
      await db.execute(insert);
      continue;
    }
    for (const r of await exec(db, sql`${insert} returning id`)) ids.push(Number(r['id']));
  }
  return ids;
}

/** Appends one entry from outside the registry (provisioning's refusals), checked, and returns its row. */
export async function appendAudit(db: Db, entry: NewAuditEntry): Promise<AuditRow> {
  checkAuditEntry(entry);
  const [id] = await writeAudit(db, [entry], { returning: true });
  const [row] = await db.select().from(auditLog).where(eq(auditLog.id, id!));
  return row!;
}

/** Newest first; `cursor` is the id of the last entry of the previous page. */
export async function listAudit(db: Db, filter: AuditFilter): Promise<Page<AuditRow>> {
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
    if (!Number.isSafeInteger(id) || id < 0) throw invalid('cursor is not an audit id', { field: 'cursor' });
    where.push(lt(auditLog.id, id));
  }
  const rows = await db
    .select()
    .from(auditLog)
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(desc(auditLog.id))
    .limit(limit + 1);
  return page(rows, limit, (a) => String(a.id));
}
