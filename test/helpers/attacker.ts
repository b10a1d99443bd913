/**
 * An unauthenticated attacker in its own process, for the admission tests and the connection-abuse area.
 * Its own process so that the broker's process (the test's) counts only the broker's open files in
 * /proc/self/fd, and so that the attacker's client work does not run on the broker's event loop.
 *
 * It opens connections from given source addresses (127.0.0.0/8 on loopback: any of them can be bound) at a
 * given rate, in these kinds, and keeps each one open until the broker closes it (as an attacker would:
 * a socket the broker leaves open costs the broker a file, not the attacker):
 *
 *   silent     TCP connect, then nothing
 *   trickle    a real TLS ClientHello, one byte every `trickleMs`
 *   halfopen   half of a ClientHello, then FIN (the attacker's side stays open for reading)
 *   storm      a full TLS handshake without a client certificate (the reconnect storm), closed once refused
 *   proxy      a PROXY v1 header claiming `claim`, then a full TLS handshake without a client certificate
 *
 * The parent drives it with JSON lines on stdin and reads JSON lines on stdout (startAttacker()).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { createSecureContext, type SecureContext, connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';

export type AttackKind = 'silent' | 'trickle' | 'halfopen' | 'storm' | 'proxy';

export interface AttackWave {
  readonly kinds: readonly AttackKind[];
  /** Connections opened in this wave. */
  readonly count: number;
  /** Opened at this rate (connections a second), cycling through `kinds` and the attacker's sources. */
  readonly ratePerS: number;
}

export interface AttackerOptions {
  readonly host: string;
  readonly port: number;
  /** Local addresses to bind, e.g. 127.0.0.2..127.0.0.5. */
  readonly sources: readonly string[];
  /** The fleet root (PEM), for the `storm` kind's TLS client: verification stays on. */
  readonly caPem: string;
  readonly trickleMs?: number;
  /** The source address a `proxy` connection's header claims. */
  readonly claim?: string;
}

export interface AttackStats {
  /** Connections opened (TCP connect succeeded). */
  readonly opened: number;
  /** Connect attempts that failed (e.g. the listen backlog was full). */
  readonly connectFailed: number;
  /** Connections the broker closed. */
  readonly closedByServer: number;
  /** Connections still open now. */
  readonly open: number;
  /** Of those closed by the broker: milliseconds from connect to close, by kind (median, max). */
  readonly lifetimeMs: Readonly<Record<string, { readonly median: number; readonly max: number }>>;
  /** Opened and still open, by kind. */
  readonly byKind: Readonly<Record<string, { readonly opened: number; readonly open: number }>>;
}

// ------------------------------------------------------------------------------------------------ files

/** Open files of this process (the broker's, when the attacker runs in its own process). */
export const openFiles = (): number => readdirSync('/proc/self/fd').length;

/**
 * TCP sockets of `port` held by this process: the socket inodes in /proc/self/fd whose entry in
 * /proc/net/tcp{,6} has `port` as its local port (the listening socket included).
 */
export function brokerSockets(port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed while listing
    }
  }
  let n = 0;
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(`:${hex}`) && inodes.has(cols[9] ?? '')) n++;
    }
  }
  return n;
}

// ------------------------------------------------------------------------------------------------ parent

export interface Attacker {
  /** Opens a wave and resolves when the last of its connections has been attempted. */
  wave(w: AttackWave): Promise<AttackStats>;
  stats(): Promise<AttackStats>;
  /** Closes every connection and ends the process. */
  stop(): Promise<void>;
}

