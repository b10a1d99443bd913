/**
 * Live revocation: the broker's in-memory view of who may not connect (the revoked set), kept current from
 * the registry's change feed and replaced by a periodic full resync, and the closing of live sessions a
 * change refuses.
 *
 * The revoked set holds every subject that is not active, and every revoked certificate serial, at a
 * generation (the registry's max change seq). Loaded at start, kept current from the change feed, and
 * replaced by a periodic full resync as a safety net against lost notifications. Checked on every CONNECT
 * (authenticate.ts), so a TLS session resumed from a ticket cannot slip past (nothing is re-verified on
 * resumption).
 *
 * Rotation (registry/rotation.ts): a superseded certificate is admitted until its deadline, which the feed
 * and the snapshot carry, so every node refuses it at CONNECT once the deadline passed, whatever the sweep
 * did. When a subject's active certificate connects while it has certificates in grace, they are retired
 * here at once (refused, their live sessions on this node closed) and the registry is told, whose feed
 * retires them on every other node.
 */
import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { Identity, IdentityKind } from '../pki/ids.ts';
import type { BrokerMetrics } from './metrics.ts';
import type { BrokerRegistry, RevokedSnapshot, StatusChange, SubjectStatus } from './registry.ts';
import { type SessionTable, sessionOf } from './sessions.ts';
import type { SubjectCache } from './subject-cache.ts';

export type RefusalStatus = 'suspended' | 'revoked' | 'certificate_revoked' | 'certificate_superseded';

const key = (kind: IdentityKind, id: string) => `${kind}:${id}`;

/** What a change means for live connections: which subject or certificate must be dropped now. */
export interface Effect {
  readonly subject?: string;
  readonly serial?: string;
  /** The serial was retired by the rotation rule (reason superseded). */
  readonly retired?: boolean;
}

export class RevocationState {
  private subjects = new Map<string, Exclude<SubjectStatus, 'active'>>();
  private serials = new Set<string>();
  /** Serials retired by the rotation rule (a subset of `serials`): refused as superseded. */
  private retired = new Set<string>();
  /** Superseded certificates in their grace period: serial -> subject and deadline (ms; Infinity = none). */
  private grace = new Map<string, { subject: string; until: number }>();
  /** The serials in grace per subject `kind:id`: its active certificate's first connect retires them. */
  private graceBySubject = new Map<string, Set<string>>();
  /** Per-subject (or per-serial) last applied change seq: feed notifications may arrive late or twice. */
  private readonly lastSeq = new Map<string, number>();
  generation = -1;

  get size(): { subjects: number; serials: number } {
    return { subjects: this.subjects.size, serials: this.serials.size };
  }

  /** Why this identity may not connect, or undefined when it may. */
  check(identity: Pick<Identity, 'kind' | 'id' | 'serial'>, now = Date.now()): RefusalStatus | undefined {
    if (this.serials.size > 0 && this.serials.has(identity.serial)) {
      return this.retired.has(identity.serial) ? 'certificate_superseded' : 'certificate_revoked';
    }
    if (this.grace.size > 0) {
      const g = this.grace.get(identity.serial);
      if (g && g.until <= now) return 'certificate_superseded';
    }
    if (this.subjects.size === 0) return undefined;
    return this.subjects.get(key(identity.kind, identity.id));
  }

  /**
   * The serials `identity`'s subject still has in grace when `identity` is not one of them (its active
   * certificate connecting): retired here at once, and returned so the caller closes their sessions and
   * tells the registry. [] otherwise (the common case costs one map lookup).
   */
  successorAdmitted(identity: Pick<Identity, 'kind' | 'id' | 'serial'>): string[] {
    if (this.graceBySubject.size === 0) return [];
    const k = key(identity.kind, identity.id);
    const pending = this.graceBySubject.get(k);
    if (!pending || pending.has(identity.serial)) return [];
    const out = [...pending];
    for (const serial of out) this.retire(serial);
    return out;
  }

  private addGrace(serial: string, subject: string, until: number): void {
    this.grace.set(serial, { subject, until });
    const set = this.graceBySubject.get(subject) ?? new Set<string>();
    set.add(serial);
    this.graceBySubject.set(subject, set);
  }

