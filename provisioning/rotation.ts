/**
 * The rotation sweep: when a superseded certificate's grace period ends while nobody calls anything, it is
 * retired all the same (registry/rotation.ts) and the change is published: the feed closes a live session
 * on it on every broker node, and the CRL is rebuilt. Every reader already treats it as retired from its
 * deadline; the sweep makes that a written revocation that reaches live sessions.
 *
 * The sweep runs at the next deadline (read from the registry, re-read whenever the feed says a certificate
 * was superseded) and at least every `maxWaitMs` (a safety net against a missed notification). Several
 * provisioning processes may sweep the same database: the retirement is one conditional UPDATE, so a
 * certificate is retired once.
 */
import type { Registry, RegistryLogger } from '../registry/index.ts';

/** The longest a timer may wait in Node (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RotationSweeperOptions {
  /** Sweep at least this often (default one minute). */
  maxWaitMs?: number;
}

export class RotationSweeper {
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly maxWaitMs: number;

  constructor(
    private readonly registry: Registry,
    private readonly log: RegistryLogger,
    opts: RotationSweeperOptions = {},
  ) {
    this.maxWaitMs = Math.min(opts.maxWaitMs ?? 60_000, MAX_TIMER_MS);
  }

  /** Subscribes to the feed, sweeps once, and plans the next sweep. */
  async start(): Promise<void> {
    this.unsubscribe = await this.registry.onChange((e) => {
      if (e.status === 'superseded') this.sweepSoon();
    });
    await this.sweep();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.running;
  }

  /** Retires what is due now, then plans the next run at the next deadline. Never throws. */
  sweep(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.sweep();
      }
    });
    return this.running;
  }

  private sweepSoon(): void {
    if (this.stopped) return;
    // A new deadline may be earlier than the one planned: re-plan (sweeping first costs one query).
    void this.sweep();
  }

  private async run(): Promise<void> {
    let wait = this.maxWaitMs;
    try {
      const retired = await this.registry.retireExpiredGrace('system:rotation');
      if (retired.length > 0) {
        this.log.info(
          { event: 'certificates_retired', reason: 'grace_ended', count: retired.length, serials: retired },
          'superseded certificates retired: their grace period ended',
        );
      }
      const next = await this.registry.nextGraceDeadline();
      // Not below 50 ms: the database's clock may trail ours by a little, and a deadline it does not see as
      // passed yet must not spin the loop.
      if (next) wait = Math.max(50, Math.min(wait, next.getTime() - Date.now() + 5));
    } catch (err) {
      this.log.error({ event: 'rotation_sweep_failed', err }, 'the rotation sweep failed; retrying');
    }
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.sweep(), wait);
    this.timer.unref();
  }
}
