/**
 * Registry attributes of the subjects that connect, cached per identity, and warmed from the registry at
 * start so that a fleet's devices connect without a registry lookup after a restart.
 */
import type { Logger } from 'pino';
import type { Identity } from '../pki/ids.ts';
import type { BrokerRegistry, SubjectInfo } from './registry.ts';

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

/**
 * Fills the cache from the registry's listing of active subjects, page by page, until done or `stopped()`.
 * Never fails: without it, connects ask the registry as usual. Resolves with the number of subjects read.
 */
export async function warmSubjectCache(
  cache: SubjectCache,
  registry: Pick<BrokerRegistry, 'activeSubjects'>,
  stopped: () => boolean,
  log: Logger,
): Promise<number> {
  const t0 = performance.now();
  let n = 0;
  try {
    if (registry.activeSubjects) {
      for await (const page of registry.activeSubjects()) {
        if (stopped()) break;
        cache.prime(page);
        n += page.length;
      }
    }
    log.info({ event: 'subject_cache_warmed', subjects: n, ms: Math.round(performance.now() - t0) });
  } catch (err) {
    log.warn({ event: 'subject_cache_warm_failed', err }, 'subject cache not warmed; lookups per connect');
  }
  return n;
}
