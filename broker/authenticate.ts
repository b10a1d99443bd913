/**
 * CONNECT: who is connecting, decided once per connection. The identity comes from the peer certificate
 * the TLS layer admitted (tls-admission.ts; never from the CONNECT username or client id), and must be a
 * device or service, match the client id, be active in the registry, and not hold a revoked certificate
 * (the revoked set, live-revocation.ts). Then its policy is bound, its will checked, and its session
 * recorded (sessions.ts). Every refusal has a reason that is logged and counted; the client only sees
 * CONNACK 5 (or 3 when the registry cannot answer, 2 for a keepalive out of bounds).
 *
 * The steps, in the order aedes runs them (handlers/connect.js): preConnect (keepalive bounds), then
 * authenticate: identity -> kind, client id, revoked set -> registry attributes (cached) -> admit.
 * The revoked set refuses revoked, suspended and retired (superseded past the rotation rule) identities;
 * admitting a subject's active certificate completes its rotation (live-revocation.ts admitted()).
 */
import type { TLSSocket } from 'node:tls';
import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { Identity } from '../pki/ids.ts';
import type { Hooks } from './aedes/engine.ts';
import { pendingWill } from './aedes/patches.ts';
import { CONNACK, ConnectRefused, connectRefusal } from './errors.ts';
import { type FlapDetector, WindowCounter } from './limits.ts';
import { type RevocationState, subjectKey } from './live-revocation.ts';
import type { AuthFailureReason, BrokerMetrics } from './metrics.ts';
import { bindPolicy, type Policy } from './policy.ts';
import type { PresenceBatcher } from './presence.ts';
import type { SubjectInfo } from './registry.ts';
import { presenceOf, type Session, type SessionTable, sessionOf } from './sessions.ts';
import type { SubjectCache } from './subject-cache.ts';
import type { PeerSocket } from './tls-admission.ts';
import { PEER } from './tls-admission.ts';

export const MQTT_KINDS: ReadonlySet<string> = new Set(['device', 'service']);

/**
 * The identity of a TLS connection, as the TLS layer read it from the verified peer certificate (once per
 * distinct certificate, see client-verify.ts). The certificate's validity was checked against the clock
 * when this connection's handshake completed, resumed or not.
 */
export function identityOfSocket(sock: PeerSocket): Identity {
  const peer = sock[PEER];
  if (!peer) throw new ConnectRefused('not_authorized_tls', String(sock.authorizationError));
  if (peer.identityError) throw new ConnectRefused('certificate_invalid', peer.identityError.code);
  if (!peer.identity) throw new ConnectRefused('no_certificate');
  return peer.identity;
}

/** Checks that need no I/O: kind, client id, revoked set. */
export function checkIdentity(identity: Identity, clientId: string, revoked: RevocationState): void {
  if (!MQTT_KINDS.has(identity.kind)) throw new ConnectRefused('kind_not_allowed', identity.kind);
  if (clientId !== identity.id) throw new ConnectRefused('client_id_mismatch');
  const refused = revoked.check(identity);
  if (refused) throw new ConnectRefused(refused);
}

/** Checks a registry record: it must exist and be active. */
export function checkSubject(info: SubjectInfo | undefined): SubjectInfo {
  if (!info) throw new ConnectRefused('unknown_identity');
  if (info.status !== 'active') throw new ConnectRefused(info.status === 'revoked' ? 'revoked' : 'suspended');
  return info;
}

// ------------------------------------------------------------------------------------------ the hooks

export interface AuthenticateDeps {
  readonly limits: {
    /** CONNECT keepalive below this is refused; 0 (none) or above max runs with the max as idle limit. */
    readonly keepaliveMinS: number;
    readonly keepaliveMaxS: number;
    /** This many ACL denials within the window disconnects the client (the session's counter). */
    readonly aclDenialLimit: number;
    readonly aclDenialWindowMs: number;
  };
  readonly policy: Policy;
  readonly revoked: RevocationState;
  readonly subjects: SubjectCache;
  readonly sessions: SessionTable;
  readonly presence: Pick<PresenceBatcher, 'connected' | 'disconnected'>;
  readonly flaps: FlapDetector;
  /** The client aedes holds under an id (the one a new connection of that id takes over). */
  readonly liveClient: (id: string) => Client | undefined;
  /** Called once a connection is admitted (live-revocation.ts: a rotation completes on its first connect). */
  readonly admitted?: (identity: Identity) => void;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
}

type Done = (err: (Error & { returnCode: number }) | null, ok: boolean | null) => void;

const KEEPALIVE_REFUSED = Symbol('fleet.keepaliveRefused');
type ConnectingClient = Client & { [KEEPALIVE_REFUSED]?: boolean };

