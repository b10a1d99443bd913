/**
 * EXPLAIN of the statements a registry call runs: the call is run once with drizzle's query logger
 * swapped for a recorder, then each recorded statement is explained with its parameters inlined.
 * For the console's benchmark and its query-plan test.
 */
import { sql } from 'drizzle-orm';
import type { Db } from '../../registry/db.ts';

function literal(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (v instanceof Date) return `'${v.toISOString()}'`;
  return `'${String(v).replace(/'/g, "''")}'`;
}

async function rows(db: Db, q: ReturnType<typeof sql.raw>): Promise<Record<string, unknown>[]> {
  const r = (await db.execute(q)) as unknown;
  return (Array.isArray(r) ? r : (r as { rows: Record<string, unknown>[] }).rows) as Record<
    string,
    unknown
  >[];
}

export async function explainCall(db: Db, run: () => Promise<unknown>, analyze = false): Promise<string> {
  const seen: { sql: string; params: unknown[] }[] = [];
  const session = (db as unknown as { session: { logger: unknown } }).session;
  const original = session.logger;
  session.logger = { logQuery: (q: string, params: unknown[]) => seen.push({ sql: q, params }) };
  try {
    await run();
  } finally {
    session.logger = original;
  }
  const lines: string[] = [];
  for (const q of seen) {
    const text = q.sql.replace(/\$(\d+)/g, (_, i) => literal(q.params[Number(i) - 1]));
    const plan = await rows(
      db,
      sql.raw(`explain ${analyze ? '(analyze, costs off, timing on) ' : ''}${text}`),
    );
    for (const r of plan) lines.push(String(Object.values(r)[0]));
  }
  return lines.join('\n');
}
