/**
 * Presence, batched: connects and disconnects are coalesced per identity (the last state wins) and written
 * to the registry every `flushMs`, and "last seen" for everyone still connected is refreshed every
 * `lastSeenMs`. Never one write per message, nor per connect.
 */
import type { Logger } from 'pino';
import type { BrokerMetrics } from './metrics.ts';
import type { BrokerRegistry, PresenceRecord } from './registry.ts';

export interface PresenceOptions {
  flushMs: number;
  lastSeenMs: number;
  maxBatch: number;
  brokerNode: string;
}

export interface LiveIdentity {
  readonly kind: PresenceRecord['kind'];
  readonly id: string;
  readonly remoteAddress: string | undefined;
}

export class PresenceBatcher {
  private pending = new Map<string, PresenceRecord>();
  private flushTimer: NodeJS.Timeout | undefined;
  private seenTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly registry: Pick<BrokerRegistry, 'recordPresence'>,
    private readonly opts: PresenceOptions,
    private readonly live: () => Iterable<LiveIdentity>,
    private readonly log: Logger,
    private readonly metrics: BrokerMetrics,
  ) {}

  start(): void {
    this.flushTimer = setInterval(() => void this.flush(), this.opts.flushMs);
    this.flushTimer.unref();
    this.seenTimer = setInterval(() => this.touchLive(), this.opts.lastSeenMs);
    this.seenTimer.unref();
  }

  connected(who: LiveIdentity): void {
    this.put(who, true);
  }

  disconnected(who: LiveIdentity): void {
    this.put(who, false);
  }

  private put(who: LiveIdentity, connected: boolean): void {
    this.pending.set(`${who.kind}:${who.id}`, {
      kind: who.kind,
      id: who.id,
      connected,
      at: new Date(),
      remoteAddress: who.remoteAddress,
      brokerNode: this.opts.brokerNode,
    });
  }

  private touchLive(): void {
    for (const who of this.live()) {
      const k = `${who.kind}:${who.id}`;
      if (!this.pending.has(k)) this.put(who, true);
    }
  }

  /** Writes what is pending, in batches of `maxBatch`. Failures are logged and retried next time. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushNow());
    return this.flushing;
  }

  private async flushNow(): Promise<void> {
    if (this.pending.size === 0) return;
    const all = [...this.pending.values()];
    this.pending = new Map();
    for (let i = 0; i < all.length; i += this.opts.maxBatch) {
      const batch = all.slice(i, i + this.opts.maxBatch);
      try {
        await this.registry.recordPresence(batch);
        this.metrics.presenceWrites.inc({ outcome: 'ok' }, batch.length);
      } catch (err) {
        this.metrics.presenceWrites.inc({ outcome: 'failed' }, batch.length);
        this.log.warn({ event: 'presence_write_failed', err, count: batch.length }, 'presence write failed');
        // Put them back unless a newer state arrived meanwhile.
        for (const r of batch) {
          const k = `${r.kind}:${r.id}`;
          if (!this.pending.has(k)) this.pending.set(k, r);
        }
      }
    }
  }

  /** Stops the timers and writes what is pending (everyone still live is written as disconnected by the caller). */
  async stop(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.seenTimer);
    await this.flush();
  }
}
