/**
 * What the broker needs from the registry, and nothing more. The broker codes against this small
 * interface; `fromRegistry()` adapts the real registry (registry/) to it, so tests and benchmarks run
 * against the real thing (PGlite in-process, PostgreSQL when DATABASE_URL is set).
 */
import type { IdentityKind } from '../pki/ids.ts';
import type { Registry } from '../registry/index.ts';

export type SubjectStatus = 'active' | 'suspended' | 'revoked';

/** A subject's registry record, as far as MQTT cares: its status and its policy placeholders. */
export interface SubjectInfo {
  readonly kind: IdentityKind;
  readonly id: string;
  readonly status: SubjectStatus;
  readonly fleet?: string | undefined;
  readonly product?: string | undefined;
  readonly role?: string | undefined;
}

/** Everything not active, plus revoked certificate serials, at one generation (max change seq). */
export interface RevokedSnapshot {
  readonly generation: number;
  readonly subjects: readonly { kind: IdentityKind; id: string; status: SubjectStatus }[];
  /** Canonical lowercase hex. */
  readonly serials: readonly string[];
  /** The serials above retired by the rotation rule (reason superseded): refused as superseded. */
  readonly retired?: readonly string[] | undefined;
  /** Superseded certificates in their grace period, with their deadline (registry/rotation.ts). */
  readonly grace?:
    | readonly { kind: IdentityKind; id: string; serial: string; graceUntil: Date | null }[]
    | undefined;
}

/** One entry of the change feed. `serial` is set when a single certificate changed. */
export interface StatusChange {
  readonly seq: number;
  readonly kind: IdentityKind;
  readonly id: string;
  readonly serial?: string | null | undefined;
  readonly status: string;
  /** A revocation's RFC 5280 reason (superseded: retired by the rotation rule). */
  readonly reason?: string | null | undefined;
  /** With status superseded: the certificate is usable until then. */
  readonly graceUntil?: Date | null | undefined;
  /** When the change was committed, if the feed says; revoke-to-close latency is measured from it. */
  readonly at?: Date | undefined;
}

export interface PresenceRecord {
  readonly kind: IdentityKind;
  readonly id: string;
  /** connect and disconnect change the state; seen only moves last_seen. */
  readonly event: 'connect' | 'disconnect' | 'seen';
  readonly at: Date;
  readonly remoteAddress?: string | undefined;
  readonly brokerNode: string;
}

export interface BrokerRegistry {
  lookup(kind: IdentityKind, id: string): Promise<SubjectInfo | undefined>;
  /**
   * Every active device and service, page by page: warms the subject cache at start, so a reconnect
   * storm after a restart does not ask the registry once per device. Optional.
   */
  activeSubjects?(): AsyncIterable<readonly SubjectInfo[]>;
  revokedSet(): Promise<RevokedSnapshot>;
  /** Subscribes to the change feed (once listening); resolves with the unsubscribe function. */
  onChange(listener: (change: StatusChange) => void): Promise<() => unknown>;
  recordPresence(batch: readonly PresenceRecord[]): Promise<void>;
  /**
   * The certificate `serial` of `kind:id` connected: the registry retires the certificates it superseded
   * (the rotation rule, registry/rotation.ts) and the change feed tells every node. Optional: a registry
   * without it leaves retirement to the grace deadline.
   */
  retireSuperseded?(kind: IdentityKind, id: string, serial: string, actor: string): Promise<unknown>;
}

/** Adapts the real registry (registry/) to what the broker needs. */
export function fromRegistry(r: Registry): BrokerRegistry {
  return {
    async lookup(kind, id) {
      if (kind === 'device') {
        const d = await r.getDeviceRow(id);
        return d && { kind, id, status: d.status, fleet: d.fleet, product: d.product };
      }
      const p = await r.getPrincipal(kind, id);
      return p && { kind, id, status: p.status, role: p.role ?? undefined };
    },
    async *activeSubjects() {
      let cursor: string | undefined;
      do {
        const page = await r.listDevices({ status: 'active', limit: 1000, ...(cursor ? { cursor } : {}) });
        yield page.items.map(
          (d): SubjectInfo => ({
            kind: 'device',
            id: d.id,
            status: d.status,
            fleet: d.fleet,
            product: d.product,
          }),
        );
        cursor = page.nextCursor;
      } while (cursor);
      do {
        const page = await r.listPrincipals({
          kind: 'service',
          status: 'active',
          limit: 1000,
          ...(cursor ? { cursor } : {}),
        });
        yield page.items.map(
          (p): SubjectInfo => ({ kind: 'service', id: p.id, status: p.status, role: p.role ?? undefined }),
        );
        cursor = page.nextCursor;
      } while (cursor);
    },
    revokedSet: () => r.revokedSet(),
    retireSuperseded: (kind, id, serial, actor) => r.retireSuperseded({ kind, id, serial, actor }),
    onChange: (listener) => r.onChange((e) => listener(e)),
    recordPresence: (batch) =>
      r.recordPresence(
        batch.map((b) => ({
          kind: b.kind,
          id: b.id,
          event: b.event,
          at: b.at,
          remoteAddress: b.remoteAddress ?? null,
          brokerNode: b.brokerNode,
        })),
      ),
  };
}
