/**
 * The change feed: status changes as events. On PostgreSQL a trigger NOTIFYs `fleet_status` on commit and
 * the feed LISTENs, so changes written by any process arrive; on PGlite (one process) the registry
 * publishes the rows it wrote after commit. A notification missed while the listening connection was down
 * is not replayed: consumers resync periodically (revokedSet).
 */
import { EventEmitter } from 'node:events';
import type { Connection } from './db.ts';
import { RegistryError } from './errors.ts';
import { type RevocationReason, type StatusChangeRow, SUBJECT_KINDS, type SubjectKind } from './schema.ts';
import type { ChangeEvent, ChangeListener, RegistryLogger } from './types.ts';

export class ChangeFeed {
  private readonly emitter = new EventEmitter();
  private unlisten: (() => Promise<void>) | undefined;
  private listening: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly conn: Connection,
    private readonly log: RegistryLogger,
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** Adds a listener; on PostgreSQL resolves once LISTEN is in place. Resolves with the unsubscribe. */
  async subscribe(listener: ChangeListener): Promise<() => Promise<void>> {
    if (this.closed) throw new RegistryError('REGISTRY_CLOSED', 'the registry is closed');
    this.emitter.on('change', listener);
    if (this.conn.driver === 'postgres') {
      try {
        await this.startListening();
      } catch (e) {
        this.emitter.off('change', listener);
        throw e;
      }
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      this.emitter.off('change', listener);
      if (this.emitter.listenerCount('change') === 0) await this.stopListening();
    };
  }

  /** On PGlite, the in-process feed of rows just committed (PostgreSQL delivers through NOTIFY instead). */
  publish(rows: StatusChangeRow[]): void {
    if (this.conn.driver !== 'pglite') return;
    for (const r of rows) {
      this.emit({
        seq: r.seq,
        kind: r.kind,
        id: r.id,
        ...(r.serial ? { serial: r.serial } : {}),
        status: r.status,
        ...(r.reason ? { reason: r.reason } : {}),
        ...(r.graceUntil ? { graceUntil: r.graceUntil } : {}),
      });
    }
  }

  /** Stops listening and drops every listener; the connection is the registry's to close. */
  async close(): Promise<void> {
    await this.stopListening();
    this.closed = true;
    this.emitter.removeAllListeners();
  }

  private startListening(): Promise<void> {
    if (this.conn.driver !== 'postgres') return Promise.resolve();
    if (this.listening) return this.listening;
    const sqlClient = this.conn.sql;
    this.listening = sqlClient
      .listen(
        'fleet_status',
        (payload) => {
          const event = parseChange(payload);
          if (!event) {
            this.log.warn(
              { event: 'registry_change_payload_invalid', payload },
              'ignored a malformed notification',
            );
            return;
          }
          this.emit(event);
        },
        () => this.log.debug({ event: 'registry_change_feed_listening' }),
      )
      .then((meta) => {
        this.unlisten = meta.unlisten;
      })
      .catch((e) => {
        this.listening = undefined;
        throw e;
      });
    return this.listening;
  }

  private async stopListening(): Promise<void> {
    const pending = this.listening;
    this.listening = undefined;
    if (!pending) return;
    await pending.catch(() => {});
    const unlisten = this.unlisten;
    this.unlisten = undefined;
    if (unlisten && !this.closed) await unlisten().catch(() => {});
  }

  private emit(event: ChangeEvent): void {
    for (const listener of this.emitter.listeners('change') as ChangeListener[]) {
      try {
        listener(event);
      } catch (e) {
        this.log.error({ event: 'registry_change_listener_failed', err: e }, 'a change listener threw');
      }
    }
  }
}

/** The JSON payload of NOTIFY fleet_status (see the migrations' trigger); undefined when malformed. */
function parseChange(payload: string): ChangeEvent | undefined {
  try {
    const p = JSON.parse(payload) as Record<string, unknown>;
    const seq = Number(p['seq']);
    if (!Number.isSafeInteger(seq) || !SUBJECT_KINDS.includes(p['kind'] as SubjectKind)) return undefined;
    if (typeof p['id'] !== 'string' || typeof p['status'] !== 'string') return undefined;
    return {
      seq,
      kind: p['kind'] as SubjectKind,
      id: p['id'],
      ...(typeof p['serial'] === 'string' ? { serial: p['serial'] } : {}),
      status: p['status'] as ChangeEvent['status'],
      ...(typeof p['reason'] === 'string' ? { reason: p['reason'] as RevocationReason } : {}),
      ...(typeof p['grace_until'] === 'string' && !Number.isNaN(Date.parse(p['grace_until']))
        ? { graceUntil: new Date(p['grace_until']) }
        : {}),
    };
  } catch {
    return undefined;
  }
}
