/**
 * Bounded memory under a publish flood: stop reading from clients while the broker has more queued than it
 * can deliver, and start again once it has drained.
 *
 * Where aedes buffers during a flood (10 publishers → 1 subscriber):
 * 1. The mq backlog: messages accepted from publishers and not yet delivered (FleetMq's `pending`).
 * 2. The subscriber's socket write buffer (`conn.writableLength`): aedes writes every delivered packet
 *    even when `write()` returned false; it only delays the mq callback until 'drain'.
 * 3. aedes' read loop pulls a whole socket chunk at a time and is meant to read the next only when every
 *    packet of the chunk is done, but each 'readable' event also counts as a completion, so under load it
 *    keeps reading while earlier packets are still queued.
 *
 * The gate: each client's batch-completion callback (`client._nextBatch`, which is also its 'readable'
 * listener and the only place aedes calls `conn.read()`) is wrapped. While the gate is closed, completions
 * are counted instead of run, so aedes stops reading and the kernel's TCP window pushes back on the
 * publisher; when it opens they are replayed, in order, so aedes' own bookkeeping stays exact. (aedes'
 * `client.pause()` is not used: while paused it drops those completions, and a resumed client can stall.)
 *
 * The gate closes while the mq is overloaded or any subscriber's `writableLength` exceeds
 * `maxSubscriberBacklogBytes`, and opens when both are clear. A congested subscriber itself is never
 * gated (its PUBACKs and PINGREQs keep flowing). A subscriber that stays congested longer than
 * `slowSubscriberTimeoutMs` is disconnected, so one client that stops reading cannot stall every
 * publisher for long.
 *
 * Call before the broker's servers are created: it wraps `aedes.handle`. Clients that slip past that (a
 * server made earlier with the original function) are gated from their CONNECT on.
 */
import type { Duplex } from 'node:stream';
import type { FleetMq } from '../mq.ts';

/** The parts of an aedes Client this module touches (aedes 1.x; see node_modules/aedes/lib/client.js). */
interface AedesClientLike {
  id: string | null;
  conn: Duplex & { writableLength: number; destroy(err?: Error): void };
  closed: boolean;
  _nextBatch: (err?: Error | null) => void;
  waitForDrain: (cb: (err: Error | null, client: unknown) => void) => void;
}

interface AedesLike {
  handle: (conn: Duplex, req?: unknown) => unknown;
  on(event: 'client', fn: (client: AedesClientLike) => void): unknown;
  removeListener(event: 'client', fn: (client: AedesClientLike) => void): unknown;
}

export interface BackpressureOptions {
  /** A subscriber whose socket holds more than this many unsent bytes closes the gate. Default 4 MiB. */
  maxSubscriberBacklogBytes?: number;
  /** Disconnect a subscriber congested for longer than this (ms); 0 = never. Default 10,000. */
  slowSubscriberTimeoutMs?: number;
  /**
   * Batch each client's socket writes per event-loop turn (default true). mqtt-packet corks the socket per
   * packet and uncorks on the next tick, and aedes delivers each message in its own setImmediate, so
   * without this every delivered message is one writev system call. Holding one extra cork until
   * setImmediate turns a turn's deliveries into one write; the added latency is one loop turn.
   */
  coalesceWrites?: boolean;
  /** Told when the gate closes or opens, and when a slow subscriber is dropped (for logs and metrics). */
  onEvent?: (event: BackpressureEvent) => void;
}

export type BackpressureEvent =
  | { type: 'backpressure_on'; reason: 'mq' | 'subscriber'; clientId?: string | null }
  | { type: 'backpressure_off'; pausedMs: number }
  | { type: 'slow_subscriber_dropped'; clientId: string | null; backlogBytes: number };

export interface Backpressure {
  /** True while clients are not being read. */
  readonly paused: boolean;
  readonly stats: { pauses: number; pausedMs: number; slowDropped: number; congestedNow: number };
  /** Restores aedes.handle and opens the gate for good. */
  detach(): void;
}

const GATED = Symbol('fleet.backpressure');

interface GateState {
  original: (err?: Error | null) => void;
  owed: number;
}

