/**
 * Who is calling: derived once per TLS connection from the client certificate OpenSSL verified, never from
 * a header. The mTLS listener runs with `rejectUnauthorized: false` only so that EST bootstrap
 * (`/.well-known/est/cacerts`) and the health check answer without a certificate; every other route comes
 * through `authenticate()`, which refuses a peer whose chain OpenSSL did not verify against the fleet trust
 * (`socket.authorized !== true`). Verification is never off: an unverified peer is refused at the route.
 *
 * Authentication is not authorization: after the identity, the registry decides whether that certificate
 * and its subject are still in good standing. Those answers are cached briefly and dropped on every change
 * of the registry's change feed, so a revocation takes effect on the next request.
 */
import type { TLSSocket } from 'node:tls';
import { FleetError } from '../pki/errors.ts';
import { identityFromCertificate } from '../pki/identity.ts';
import type { Identity, IdentityKind } from '../pki/ids.ts';
import type { PrincipalRow, Registry, RegistryLogger } from '../registry/index.ts';
import { ProvisioningError } from './errors.ts';

export interface AuthOptions {
  /** How long a certificate's good standing is trusted without a change event (safety net). */
  statusTtlMs?: number;
  /** How long a station's scope and quota are cached (changes made through this service apply at once). */
  stationTtlMs?: number;
}

type Standing = 'active' | 'superseded';

interface Cached<T> {
  value: T | FleetError;
  expires: number;
}

export class Authenticator {
  private readonly bySocket = new WeakMap<TLSSocket, Identity | FleetError>();
  private readonly standing = new Map<string, Cached<Standing>>();
  private readonly stations = new Map<string, Cached<PrincipalRow>>();
  /** Bumped on every change event: an answer read before a change is not cached after it. */
  private generation = 0;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly statusTtlMs: number;
  private readonly stationTtlMs: number;

  constructor(
    private readonly registry: Registry,
    private readonly log: RegistryLogger,
    opts: AuthOptions = {},
  ) {
    this.statusTtlMs = opts.statusTtlMs ?? 10_000;
    this.stationTtlMs = opts.stationTtlMs ?? 5_000;
  }

