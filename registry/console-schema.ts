/**
 * Tables the operator console needs beside the core schema (schema.ts): its sign-in links and sessions,
 * presence history, and counters kept by triggers so the overview never counts a whole table.
 * Migrations come from both files (drizzle.config.ts); the triggers are in 0003_console_triggers.sql.
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  check,
  index,
  integer,
  pgTable,
  primaryKey,
  text,
  timestamp,
} from 'drizzle-orm/pg-core';
import { SUBJECT_KINDS } from './schema.ts';

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const kinds = sql.raw(SUBJECT_KINDS.map((k) => `'${k}'`).join(', '));

/**
 * Counters kept by statement-level triggers (0003): `devices.<status>` (devices by status) and
 * `presence.<kind>.connected` (subjects connected now). A counter is the sum of its shards; a writer adds
 * to the shard of its backend (pg_backend_pid() % 16), so concurrent writers rarely wait on one row.
 */
export const counters = pgTable(
  'counters',
  {
    key: text('key').notNull(),
    shard: integer('shard').notNull(),
    n: bigint('n', { mode: 'number' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.key, t.shard] })],
);

/**
 * One row per connection as the broker recorded it (written by a trigger on `presence`, so every broker
 * node's batches land here): where and since when, and when it ended. Pruned by age (registry/console.ts).
 */
export const presenceHistory = pgTable(
  'presence_history',
  {
    seq: bigserial('seq', { mode: 'number' }).primaryKey(),
    kind: text('kind', { enum: SUBJECT_KINDS }).notNull(),
    id: text('id').notNull(),
    brokerNode: text('broker_node'),
    remoteAddress: text('remote_address'),
    connectedAt: tz('connected_at').notNull(),
    disconnectedAt: tz('disconnected_at'),
  },
  (t) => [
    check('presence_history_kind_check', sql`${t.kind} in (${kinds})`),
    index('presence_history_subject_idx').on(t.kind, t.id, t.connectedAt),
    index('presence_history_connected_at_idx').on(t.connectedAt),
  ],
);

/** One-time sign-in links (`fleet console`): only the SHA-256 of the token is kept. */
export const consoleLinks = pgTable(
  'console_links',
  {
    tokenSha256: text('token_sha256').primaryKey(),
    /** The operator id the link signs in as (the identity that asked for it). */
    operator: text('operator').notNull(),
    createdAt: tz('created_at').notNull().defaultNow(),
    expiresAt: tz('expires_at').notNull(),
    usedAt: tz('used_at'),
  },
  (t) => [
    check('console_links_token_check', sql`${t.tokenSha256} ~ '^[0-9a-f]{64}$'`),
    index('console_links_expires_idx').on(t.expiresAt),
  ],
);

/** Console sessions: the cookie's SHA-256 is the key; the CSRF token is per session. */
export const consoleSessions = pgTable(
  'console_sessions',
  {
    idSha256: text('id_sha256').primaryKey(),
    operator: text('operator').notNull(),
    csrf: text('csrf').notNull(),
    createdAt: tz('created_at').notNull().defaultNow(),
    /** Absolute end, whatever the activity. */
    expiresAt: tz('expires_at').notNull(),
    /** Refreshed at most once a minute; the idle timeout counts from it. */
    lastSeenAt: tz('last_seen_at').notNull().defaultNow(),
    revokedAt: tz('revoked_at'),
    /** `<kind>:<id>` of who ended it (the operator signing out, another operator, the CLI). */
    revokedBy: text('revoked_by'),
    address: text('address'),
    userAgent: text('user_agent'),
  },
  (t) => [
    check('console_sessions_id_check', sql`${t.idSha256} ~ '^[0-9a-f]{64}$'`),
    index('console_sessions_operator_idx').on(t.operator, t.createdAt),
    index('console_sessions_expires_idx').on(t.expiresAt),
  ],
);

export type ConsoleLinkRow = typeof consoleLinks.$inferSelect;
export type ConsoleSessionRow = typeof consoleSessions.$inferSelect;
export type PresenceHistoryRow = typeof presenceHistory.$inferSelect;
