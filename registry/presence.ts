/**
 * Presence: whether a subject is connected, since when, from where and to which broker node. Brokers
 * report in batches; a batch is merged per subject and written with one multi-row upsert.
 */
import { and, eq, sql } from 'drizzle-orm';
import { ref } from './audit.ts';
import type { Db } from './db.ts';
import { type PresenceRow, presence, type SubjectKind } from './schema.ts';
import { chunks } from './sql.ts';
import type { PresenceUpdate } from './types.ts';
import { assertId, assertKind, checkPresenceUpdate, invalid } from './validation.ts';

type PresenceInsert = typeof presence.$inferInsert;

/**
 * Records a batch of presence events with ONE multi-row upsert. Order-insensitive: the latest
 * connect/disconnect by time wins, so a late disconnect from the node a device left does not mark it
 * offline after it connected elsewhere.
 */
export async function recordPresence(db: Db, batch: PresenceUpdate[]): Promise<void> {
  if (!Array.isArray(batch)) throw invalid('batch must be an array');
  if (batch.length === 0) return;
  const merged = mergePresence(batch);
  const newerConnect = sql`excluded.connected_at is not null and excluded.connected_at >= coalesce(${presence.connectedAt}, '-infinity'::timestamptz)`;
  for (const part of chunks([...merged.values()])) {
    await db
      .insert(presence)
      .values(part)
      .onConflictDoUpdate({
        target: [presence.kind, presence.id],
        set: {
          // Presence belongs to the node of the latest connect. A device that moved nodes is
          // disconnected by its old node after the new node's connect, and the two nodes' batches
          // arrive in either order: a batch with the latest connect decides for itself, and a
          // disconnect alone ends the presence only when it comes from that node, after that connect.
          connected: sql`case
            when ${newerConnect} then excluded.connected
            when excluded.disconnected_at is not null
              and excluded.disconnected_at >= coalesce(${presence.connectedAt}, '-infinity'::timestamptz)
              and (${presence.brokerNode} is null or excluded.broker_node is null
                or excluded.broker_node = ${presence.brokerNode}) then false
            else ${presence.connected} end`,
          lastSeen: sql`greatest(${presence.lastSeen}, excluded.last_seen)`,
          connectedAt: sql`greatest(${presence.connectedAt}, excluded.connected_at)`,
          disconnectedAt: sql`greatest(${presence.disconnectedAt}, excluded.disconnected_at)`,
          remoteAddress: sql`case when ${newerConnect} then excluded.remote_address else ${presence.remoteAddress} end`,
          brokerNode: sql`case when ${newerConnect} then excluded.broker_node else ${presence.brokerNode} end`,
        },
      });
  }
}

export async function getPresence(db: Db, kind: SubjectKind, id: string): Promise<PresenceRow | undefined> {
  assertKind(kind);
  assertId(id, `${kind} id`);
  const [row] = await db
    .select()
    .from(presence)
    .where(and(eq(presence.kind, kind), eq(presence.id, id)));
  return row;
}

/** One row per subject: the batch's events folded in time order (each update is checked first). */
function mergePresence(batch: PresenceUpdate[]): Map<string, PresenceInsert> {
  const merged = new Map<string, PresenceInsert>();
  for (const u of batch) {
    checkPresenceUpdate(u);
    const key = ref(u.kind, u.id);
    const row = merged.get(key) ?? {
      kind: u.kind,
      id: u.id,
      connected: true,
      lastSeen: u.at,
      remoteAddress: null,
      brokerNode: null,
      connectedAt: null,
      disconnectedAt: null,
    };
    if (u.at > row.lastSeen!) row.lastSeen = u.at;
    if (u.event === 'connect' && (!row.connectedAt || u.at >= row.connectedAt)) {
      row.connectedAt = u.at;
      row.remoteAddress = u.remoteAddress ?? null;
      row.brokerNode = u.brokerNode ?? null;
    }
    if (u.event === 'disconnect' && (!row.disconnectedAt || u.at >= row.disconnectedAt)) {
      row.disconnectedAt = u.at;
      // With no connect in this batch, the node is the disconnecting one: the upsert lets a disconnect
      // end the presence only when it comes from the node that holds the connection.
      if (!row.connectedAt) row.brokerNode = u.brokerNode ?? null;
    }
    if (row.connectedAt || row.disconnectedAt) {
      // Connected if the latest state event was a connect.
      row.connected = !row.disconnectedAt || (!!row.connectedAt && row.connectedAt > row.disconnectedAt);
    }
    merged.set(key, row);
  }
  return merged;
}
