/**
 * Who is connecting, decided once per connection at CONNECT: the identity comes from the verified peer
 * certificate (never from the CONNECT username or client id), and must be a device or service, match the
 * client id, be active in the registry, and not hold a revoked certificate. Every refusal has a reason
 * that is logged and counted; the client only sees CONNACK 5.
 */
import type { TLSSocket } from 'node:tls';
import type { Identity } from '../pki/ids.ts';
import type { CheckResult } from './client-verify.ts';
import type { AuthFailureReason } from './metrics.ts';
import type { BrokerRegistry, SubjectInfo } from './registry.ts';
import type { RevocationState } from './revocation.ts';

export const MQTT_KINDS: ReadonlySet<string> = new Set(['device', 'service']);

export class ConnectRefused extends Error {
  constructor(
    readonly reason: AuthFailureReason,
    readonly detail?: string,
  ) {
    super(reason);
    this.name = 'ConnectRefused';
  }
}

/** What the TLS layer decided about a connection's peer certificate (client-verify.ts), kept on the socket. */
export const PEER = Symbol('fleet.peer');
export type PeerVerdict = Extract<CheckResult, { ok: true }>;

/**
 * The identity of a TLS connection, as the TLS layer read it from the verified peer certificate (once per
 * distinct certificate, see client-verify.ts). The certificate's validity was checked against the clock
 * when this connection's handshake completed, resumed or not.
 */
export function identityOfSocket(sock: TLSSocket & { [PEER]?: PeerVerdict }): Identity {
  const peer = sock[PEER];
  if (!peer) throw new ConnectRefused('not_authorized_tls', String(sock.authorizationError));
  if (peer.identityError) throw new ConnectRefused('certificate_invalid', peer.identityError.code);
  if (!peer.identity) throw new ConnectRefused('no_certificate');
  return peer.identity;
}

/** Checks that need no I/O: kind, client id, revoked set. */
export function checkIdentity(identity: Identity, clientId: string, revocation: RevocationState): void {
  if (!MQTT_KINDS.has(identity.kind)) throw new ConnectRefused('kind_not_allowed', identity.kind);
  if (clientId !== identity.id) throw new ConnectRefused('client_id_mismatch');
  const refused = revocation.check(identity);
  if (refused) throw new ConnectRefused(refused);
}

/**
 * Registry attributes (fleet, product, role) per identity, cached: they do not change over a device's
 * life, and the status that does change is held current by the revoked set, not by this cache. Unknown
 * identities are not cached, so a device recorded a moment ago is found on its next try.
 */
export class SubjectCache {
  private readonly map = new Map<string, SubjectInfo>();
  private readonly inflight = new Map<string, Promise<SubjectInfo | undefined>>();

  constructor(
    private readonly registry: Pick<BrokerRegistry, 'lookup'>,
    private readonly max = 200_000,
  ) {}

  /** Cached attributes, or undefined when a lookup is needed. Sync so the common path allocates nothing. */
  peek(identity: Identity): SubjectInfo | undefined {
    return this.map.get(`${identity.kind}:${identity.id}`);
  }

  get(identity: Identity): Promise<SubjectInfo | undefined> {
    const k = `${identity.kind}:${identity.id}`;
    const hit = this.map.get(k);
    if (hit) return Promise.resolve(hit);
    let p = this.inflight.get(k);
    if (!p) {
      p = this.registry.lookup(identity.kind, identity.id).then(
        (info) => {
          this.inflight.delete(k);
          // Only active records are cached: a suspended one may be reactivated, and status changes
          // reach us through the revoked set, which the cache must never contradict.
          if (info && info.status === 'active') {
            if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value!);
            this.map.set(k, info);
          }
          return info;
        },
        (err) => {
          this.inflight.delete(k);
          throw err;
        },
      );
      this.inflight.set(k, p);
    }
    return p;
  }

  /**
   * Fills the cache from a registry listing (at start). Attributes only: whether a subject may connect is
   * decided by the revoked set before the cache is consulted, so an entry read just before a revocation
   * admits nobody.
   */
  prime(infos: readonly SubjectInfo[]): void {
    for (const info of infos) {
      if (info.status !== 'active' || this.map.size >= this.max) continue;
      this.map.set(`${info.kind}:${info.id}`, info);
    }
  }

  get size(): number {
    return this.map.size;
  }

  /** The registry said this subject is not active: forget it so its next connect asks again. */
  forget(kind: string, id: string): void {
    this.map.delete(`${kind}:${id}`);
  }
}

/** Checks a registry record: it must exist and be active. */
export function checkSubject(info: SubjectInfo | undefined): SubjectInfo {
  if (!info) throw new ConnectRefused('unknown_identity');
  if (info.status !== 'active') throw new ConnectRefused(info.status === 'revoked' ? 'revoked' : 'suspended');
  return info;
}
