/**
 * CRLs from the registry (the source of truth), one per issuing CA.
 *
 * Suspension is shown the RFC 5280 way: the active certificates of a suspended subject are listed with
 * reason certificateHold (§5.3.1, 6) and the time of the suspension; reinstating removes them from the
 * next CRL (a full CRL simply omits them, so no removeFromCRL entry is needed: that exists for delta CRLs).
 * A superseded certificate (replaced by a re-enrollment) is listed once retired, with reason superseded: its
 * successor connected, its grace period ended, or an operator reset the device (registry/rotation.ts).
 */
import type { CertificateAuthority, IssuingCa } from '../pki/ca.ts';
import { type BuiltCrl, buildCrl } from '../pki/crl.ts';
import type { Registry, RegistryLogger } from '../registry/index.ts';

export const CRL_VALIDITY_HOURS = 24;
export const ISSUING_CAS: readonly IssuingCa[] = ['device', 'infrastructure'];

export async function currentCrl(
  ca: CertificateAuthority,
  registry: Registry,
  issuing: IssuingCa,
  now = new Date(),
  crlNumber?: bigint,
): Promise<BuiltCrl> {
  const [revoked, held] = await Promise.all([
    registry.revokedCertificates(issuing),
    registry.heldCertificates(issuing),
  ]);
  // RFC 5280 §5.2.3: the CRL number only ever increases for a CA. The issue time in milliseconds does that
  // across processes and restarts without a counter to keep (and two CRLs in one millisecond are the same).
  return buildCrl({
    issuer: ca.issuers[issuing],
    entries: [...revoked, ...held],
    crlNumber: crlNumber ?? BigInt(now.getTime()),
    thisUpdate: now,
    validityHours: CRL_VALIDITY_HOURS,
  });
}

export interface CrlPublisherOptions {
  /**
   * Rebuild at least this often even without a change (default one hour): a CRL valid for 24 hours is so
   * always served with more than 23 hours left, and a missed notification is caught up here.
   */
  refreshMs?: number;
  /** Coalesces a burst of changes (a cascade revocation) into one rebuild (default 25 ms). */
  debounceMs?: number;
}

/**
 * Keeps the current CRL of each issuing CA, rebuilt on every registry change (the change feed: NOTIFY on
 * PostgreSQL, in-process on PGlite) and on a timer. A request that arrives after a change and before the
 * rebuild waits for the rebuild, so nobody is handed a CRL older than a change this process has seen.
 */
export class CrlPublisher {
  /** Each CA's CRL with the registry generation (max status-change seq) read just before its entries. */
  private readonly current = new Map<IssuingCa, { crl: BuiltCrl; generation: number }>();
  private readonly dirty = new Set<IssuingCa>(ISSUING_CAS);
  private readonly building = new Map<IssuingCa, Promise<BuiltCrl>>();
  private lastNumber = 0n;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly refreshMs: number;
  private readonly debounceMs: number;

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly registry: Registry,
    private readonly log: RegistryLogger,
    opts: CrlPublisherOptions = {},
  ) {
    this.refreshMs = opts.refreshMs ?? 3600_000;
    this.debounceMs = opts.debounceMs ?? 25;
  }

  async start(): Promise<void> {
    this.unsubscribe = await this.registry.onChange((e) =>
      this.invalidate(e.kind === 'device' ? 'device' : 'infrastructure'),
    );
    await Promise.all(ISSUING_CAS.map((c) => this.get(c)));
    this.timer = setInterval(() => {
      for (const c of ISSUING_CAS) this.dirty.add(c);
      this.rebuildDirty();
    }, this.refreshMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
    await Promise.allSettled(this.building.values());
  }

  /** Marks a CA's CRL stale (or both) and schedules a rebuild. */
  invalidate(which?: IssuingCa): void {
    for (const c of which ? [which] : ISSUING_CAS) this.dirty.add(c);
    if (!this.debounce) {
      this.debounce = setTimeout(() => {
        this.debounce = undefined;
        this.rebuildDirty();
      }, this.debounceMs);
      this.debounce.unref();
    }
  }

  /**
   * The current CRL; rebuilt first when a change was seen since the last build. Besides the change feed
   * (which may arrive late), the registry generation is compared on every request: whoever changed a
   * status and then fetches the CRL sees the change (read-your-writes), whatever the feed's timing.
   */
  async get(which: IssuingCa): Promise<BuiltCrl> {
    const have = this.current.get(which);
    try {
      if (
        have &&
        !this.dirty.has(which) &&
        // Past two thirds of its validity (a stalled timer): rebuild rather than serve a CRL near its end.
        Date.now() < have.crl.nextUpdate.getTime() - (CRL_VALIDITY_HOURS * 3600_000) / 3 &&
        (await this.registry.generation()) <= have.generation
      )
        return have.crl;
      if (have) this.dirty.add(which);
      return await this.build(which);
    } catch (err) {
      // The registry is unreachable: the last CRL is still signed and valid until its nextUpdate, and
      // answering it beats answering nothing (clients would fail closed on a missing CRL).
      if (have && Date.now() < have.crl.nextUpdate.getTime()) {
        this.log.error({ event: 'crl_rebuild_failed_serving_last', ca: which, err }, 'serving the last CRL');
        return have.crl;
      }
      throw err;
    }
  }

  private rebuildDirty(): void {
    for (const c of this.dirty) {
      this.build(c).catch((err) =>
        this.log.error({ event: 'crl_rebuild_failed', ca: c, err }, 'could not rebuild a CRL'),
      );
    }
  }

  private build(which: IssuingCa): Promise<BuiltCrl> {
    const running = this.building.get(which);
    // A build already running started before the latest change if the CA is dirty again: chain another.
    if (running && !this.dirty.has(which)) return running;
    const next = (running ?? Promise.resolve())
      .catch(() => {})
      .then(async () => {
        this.dirty.delete(which);
        const now = new Date();
        let n = BigInt(now.getTime());
        if (n <= this.lastNumber) n = this.lastNumber + 1n;
        this.lastNumber = n;
        try {
          // Read before the entries: a change committed in between makes the next get() rebuild again.
          const generation = await this.registry.generation();
          const crl = await currentCrl(this.ca, this.registry, which, now, n);
          this.current.set(which, { crl, generation });
          this.log.info({ event: 'crl_published', ca: which, crl_number: n.toString() });
          return crl;
        } catch (e) {
          this.dirty.add(which);
          throw e;
        }
      })
      .finally(() => {
        if (this.building.get(which) === next) this.building.delete(which);
      });
    this.building.set(which, next);
    return next;
  }
}
