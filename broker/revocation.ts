/**
 * The broker's in-memory view of who may not connect: every subject that is not active, and every revoked
 * certificate serial, at a generation (the registry's max change seq). Loaded at start, kept current from
 * the change feed, and replaced by a periodic full resync as a safety net against lost notifications.
 * Checked on every CONNECT, so a TLS session resumed from a ticket cannot slip past (nothing is
 * re-verified on resumption).
 */
import type { Identity, IdentityKind } from '../pki/ids.ts';
import type { RevokedSnapshot, StatusChange, SubjectStatus } from './registry.ts';

export type RefusalStatus = 'suspended' | 'revoked' | 'certificate_revoked';

const key = (kind: IdentityKind, id: string) => `${kind}:${id}`;

/** What a change means for live connections: which subject or certificate must be dropped now. */
export interface Effect {
  readonly subject?: string;
  readonly serial?: string;
}

export class RevocationState {
  private subjects = new Map<string, Exclude<SubjectStatus, 'active'>>();
  private serials = new Set<string>();
  /** Per-subject (or per-serial) last applied change seq: feed notifications may arrive late or twice. */
  private readonly lastSeq = new Map<string, number>();
  generation = -1;

  get size(): { subjects: number; serials: number } {
    return { subjects: this.subjects.size, serials: this.serials.size };
  }

  /** Why this identity may not connect, or undefined when it may. */
  check(identity: Pick<Identity, 'kind' | 'id' | 'serial'>): RefusalStatus | undefined {
    if (this.serials.size > 0 && this.serials.has(identity.serial)) return 'certificate_revoked';
    if (this.subjects.size === 0) return undefined;
    return this.subjects.get(key(identity.kind, identity.id));
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
    this.generation = s.generation;
    return true;
  }

  /** Applies one feed entry. Returns what live connections it affects, or undefined (nothing to drop). */
  apply(c: StatusChange): Effect | undefined {
    if (c.seq > this.generation) this.generation = c.seq;
    if (c.serial) {
      // A single certificate changed: only `revoked` matters to us (superseded certificates stay usable
      // until they expire; the registry decides that by revoking them).
      const k = `serial:${c.serial}`;
      if ((this.lastSeq.get(k) ?? -1) >= c.seq) return undefined;
      this.lastSeq.set(k, c.seq);
      if (c.status !== 'revoked') return undefined;
      this.serials.add(c.serial);
      return { serial: c.serial };
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
