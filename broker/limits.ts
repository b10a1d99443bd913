/**
 * Admission limits. A token bucket meters new connections so that a reconnect storm after an outage is
 * served at a steady rate (the rest are refused cheaply, before the TLS handshake, and retry later)
 * instead of every handshake competing for the CPU until none completes in time.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  /** `ratePerSecond` tokens are added each second, up to `burst`. A rate of 0 or less disables the bucket. */
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.last = this.now();
  }

  /** Takes one token; false when the bucket is empty. */
  take(): boolean {
    if (this.ratePerSecond <= 0) return true;
    const t = this.now();
    const elapsed = t - this.last;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
      this.last = t;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * Counts events in a sliding window per key (ACL denials). Fixed window per key: cheap, and exact enough
 * for "10 denials in 60 s disconnects".
 */
export class WindowCounter {
  private start = 0;
  private count = 0;
  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  /** Records one event at `now`; true when the limit is reached within the window. */
  hit(now: number): boolean {
    if (now - this.start > this.windowMs) {
      this.start = now;
      this.count = 0;
    }
    this.count++;
    return this.limit > 0 && this.count >= this.limit;
  }
}

/**
 * Remembers the last few source addresses per identity to spot a certificate used from two places at
 * once: the two copies keep taking each other over. Flags an identity whose connects within `windowMs`
 * alternate between different addresses at least `threshold` times.
 */
export class FlapDetector {
  private readonly seen = new Map<string, { addr: string; at: number; flips: number; since: number }>();

  constructor(
    private readonly threshold = 3,
    private readonly windowMs = 60_000,
    private readonly maxEntries = 100_000,
  ) {}

  /** Records a connect of `key` from `addr`; returns the flip count when it crosses the threshold. */
  record(key: string, addr: string, now: number): number | undefined {
    const e = this.seen.get(key);
    if (!e || now - e.since > this.windowMs) {
      if (!e && this.seen.size >= this.maxEntries) {
        const oldest = this.seen.keys().next().value;
        if (oldest !== undefined) this.seen.delete(oldest);
      }
      this.seen.set(key, { addr, at: now, flips: 0, since: now });
      return undefined;
    }
    if (e.addr !== addr) {
      e.flips++;
      e.addr = addr;
    }
    e.at = now;
    return e.flips >= this.threshold ? e.flips : undefined;
  }
}

/**
 * The key admission counts a source by: an IPv4 address (IPv4-mapped IPv6 included) as itself, an IPv6
 * address by its /64, since one subscriber or host is routinely given a whole /64 (RFC 6177 §2, RFC 7934
 * §6) and could otherwise rotate through 2^64 "sources".
 */
export function sourceKey(address: string | undefined): string {
  if (!address) return '?';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const zone = address.indexOf('%');
  const a = (zone >= 0 ? address.slice(0, zone) : address).toLowerCase();
  const [head = '', tail] = a.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::1.2.3.4 forms) is past the first 64 bits: it never changes the /64.
  const groups =
    tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

export type SourceRefusal = 'source_handshakes_in_flight' | 'source_rate_limited';

/**
 * Per-source admission: handshakes in flight per source, and a token bucket per source. Checked before
 * the global cap and bucket, so a source over its own share is refused without spending the shared ones:
 * an unauthenticated client cannot take the whole admission budget from one address (issue 9 item 4).
 *
 * Memory stays bounded: an in-flight entry lives only while its source has a handshake in flight (so at
 * most the global cap of them), and a bucket is forgotten once it has refilled to its burst (forgetting a
 * full bucket changes nothing), and, past `maxSources`, the least recently used is forgotten first (which
 * only ever errs towards admitting).
 */
export class SourceAdmission {
  private readonly inFlight = new Map<string, number>();
  private readonly buckets = new Map<string, { tokens: number; last: number }>();
  private takes = 0;

  /** 0 disables a limit. */
  constructor(
    private readonly maxInFlight: number,
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
    private readonly maxSources = 65_536,
  ) {}

  /** Admits one connection from `key` (it then holds a slot until release()), or says why not. */
  admit(key: string): SourceRefusal | undefined {
    const n = this.inFlight.get(key) ?? 0;
    if (this.maxInFlight > 0 && n >= this.maxInFlight) return 'source_handshakes_in_flight';
    if (!this.take(key)) return 'source_rate_limited';
    this.inFlight.set(key, n + 1);
    return undefined;
  }

  release(key: string): void {
    const n = this.inFlight.get(key) ?? 0;
    if (n <= 1) this.inFlight.delete(key);
    else this.inFlight.set(key, n - 1);
  }

  /** Sources with a handshake in flight, and sources with a bucket remembered (for tests and metrics). */
  get size(): { inFlight: number; buckets: number } {
    return { inFlight: this.inFlight.size, buckets: this.buckets.size };
  }

  private take(key: string): boolean {
    if (this.ratePerSecond <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.last) * this.ratePerSecond) / 1000);
      b.last = t;
      // Most recently used last: the sweep and the size bound forget the oldest first.
      this.buckets.delete(key);
    } else {
      b = { tokens: this.burst, last: t };
    }
    this.buckets.set(key, b);
    if (++this.takes % 1024 === 0 || this.buckets.size > this.maxSources) this.sweep(t);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private sweep(t: number): void {
    const refill = (this.burst * 1000) / this.ratePerSecond;
    for (const [k, b] of this.buckets) {
      if (t - b.last < refill && this.buckets.size <= this.maxSources) break;
      this.buckets.delete(k);
    }
  }
}