/** aedes' preConnect and authenticate hooks; both fail closed. */
export function connectHooks(d: AuthenticateDeps): Pick<Hooks, 'preConnect' | 'authenticate'> {
  const { limits: lim, policy, revoked, subjects, sessions, presence, flaps, liveClient, metrics, log } = d;

  const refuse = (
    client: Client,
    reason: AuthFailureReason,
    detail: string | undefined,
    identity: Identity | undefined,
    done: Done,
  ) => {
    metrics.authFailures.inc({ reason });
    log.warn(
      {
        event: 'mqtt_connect_refused',
        reason,
        detail,
        client_id: client.id,
        kind: identity?.kind,
        id: identity?.id,
        serial: identity?.serial,
        remote: (client.conn as TLSSocket).remoteAddress,
      },
      'connection refused',
    );
    // The return code is the reason's declaration's (broker/errors.ts); none declared refuses as not authorized.
    const returnCode = connectRefusal(reason).connack ?? CONNACK.NOT_AUTHORIZED;
    // AuthErrorCode is a const enum that tsx cannot inline: plain numbers.
    const err = Object.assign(new Error('not authorized'), { returnCode });
    done(err, null);
  };

  const preConnect: Hooks['preConnect'] = (client, packet, done) => {
    try {
      const ka = packet.keepalive ?? 0;
      if (ka !== 0 && ka < lim.keepaliveMinS) (client as ConnectingClient)[KEEPALIVE_REFUSED] = true;
      // [MQTT-3.1.2-24] the server may close an idle client after 1.5 × keepalive; a client asking for
      // none, or for more than the bound, gets the bound as its idle limit.
      else if (ka === 0 || ka > lim.keepaliveMaxS) packet.keepalive = lim.keepaliveMaxS;
      done(null, true);
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'preConnect', err }, 'preConnect failed');
      done(err as Error, false);
    }
  };

  const authenticate: Hooks['authenticate'] = (c, _username, _password, done) => {
    const client = c as ConnectingClient;
    let identity: Identity | undefined;
    try {
      if (client[KEEPALIVE_REFUSED]) throw new ConnectRefused('keepalive_out_of_bounds');
      identity = identityOfSocket(client.conn as PeerSocket);
      checkIdentity(identity, client.id, revoked);
      const id = identity;
      const cached = subjects.peek(id);
      if (cached) return admit(client, id, cached, done);
      subjects.get(id).then(
        (info) => {
          try {
            checkSubject(info);
            // A change may have arrived while we waited.
            checkIdentity(id, client.id, revoked);
            admit(client, id, info!, done);
          } catch (err) {
            fail(err, id);
          }
        },
        (err) => {
          log.error(
            { event: 'registry_lookup_failed', err, kind: id.kind, id: id.id },
            'registry lookup failed',
          );
          refuse(client, 'registry_unavailable', undefined, id, done);
        },
      );
    } catch (err) {
      fail(err, identity);
    }
    function fail(err: unknown, who: Identity | undefined) {
      if (err instanceof ConnectRefused) return refuse(client, err.reason, err.detail, who, done);
      log.error({ event: 'mqtt_hook_failed', hook: 'authenticate', err }, 'authenticate failed');
      refuse(client, 'internal_error', undefined, who, done);
    }
  };

  /** The last step: policy bound, will checked, one live connection per identity, session recorded. */
  function admit(client: Client, identity: Identity, info: SubjectInfo, done: Done) {
    if (client.closed) return;
    const bound = bindPolicy(policy, {
      kind: identity.kind,
      id: identity.id,
      fleet: info.fleet,
      product: info.product,
      role: info.role,
    });
    const will = pendingWill(client);
    if (will && !bound.canPublish(will.topic)) {
      return refuse(client, 'will_denied', will.topic, identity, done);
    }
    const key = subjectKey(identity.kind, identity.id);
    const existing = liveClient(identity.id);
    const prior = sessionOf(existing);
    if (prior && prior.identity.kind !== identity.kind) {
      // A device and a service with the same id would take each other over: the live one stays.
      return refuse(client, 'client_id_conflict', prior.identity.kind, identity, done);
    }
    const sock = client.conn as TLSSocket;
    const remoteAddress = sock.remoteAddress;
    if (existing && !existing.closed) {
      metrics.takeovers.inc();
      log.info({ event: 'mqtt_takeover', kind: identity.kind, id: identity.id, remote: remoteAddress });
    }
    if (remoteAddress) {
      const flips = flaps.record(key, remoteAddress, Date.now());
      if (flips !== undefined) {
        metrics.possibleClones.inc();
        log.warn(
          {
            event: 'possible_cloned_identity',
            kind: identity.kind,
            id: identity.id,
            serial: identity.serial,
            flips,
          },
          'identity flaps between source addresses: possibly a cloned device',
        );
      }
    }
    const session: Session = {
      identity,
      info,
      policy: bound,
      remoteAddress,
      key,
      denials: new WindowCounter(lim.aclDenialLimit, lim.aclDenialWindowMs),
      kicked: false,
    };
    sessions.add(client, session);
    metrics.connections.inc();
    metrics.connects.inc();
    presence.connected(presenceOf(session));
    sock.once('close', () => closed(client, session));
    done(null, true);
    d.admitted?.(identity);
  }

  function closed(client: Client, s: Session) {
    metrics.connections.dec();
    if (sessions.remove(client, s)) presence.disconnected(presenceOf(s));
  }

  return { preConnect, authenticate };
}
