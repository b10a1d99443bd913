/**
 * What several broker nodes share: the message bus and the session store in Redis (mqemitter-redis and
 * aedes-persistence-redis, handed to buildBroker() as deps.mq and deps.persistence), and the TLS session
 * ticket keys, so a ticket issued by one node resumes on any other.
 *
 * A device's publish on node A reaches a subscriber on node B through Redis pub/sub. aedes announces each
 * new connection on `$SYS/<node>/new/clients`; every other node closes its own connection with that client
 * id, so the newest connection takes over cluster-wide [MQTT-3.1.4-2]: keep those notices on
 * (BrokerConfig.skipSysConnectNotices false). Revocations need nothing here: every node follows the
 * registry's change feed (PostgreSQL LISTEN/NOTIFY) itself.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { Redis, RedisOptions } from 'ioredis';
import mqemitterRedis from 'mqemitter-redis';
import type { Logger } from 'pino';
import { ClusterError } from './errors.ts';

// ------------------------------------------------------------------------------------------ TLS ticket keys

/** Node's ticket key block: 16 bytes key name, 16 bytes HMAC secret, 16 bytes AES key. */
export const TICKET_KEYS_BYTES = 48;

/**
 * Reads a ticket key file: exactly 48 raw bytes, or text holding them as hex (96 digits) or base64. Text is
 * what `generateTicketKeys` writes and what fits a Kubernetes secret or a systemd credential.
 */
export async function readTicketKeys(file: string): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (cause) {
    throw new ClusterError('BROKER_TICKET_KEYS_INVALID', `TLS ticket key file ${file} cannot be read`, cause);
  }
  const keys = decodeTicketKeys(raw);
  if (!keys) {
    throw new ClusterError(
      'BROKER_TICKET_KEYS_INVALID',
      `TLS ticket key file ${file} must hold ${TICKET_KEYS_BYTES} bytes (raw, hex or base64); ` +
        'make one with: openssl rand -base64 48',
    );
  }
  return keys;
}

export function decodeTicketKeys(raw: Buffer): Buffer | undefined {
  if (raw.length === TICKET_KEYS_BYTES) return Buffer.from(raw);
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{96}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    const b = Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
    if (b.length === TICKET_KEYS_BYTES) return b;
  }
  return undefined;
}

/**
 * The ticket keys at `file`, created (48 random bytes, base64, mode 0600) when it does not exist yet: the
 * embedded default keeps them in data/secrets/ so tickets survive a restart. Every node of a cluster must
 * read the same file (FLEET_TLS_TICKET_KEYS_FILE).
 */
export async function ensureTicketKeys(file: string): Promise<{ keys: Buffer; created: boolean }> {
  try {
    return { keys: await readTicketKeys(file), created: false };
  } catch (e) {
    const cause = (e as { cause?: NodeJS.ErrnoException }).cause;
    if (cause?.code !== 'ENOENT') throw e;
  }
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const keys = randomBytes(TICKET_KEYS_BYTES);
  try {
    await writeFile(file, `${keys.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    // Another process created it first: use theirs.
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      return { keys: await readTicketKeys(file), created: false };
    throw e;
  }
  await chmod(file, 0o600);
  return { keys, created: true };
}

// ------------------------------------------------------------------------------------------ Redis

/** ioredis options from a redis:// or rediss:// URL (user, password, host, port, /db). */
export function redisOptionsFromUrl(url: string): RedisOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch (cause) {
    throw new ClusterError('BROKER_REDIS_URL_INVALID', 'REDIS_URL is not a URL', cause);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new ClusterError('BROKER_REDIS_URL_INVALID', 'REDIS_URL must start with redis:// or rediss://');
  }
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) {
    throw new ClusterError('BROKER_REDIS_URL_INVALID', 'REDIS_URL database (the path) must be a number');
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  return {
    host,
    port: u.port ? Number(u.port) : 6379,
    db,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    // rediss://: TLS with the system trust store (NODE_EXTRA_CA_CERTS for a private CA); never unverified.
    ...(u.protocol === 'rediss:' ? { tls: { servername: host } } : {}),
  };
}

type AedesPersistenceRedis = {
  setup(broker: unknown): Promise<void>;
  destroy(cb?: () => void): Promise<void> | undefined;
};
type PersistenceFactory = (opts: RedisOptions & { maxSessionDelivery?: number }) => AedesPersistenceRedis;

export interface RedisClusterOptions {
  readonly url: string;
  /** This node's id: named in Redis' CLIENT LIST, so an operator sees which node holds which connection. */
  readonly nodeId: string;
  readonly logger: Logger;
  /** How long start-up waits for Redis before giving up (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** Queued QoS 1/2 messages delivered to a persistent session on reconnect (aedes-persistence-redis). */
  readonly maxSessionDelivery?: number;
}

export interface RedisCluster {
  /** For buildBroker(): deps.mq and deps.persistence. */
  readonly deps: { readonly mq: unknown; readonly persistence: unknown };
  /** Call after the broker has stopped (aedes closes the mq; the persistence is released here). */
  close(): Promise<void>;
}

const requireCjs = createRequire(import.meta.url);

/**
 * The Redis-backed message bus and persistence for one broker node. Resolves once Redis answers, so a
 * wrong REDIS_URL stops start-up with a clear error instead of a broker that never delivers.
 */
export async function redisCluster(o: RedisClusterOptions): Promise<RedisCluster> {
  const base = redisOptionsFromUrl(o.url);
  const log = o.logger;
  const named = (role: string): RedisOptions => ({
    ...base,
    connectionName: `fleet-broker:${o.nodeId}:${role}`,
  });
  const mq = mqemitterRedis({ ...named('mq'), matchEmptyLevels: true } as never) as unknown as {
    pubConn: Redis;
    subConn: Redis;
    close(cb: () => void): void;
  };
  let lastError = '';
  for (const [role, conn] of [
    ['mq_pub', mq.pubConn],
    ['mq_sub', mq.subConn],
  ] as const) {
    conn.on('error', (err: Error) => {
      // ioredis reconnects by itself; log each distinct failure once, not every retry.
      if (err.message === lastError) return;
      lastError = err.message;
      log.error({ event: 'redis_error', role, err: err.message }, 'Redis connection error');
    });
    conn.on('ready', () => {
      lastError = '';
      log.info({ event: 'redis_ready', role });
    });
  }
  const closeMq = () => new Promise<void>((resolve) => mq.close(() => resolve()));
  try {
    await withTimeout(mq.pubConn.ping(), o.connectTimeoutMs ?? 10_000);
  } catch (cause) {
    mq.pubConn.disconnect();
    mq.subConn.disconnect();
    throw new ClusterError(
      'BROKER_REDIS_UNAVAILABLE',
      `Redis at ${base.host}:${base.port} did not answer`,
      cause,
    );
  }
  const persistenceRedis = requireCjs('aedes-persistence-redis') as PersistenceFactory;
  const persistence = persistenceRedis({
    ...named('persistence'),
    ...(o.maxSessionDelivery ? { maxSessionDelivery: o.maxSessionDelivery } : {}),
  });
  let closed = false;
  return {
    deps: { mq, persistence },
    async close() {
      if (closed) return;
      closed = true;
      // aedes.close() closed the mq already (closing twice is a no-op); release the persistence's link.
      await closeMq();
      try {
        await persistence.destroy();
      } catch (err) {
        log.debug({ event: 'redis_persistence_close_failed', err: (err as Error).message });
      }
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
