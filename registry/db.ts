/**
 * The two drivers behind one drizzle type: postgres.js (a pool) when a DATABASE_URL is given, PGlite
 * (embedded, one connection) otherwise.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { ExtractTablesWithRelations } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from './schema.ts';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
export type Tx = PgTransaction<PgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>;

export interface PostgresConnection {
  driver: 'postgres';
  db: Db;
  sql: postgres.Sql;
  close(): Promise<void>;
}

export interface PgliteConnection {
  driver: 'pglite';
  db: Db;
  client: PGlite;
  close(): Promise<void>;
}

export type Connection = PostgresConnection | PgliteConnection;

export function connectPostgres(databaseUrl: string, poolSize = 10): PostgresConnection {
  const sql = postgres(databaseUrl, {
    max: poolSize,
    onnotice: () => {},
    // Timestamps come back as Date, bigint counts as number-safe strings handled by drizzle.
    connection: { application_name: 'fleet-registry', TimeZone: 'UTC' },
  });
  const db = drizzlePostgres(sql, { schema }) as unknown as Db;
  return { driver: 'postgres', db, sql, close: () => sql.end({ timeout: 5 }) };
}

/** dataDir undefined = in memory (tests). */
export async function connectPglite(dataDir?: string): Promise<PgliteConnection> {
  let client: PGlite;
  if (dataDir === undefined) {
    client = await PGlite.create();
  } else {
    const dir = join(dataDir, 'registry');
    mkdirSync(dir, { recursive: true });
    client = await PGlite.create(dir);
  }
  await client.exec(`set timezone to 'UTC'`);
  const db = drizzlePglite(client, { schema }) as unknown as Db;
  return { driver: 'pglite', db, client, close: () => client.close() };
}
