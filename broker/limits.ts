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