  async start(): Promise<void> {
    this.unsubscribe = await this.registry.onChange(() => this.invalidate());
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Forgets every cached standing and station (called on change events and after local writes). */
  invalidate(): void {
    this.generation++;
    this.standing.clear();
    this.stations.clear();
  }

  /** The identity of a TLS peer, derived once per connection. Throws when there is none. */
  identityOf(socket: TLSSocket): Identity {
    let v = this.bySocket.get(socket);
    if (v === undefined) {
      v = deriveIdentity(socket);
      this.bySocket.set(socket, v);
    }
    if (v instanceof FleetError) throw v;
    // A long keep-alive connection may outlive its certificate.
    if (Date.now() > v.notAfter.getTime())
      throw new ProvisioningError('CLIENT_CERT_INVALID', 'the client certificate has expired', {
        details: { reason: 'CERT_EXPIRED' },
      });
    return v;
  }

  /**
   * The caller's identity if it is one of `kinds` and in good standing. `allowSuperseded` admits a
   * certificate replaced by a re-enrollment but still in its grace period (EST simplereenroll retries after
   * a lost answer); a retired one (registry/rotation.ts) is refused everywhere, like on MQTT.
   */
  async authenticate(
    socket: TLSSocket,
    kinds: readonly IdentityKind[],
    opts: { allowSuperseded?: boolean } = {},
  ): Promise<Identity> {
    const id = this.identityOf(socket);
    if (!kinds.includes(id.kind)) {
      throw new ProvisioningError(
        'IDENTITY_KIND_FORBIDDEN',
        `a ${id.kind} certificate may not use this endpoint; it needs a ${kinds.join(' or ')} certificate`,
        { details: { kind: id.kind, required: kinds } },
      );
    }
    const standing = await this.cached(this.standing, id.serial, this.statusTtlMs, () =>
      this.readStanding(id),
    );
    if (standing === 'superseded' && !opts.allowSuperseded) {
      throw new ProvisioningError(
        'CLIENT_CERT_SUPERSEDED',
        'the client certificate was replaced by a newer one; use the newer certificate',
      );
    }
    return id;
  }

  /** The station's registry row (scope, quota), cached briefly. */
  async station(id: string): Promise<PrincipalRow> {
    return this.cached(this.stations, id, this.stationTtlMs, async () => {
      const row = await this.registry.getPrincipal('station', id);
      if (!row) throw new ProvisioningError('STATION_UNKNOWN', `station ${id} is not registered`);
      return row;
    });
  }

  private async readStanding(id: Identity): Promise<Standing> {
    const s = await this.registry.certificateStatus(id.serial);
    if (!s || s.subjectKind !== id.kind || s.subjectId !== id.id) {
      throw new ProvisioningError('CLIENT_CERT_INVALID', 'the client certificate is not in the registry', {
        details: { reason: 'CERT_NOT_RECORDED' },
      });
    }
    if (s.status === 'revoked' && s.reason === 'superseded' && s.subjectStatus !== 'revoked') {
      // Retired by the rotation rule (registry/rotation.ts): the newer certificate is the one to use.
      throw new ProvisioningError(
        'CLIENT_CERT_SUPERSEDED',
        'the client certificate was replaced by a newer one and is retired; use the newer certificate',
        { details: { retired: true } },
      );
    }
    if (s.status === 'revoked' || s.subjectStatus === 'revoked') {
      this.log.info({ event: 'client_certificate_revoked', kind: id.kind, id: id.id, serial: id.serial });
      throw new ProvisioningError(
        'CLIENT_CERT_REVOKED',
        `the client certificate of ${id.kind} ${id.id} is revoked`,
      );
    }
    if (s.subjectStatus === 'suspended') {
      throw new ProvisioningError('CLIENT_SUSPENDED', `${id.kind} ${id.id} is suspended`);
    }
    return s.status === 'superseded' ? 'superseded' : 'active';
  }

  /** Caches answers and refusals (a refusal is as stable as an answer), never across a change event. */
  private async cached<T>(
    map: Map<string, Cached<T>>,
    key: string,
    ttl: number,
    read: () => Promise<T>,
  ): Promise<T> {
    const now = Date.now();
    const hit = map.get(key);
    if (hit && hit.expires > now) {
      if (hit.value instanceof FleetError) throw hit.value;
      return hit.value;
    }
    const gen = this.generation;
    let value: T | FleetError;
    try {
      value = await read();
    } catch (e) {
      if (!(e instanceof ProvisioningError)) throw e;
      value = e;
    }
    if (gen === this.generation) map.set(key, { value, expires: now + ttl });
    if (value instanceof FleetError) throw value;
    return value;
  }
}

function deriveIdentity(socket: TLSSocket): Identity | FleetError {
  // `authorized` is OpenSSL's verdict on the chain against our trust (the fleet root and issuing CAs).
  if (typeof socket.getPeerX509Certificate !== 'function') {
    return new ProvisioningError('CLIENT_CERT_REQUIRED', 'this endpoint needs a TLS client certificate');
  }
  const peer = socket.getPeerX509Certificate();
  if (!peer) {
    return new ProvisioningError('CLIENT_CERT_REQUIRED', 'this endpoint needs a TLS client certificate');
  }
  if (socket.authorized !== true) {
    return new ProvisioningError(
      'CLIENT_CERT_REQUIRED',
      'the client certificate was not issued by this fleet or is not valid now',
      { details: { reason: String(socket.authorizationError ?? 'unverified') } },
    );
  }
  try {
    return identityFromCertificate(peer);
  } catch (e) {
    const code = e instanceof FleetError ? e.code : 'CERT_MALFORMED';
    return new ProvisioningError('CLIENT_CERT_INVALID', 'the client certificate is not a fleet identity', {
      cause: e,
      details: { reason: code },
    });
  }
}