  private dropGrace(serial: string): void {
    const g = this.grace.get(serial);
    if (!g) return;
    this.grace.delete(serial);
    const set = this.graceBySubject.get(g.subject);
    set?.delete(serial);
    if (set?.size === 0) this.graceBySubject.delete(g.subject);
  }

  private retire(serial: string): void {
    this.dropGrace(serial);
    this.serials.add(serial);
    this.retired.add(serial);
  }

  /**
   * Replaces the whole set with a snapshot. A snapshot older than what the feed already delivered is
   * ignored (returns false): it was read before a change we have applied.
   */
  replace(s: RevokedSnapshot): boolean {
    if (s.generation < this.generation) return false;
    const subjects = new Map<string, Exclude<SubjectStatus, 'active'>>();
    for (const x of s.subjects) if (x.status !== 'active') subjects.set(key(x.kind, x.id), x.status);
    this.subjects = subjects;
    this.serials = new Set(s.serials);
    this.retired = new Set(s.retired ?? []);
    this.grace = new Map();
    this.graceBySubject = new Map();
    for (const g of s.grace ?? []) {
      if (this.serials.has(g.serial)) continue;
      this.addGrace(g.serial, key(g.kind, g.id), g.graceUntil ? g.graceUntil.getTime() : Infinity);
    }
    this.generation = s.generation;
    return true;
  }

  /** Applies one feed entry. Returns what live connections it affects, or undefined (nothing to drop). */
  apply(c: StatusChange): Effect | undefined {
    if (c.seq > this.generation) this.generation = c.seq;
    if (c.serial) {
      // A single certificate changed: superseded (usable until its deadline, registry/rotation.ts), or
      // revoked (retired by rotation when the reason is superseded).
      const k = `serial:${c.serial}`;
      if ((this.lastSeq.get(k) ?? -1) >= c.seq) return undefined;
      this.lastSeq.set(k, c.seq);
      if (c.status === 'superseded') {
        if (!this.serials.has(c.serial)) {
          this.addGrace(c.serial, key(c.kind, c.id), c.graceUntil ? c.graceUntil.getTime() : Infinity);
        }
        return undefined;
      }
      if (c.status !== 'revoked') return undefined;
      if (c.reason === 'superseded') this.retire(c.serial);
      else {
        this.dropGrace(c.serial);
        this.serials.add(c.serial);
      }
      return { serial: c.serial, retired: c.reason === 'superseded' };
    }
    const k = key(c.kind, c.id);
    if ((this.lastSeq.get(k) ?? -1) >= c.seq) return undefined;
    this.lastSeq.set(k, c.seq);
    if (c.status === 'active') {
      // Revoked is final: the registry refuses revoked → active, and so do we.
      if (this.subjects.get(k) !== 'revoked') this.subjects.delete(k);
      return undefined;
    }
    if (c.status !== 'suspended' && c.status !== 'revoked') return undefined;
    this.subjects.set(k, c.status);
    return { subject: k };
  }
}

export const subjectKey = key;

// ------------------------------------------------------------------------------------------ live sessions

export interface LiveRevocationDeps {
  readonly registry: Pick<BrokerRegistry, 'onChange' | 'revokedSet' | 'retireSuperseded'>;
  /** This node's id: the actor of the retirements it reports (`broker:<node>`). */
  readonly nodeId?: string | undefined;
  readonly revoked: RevocationState;
  /** Attributes of a subject that is no longer active are forgotten, so its next connect asks again. */
  readonly subjects: Pick<SubjectCache, 'forget'>;
  readonly sessions: SessionTable;
  readonly resyncMs: number;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
}

