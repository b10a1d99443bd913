/**
 * Presence, batched: connect and disconnect events are queued and written to the registry every
 * `flushMs` in one call per `maxBatch`, and "last seen" for everyone still connected is refreshed every
 * `lastSeenMs`. Never one write per message, nor per connect. The registry merges events by time, so a
 * connect and disconnect in the same batch both land.
 */
import type { Logger } from 'pino';
import type { BrokerMetrics } from './metrics.ts';
import type { BrokerRegistry, PresenceRecord } from './registry.ts';

export interface PresenceOptions {
  flushMs: number;
  lastSeenMs: number;
  maxBatch: number;
  /** Events kept while the registry is unreachable; the oldest are dropped beyond it. */
  maxPending?: number;
  brokerNode: string;
}

export interface LiveIdentity {
  readonly kind: PresenceRecord['kind'];
  readonly id: string;
  readonly remoteAddress: string | undefined;
}

export class PresenceBatcher {
  private pending: PresenceRecord[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private seenTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private readonly maxPending: number;

  constructor(
    private readonly registry: Pick<BrokerRegistry, 'recordPresence'>,
    private readonly opts: PresenceOptions,
    private readonly live: () => Iterable<LiveIdentity>,
    private readonly log: Logger,
    private readonly metrics: BrokerMetrics,
  ) {
    this.maxPending = opts.maxPending ?? 200_000;
  }

  start(): void {
    this.flushTimer = setInterval(() => void this.flush(), this.opts.flushMs);
    this.flushTimer.unref();
    this.seenTimer = setInterval(() => {
      for (const who of this.live()) this.put(who, 'seen');
    }, this.opts.lastSeenMs);
    this.seenTimer.unref();
  }

  connected(who: LiveIdentity): void {
    this.put(who, 'connect');
  }

  disconnected(who: LiveIdentity): void {
    this.put(who, 'disconnect');
  }

  private put(who: LiveIdentity, event: PresenceRecord['event']): void {
    if (this.pending.length >= this.maxPending) this.pending.shift();
    this.pending.push({
      kind: who.kind,
      id: who.id,
      event,
      at: new Date(),
      remoteAddress: who.remoteAddress,
      brokerNode: this.opts.brokerNode,
    });
  }

  /** Writes what is pending, in batches of `maxBatch`. A failed batch is logged and retried next time. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushNow());
    return this.flushing;
  }

  private async flushNow(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.slice(0, this.opts.maxBatch);
      try {
        await this.registry.recordPresence(batch);
        this.metrics.presenceWrites.inc({ outcome: 'ok' }, batch.length);
        this.pending.splice(0, batch.length);
      } catch (err) {
        this.metrics.presenceWrites.inc({ outcome: 'failed' }, batch.length);
        this.log.warn({ event: 'presence_write_failed', err, count: batch.length }, 'presence write failed');
        return;
      }
    }
  }

  /** Stops the timers and writes what is pending. */
  async stop(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.seenTimer);
    await this.flush();
  }
}
