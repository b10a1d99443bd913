/**
 * Applies the committed drizzle-kit migrations (registry/migrations/) on open, the same way on PGlite and
 * PostgreSQL: each pending file in its own transaction, recorded in `fleet_schema_migrations`, under a
 * transaction-scoped advisory lock so two processes starting at once against one PostgreSQL do not race.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'drizzle-orm';
import { pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import type { Db } from './db.ts';
import { RegistryError } from './errors.ts';

const MIGRATIONS_DIR = new URL('./migrations/', import.meta.url);
/** Arbitrary constant naming the advisory lock that serialises migrations. */
const MIGRATION_LOCK_KEY = 0x466c656574; // "Fleet"

const applied = pgTable('fleet_schema_migrations', {
  tag: text('tag').primaryKey(),
  sha256: text('sha256').notNull(),
  appliedAt: timestamp('applied_at', { withTimezone: true }).notNull().defaultNow(),
});

interface Journal {
  entries: { idx: number; tag: string }[];
}

export interface Migration {
  tag: string;
  sha256: string;
  statements: string[];
}

export function loadMigrations(): Migration[] {
  const journal = JSON.parse(readFileSync(new URL('meta/_journal.json', MIGRATIONS_DIR), 'utf8')) as Journal;
  return [...journal.entries]
    .sort((a, b) => a.idx - b.idx)
    .map(({ tag }) => {
      const text = readFileSync(new URL(`${tag}.sql`, MIGRATIONS_DIR), 'utf8');
      return {
        tag,
        sha256: createHash('sha256').update(text).digest('hex'),
        statements: text
          .split('--> statement-breakpoint')
          .map((s) => s.trim())
          .filter((s) => s.length > 0),
      };
    });
}

/** Returns the tags it applied. */
export async function migrate(db: Db): Promise<string[]> {
  const migrations = loadMigrations();
  await db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await tx.execute(sql`create table if not exists fleet_schema_migrations (
      tag text primary key, sha256 text not null, applied_at timestamptz not null default now())`);
  });
  const done: string[] = [];
  for (const m of migrations) {
    try {
      await db.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
        const seen = await tx.select().from(applied).where(sql`${applied.tag} = ${m.tag}`);
        if (seen.length > 0) return;
        for (const statement of m.statements) await tx.execute(sql.raw(statement));
        await tx.insert(applied).values({ tag: m.tag, sha256: m.sha256 });
        done.push(m.tag);
      });
    } catch (e) {
      throw new RegistryError('REGISTRY_MIGRATION_FAILED', `registry migration ${m.tag} failed`, {
        cause: e,
      });
    }
  }
  return done;
}