export function attachBackpressure(
  aedes: AedesLike,
  mq: FleetMq,
  opts: BackpressureOptions = {},
): Backpressure {
  const maxBacklog = opts.maxSubscriberBacklogBytes ?? 4 * 1024 * 1024;
  const slowMs = opts.slowSubscriberTimeoutMs ?? 10_000;
  const onEvent = opts.onEvent;
  const coalesce = opts.coalesceWrites ?? true;

  const congested = new Map<AedesClientLike, NodeJS.Timeout | undefined>();
  const owed = new Set<AedesClientLike>();
  let closed = false;
  let closedAt = 0;
  let detached = false;
  const stats = { pauses: 0, pausedMs: 0, slowDropped: 0, congestedNow: 0 };

  function update(reason: 'mq' | 'subscriber', client?: AedesClientLike): void {
    const shouldClose = !detached && (mq.isOverloaded() || congested.size > 0);
    stats.congestedNow = congested.size;
    if (shouldClose && !closed) {
      closed = true;
      closedAt = performance.now();
      stats.pauses++;
      onEvent?.({ type: 'backpressure_on', reason, clientId: client?.id });
    } else if (!shouldClose && closed) {
      closed = false;
      const pausedMs = performance.now() - closedAt;
      stats.pausedMs += pausedMs;
      onEvent?.({ type: 'backpressure_off', pausedMs });
      replay();
    }
  }

  /** Runs the completions owed while the gate was closed, stopping if it closes again. */
  function replay(): void {
    for (const client of owed) {
      const g = (client as unknown as Record<symbol, GateState>)[GATED]!;
      owed.delete(client);
      while (g.owed > 0) {
        if (closed) {
          owed.add(client);
          return;
        }
        g.owed--;
        g.original();
      }
    }
  }

  function uncongest(client: AedesClientLike): void {
    if (!congested.has(client)) return;
    const timer = congested.get(client);
    if (timer) clearTimeout(timer);
    congested.delete(client);
    update('subscriber', client);
  }

  function gate(client: AedesClientLike): void {
    const c = client as unknown as Record<symbol, GateState | undefined>;
    if (c[GATED] || client.closed) return;
    const original = client._nextBatch;
    const g: GateState = { original, owed: 0 };
    c[GATED] = g;
    const gated = (err?: Error | null) => {
      if (err || !closed || congested.has(client)) {
        original(err);
        return;
      }
      g.owed++;
      owed.add(client);
    };
    client._nextBatch = gated;
    client.conn.removeListener('readable', original);
    client.conn.on('readable', gated);

    // aedes calls waitForDrain after every write that found the socket buffer full, so this sees every
    // write while a subscriber is behind, at no cost otherwise.
    const waitForDrain = client.waitForDrain;
    client.waitForDrain = function (this: AedesClientLike, cb) {
      const conn = client.conn;
      if (!congested.has(client) && conn.writableLength > maxBacklog && !conn.destroyed) {
        const timer =
          slowMs > 0
            ? setTimeout(() => {
                stats.slowDropped++;
                onEvent?.({
                  type: 'slow_subscriber_dropped',
                  clientId: client.id,
                  backlogBytes: conn.writableLength,
                });
                uncongest(client);
                conn.destroy(new Error('slow subscriber: backlog not drained in time'));
              }, slowMs)
            : undefined;
        timer?.unref();
        congested.set(client, timer);
        conn.once('drain', () => uncongest(client));
        update('subscriber', client);
      }
      return waitForDrain.call(this, cb);
    };
    if (coalesce) coalesceWrites(client.conn);
    client.conn.once('close', () => {
      uncongest(client);
      owed.delete(client);
    });
  }

  const originalHandle = aedes.handle;
  aedes.handle = function handle(conn: Duplex, req?: unknown) {
    const client = originalHandle.call(this, conn, req) as AedesClientLike;
    gate(client);
    return client;
  };
  const onClient = (client: AedesClientLike) => gate(client);
  aedes.on('client', onClient);
  const offPressure = mq.onPressure(() => update('mq'));

  return {
    get paused() {
      return closed;
    },
    stats,
    detach() {
      detached = true;
      aedes.handle = originalHandle;
      aedes.removeListener('client', onClient);
      offPressure();
      for (const t of congested.values()) if (t) clearTimeout(t);
      congested.clear();
      update('mq');
    },
  };
}

/** See BackpressureOptions.coalesceWrites. */
function coalesceWrites(conn: Duplex): void {
  const cork = conn.cork;
  let held = false;
  const release = () => {
    held = false;
    conn.uncork();
  };
  conn.cork = function (this: Duplex) {
    if (!held && !conn.destroyed) {
      held = true;
      cork.call(conn);
      setImmediate(release);
    }
    cork.call(conn);
  };
}