export async function startAttacker(opts: AttackerOptions): Promise<Attacker> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, FLEET_ATTACKER: '1' },
  });
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((msg: Record<string, unknown>) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(JSON.parse(l) as Record<string, unknown>));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ask = (cmd: Record<string, unknown>) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      if (child.exitCode !== null) return reject(new Error('the attacker process has exited'));
      waiting.push(resolve);
      child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  const ready = await ask({ cmd: 'init', opts });
  if (ready.ok !== true) throw new Error(`attacker did not start: ${JSON.stringify(ready)}`);
  return {
    wave: async (w) => (await ask({ cmd: 'wave', wave: w })) as unknown as AttackStats,
    stats: async () => (await ask({ cmd: 'stats' })) as unknown as AttackStats,
    async stop() {
      if (child.exitCode === null) {
        child.stdin!.end();
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

// ------------------------------------------------------------------------------------------------ child

interface Tracked {
  kind: AttackKind;
  at: number;
  closedAt?: number;
  sock: Socket;
}

/** A real ClientHello, as Node's TLS client writes it, captured from a local listener. */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const srv = createServer((s) => {
      s.once('data', (d) => {
        resolve(d);
        s.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      const c = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost' });
      c.on('error', () => {});
      c.on('close', () => c.destroy());
    });
    srv.on('error', reject);
  });
}

async function child(): Promise<void> {
  let o: AttackerOptions | undefined;
  let hello: Buffer = Buffer.alloc(0);
  const all: Tracked[] = [];
  let connectFailed = 0;
  let next = 0;
  const timers = new Set<NodeJS.Timeout>();
  const reply = (m: unknown) => process.stdout.write(`${JSON.stringify(m)}\n`);
  // One context for every storm connection: parsing the CA per connection would make the attacker, not the
  // broker, the bottleneck (and its closes late).
  let ctx: SecureContext | undefined;
  const context = () => {
    ctx ??= createSecureContext({ ca: o!.caPem });
    return ctx;
  };

  const stats = (): AttackStats => {
    const by: Record<string, number[]> = {};
    let closed = 0;
    for (const t of all) {
      if (t.closedAt === undefined) continue;
      closed++;
      const list = by[t.kind] ?? [];
      list.push(t.closedAt - t.at);
      by[t.kind] = list;
    }
    const byKind: Record<string, { opened: number; open: number }> = {};
    for (const t of all) {
      const k = byKind[t.kind] ?? { opened: 0, open: 0 };
      k.opened++;
      if (t.closedAt === undefined) k.open++;
      byKind[t.kind] = k;
    }
    const lifetimeMs: Record<string, { median: number; max: number }> = {};
    for (const [k, v] of Object.entries(by)) {
      v.sort((a, b) => a - b);
      lifetimeMs[k] = { median: Math.round(v[v.length >> 1] ?? 0), max: Math.round(v[v.length - 1] ?? 0) };
    }
    return {
      opened: all.length,
      connectFailed,
      closedByServer: closed,
      open: all.length - closed,
      lifetimeMs,
      byKind,
    };
  };

  const open = (kind: AttackKind, source: string): Promise<void> =>
    new Promise((resolve) => {
      const opts = o!;
      const at = performance.now();
      const sock = netConnect({
        host: opts.host,
        port: opts.port,
        localAddress: source,
        allowHalfOpen: kind === 'halfopen',
      });
      let t: Tracked | undefined;
      const finish = () => {
        if (t && t.closedAt === undefined) t.closedAt = performance.now();
        sock.destroy();
      };
      sock.on('error', () => {
        if (!t) {
          connectFailed++;
          resolve();
        }
        finish();
      });
      // The broker closing its side is what is measured: end (FIN) or close (RST), whichever comes first.
      sock.on('end', finish);
      sock.on('close', () => {
        finish();
        resolve();
      });
      sock.on('connect', () => {
        t = { kind, at, sock };
        all.push(t);
        resolve();
        if (kind === 'trickle') {
          let i = 0;
          const timer = setInterval(() => {
            if (sock.destroyed || i >= hello.length) {
              clearInterval(timer);
              timers.delete(timer);
              return;
            }
            sock.write(hello.subarray(i, i + 1));
            i++;
          }, opts.trickleMs ?? 200);
          timers.add(timer);
        } else if (kind === 'halfopen') {
          sock.end(hello.subarray(0, hello.length >> 1));
        } else if (kind === 'storm' || kind === 'proxy') {
          if (kind === 'proxy') {
            sock.write(`PROXY TCP4 ${opts.claim ?? '198.51.100.1'} 10.0.0.5 40000 8883\r\n`);
          }
          const tls = tlsConnect({ socket: sock, servername: 'localhost', secureContext: context() });
          tls.on('error', () => {});
          tls.on('close', finish);
        }
      });
    });

  const rl = createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    const m = JSON.parse(line) as { cmd: string; opts?: AttackerOptions; wave?: AttackWave };
    if (m.cmd === 'init') {
      o = m.opts!;
      hello = await captureClientHello();
      reply({ ok: true, helloBytes: hello.length });
    } else if (m.cmd === 'wave') {
      const w = m.wave!;
      const gap = 1000 / w.ratePerS;
      const t0 = performance.now();
      const attempts: Promise<void>[] = [];
      for (let i = 0; i < w.count; i++) {
        const due = t0 + i * gap;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const kind = w.kinds[i % w.kinds.length]!;
        const source = o!.sources[next++ % o!.sources.length]!;
        attempts.push(open(kind, source));
      }
      await Promise.all(attempts);
      reply(stats());
    } else if (m.cmd === 'stats') {
      reply(stats());
    }
  });
  rl.on('close', () => {
    for (const t of timers) clearInterval(t);
    for (const t of all) t.sock.destroy();
    process.exit(0);
  });
}

if (process.env.FLEET_ATTACKER === '1' && process.argv[1] === fileURLToPath(import.meta.url)) {
  void child();
}