/** Follows the change feed and the periodic resync, and closes the live sessions a change refuses. */
export class LiveRevocation {
  private unsubscribe: (() => unknown) | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly d: LiveRevocationDeps) {}

  /** Subscribes to the change feed, then loads the revoked set. */
  async start(): Promise<void> {
    const { registry, revoked, metrics } = this.d;
    // Subscribe before loading, so nothing between the snapshot and the subscription is lost.
    this.unsubscribe = await registry.onChange(this.onChange);
    const snap = await registry.revokedSet();
    revoked.replace(snap);
    metrics.revocationGeneration.set(revoked.generation);
  }

  /** Starts the periodic full resync (the safety net against lost notifications). */
  startResync(): void {
    this.resyncTimer = setInterval(() => void this.resync(), this.d.resyncMs);
    this.resyncTimer.unref();
  }

  /** Unsubscribes from the change feed. */
  async unsubscribeFeed(): Promise<void> {
    await this.unsubscribe?.();
  }

  stopResync(): void {
    clearInterval(this.resyncTimer);
  }

  /** Reloads the revoked set from the registry now and closes live sessions it refuses. */
  async resync(): Promise<void> {
    const { registry, revoked, sessions, metrics, log } = this.d;
    try {
      const snap = await registry.revokedSet();
      const arrived = performance.now();
      if (revoked.replace(snap)) {
        metrics.revocationGeneration.set(revoked.generation);
        for (const c of [...sessions.bySubject.values()]) {
          const s = sessionOf(c);
          const why = s && revoked.check(s.identity);
          if (why) this.kick(c, why, { arrived });
        }
      }
      metrics.revocationResyncs.inc({ outcome: 'ok' });
    } catch (err) {
      metrics.revocationResyncs.inc({ outcome: 'failed' });
      log.error({ event: 'revocation_resync_failed', err }, 'revoked set resync failed');
    }
  }

  private readonly onChange = (change: StatusChange) => {
    const { revoked, metrics, log } = this.d;
    const arrived = performance.now();
    try {
      const e = revoked.apply(change);
      metrics.revocationGeneration.set(revoked.generation);
      if (e) this.applyEffect(e, change, arrived);
    } catch (err) {
      log.error({ event: 'revocation_change_failed', err }, 'applying a status change failed');
    }
  };

  private applyEffect(e: Effect, change: StatusChange, arrived: number): void {
    const { sessions, subjects } = this.d;
    const since = { at: change.at, arrived };
    if (e.subject) {
      const c = sessions.subject(e.subject);
      if (c) this.kick(c, change.status, since);
      subjects.forget(change.kind, change.id);
    }
    if (e.serial) {
      const c = sessions.serial(e.serial);
      if (c) this.kick(c, e.retired ? 'certificate_superseded' : 'certificate_revoked', since);
    }
  }

  /**
   * A connection was admitted: when it is its subject's active certificate and the subject still has
   * certificates in grace, they are retired now (the rotation rule): refused from here on, their live
   * sessions on this node closed, and the registry told so that its feed retires them on every node.
   */
  admitted(identity: Identity): void {
    const { revoked, sessions, registry, log } = this.d;
    const retired = revoked.successorAdmitted(identity);
    if (retired.length === 0) return;
    const arrived = performance.now();
    for (const serial of retired) {
      const c = sessions.serial(serial);
      if (c) this.kick(c, 'certificate_superseded', { arrived });
    }
    log.info({
      event: 'certificate_rotation_completed',
      kind: identity.kind,
      id: identity.id,
      serial: identity.serial,
      retired,
    });
    const actor = `broker:${this.d.nodeId ?? 'node'}`;
    registry.retireSuperseded?.(identity.kind, identity.id, identity.serial, actor).catch((err) =>
      // This node refuses them already; the others do when the grace ends (the deadline is in the feed).
      log.error(
        { event: 'certificate_retire_failed', err, kind: identity.kind, id: identity.id, retired },
        'could not record the retirement of superseded certificates',
      ),
    );
  }

  /** Closes a live session for revocation; its will is not published (authorize.ts). */
  private kick(client: Client, why: string, since: { at?: Date | undefined; arrived: number }): void {
    const { metrics, log } = this.d;
    const s = sessionOf(client);
    if (!s || s.kicked || client.closed) return;
    s.kicked = true;
    metrics.revocationKicks.inc();
    client.close(() => {
      const seconds = since.at
        ? Math.max(0, (Date.now() - since.at.getTime()) / 1000)
        : (performance.now() - since.arrived) / 1000;
      metrics.revocationLatency.observe(seconds);
      log.warn(
        {
          event: 'revocation_kick',
          reason: why,
          kind: s.identity.kind,
          id: s.identity.id,
          serial: s.identity.serial,
          close_ms: seconds * 1000,
        },
        'live connection closed: revoked, suspended or superseded',
      );
    });
  }
}
