/**
 * The settings a broker node of a cluster reads (node id, ticket keys, PROXY protocol, REDIS_URL) and
 * `fleet broker`'s start on the embedded default: ticket keys generated once into data/secrets/, so a
 * ticket issued before a restart resumes after it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeTicketKeys,
  ensureTicketKeys,
  readTicketKeys,
  redisCluster,
  redisOptionsFromUrl,
} from '../broker/cluster.ts';
import { startBrokerNode } from '../broker/main.ts';
import { loadConfig, ticketKeysPath } from '../config/index.ts';
import { initDataDir, openRuntime } from '../runtime/index.ts';
import { enroll, rawConnect, silentLogger } from './helpers/broker.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fleet-cluster-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('configuration of a broker node', () => {
  it.each([
    [
      {},
      {
        brokerNodeId: undefined,
        proxyProtocol: false,
        proxyTrustedBalancers: [],
        tlsTicketKeysFile: undefined,
        brokerAdmission: {
          firstByteTimeoutMs: 2000,
          handshakeTimeoutMs: 10_000,
          maxHandshakesPerSource: 32,
          connectRatePerSourcePerS: 50,
        },
      },
    ],
    [{ FLEET_BROKER_NODE_ID: 'broker-1.eu_west' }, { brokerNodeId: 'broker-1.eu_west' }],
    [
      { FLEET_PROXY_PROTOCOL: 'on', FLEET_PROXY_TRUSTED: '10.0.0.7, 10.1.0.0/16,2001:db8::/64' },
      { proxyProtocol: true, proxyTrustedBalancers: ['10.0.0.7', '10.1.0.0/16', '2001:db8::/64'] },
    ],
    [{ FLEET_PROXY_PROTOCOL: 'TRUE', FLEET_PROXY_TRUSTED: '10.0.0.7' }, { proxyProtocol: true }],
    [{ FLEET_PROXY_PROTOCOL: '1', FLEET_PROXY_TRUSTED: '::1' }, { proxyProtocol: true }],
    [
      {
        FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS: '500',
        FLEET_BROKER_HANDSHAKE_TIMEOUT_MS: '5000',
        FLEET_BROKER_MAX_HANDSHAKES_PER_SOURCE: '0',
        FLEET_BROKER_CONNECT_RATE_PER_SOURCE: '200',
      },
      {
        brokerAdmission: {
          firstByteTimeoutMs: 500,
          handshakeTimeoutMs: 5000,
          maxHandshakesPerSource: 0,
          connectRatePerSourcePerS: 200,
        },
      },
    ],
    [{ FLEET_PROXY_PROTOCOL: 'off' }, { proxyProtocol: false }],
    [{ FLEET_PROXY_PROTOCOL: 'no' }, { proxyProtocol: false }],
    [
      { FLEET_TLS_TICKET_KEYS_FILE: '/etc/fleet/ticket-keys' },
      { tlsTicketKeysFile: '/etc/fleet/ticket-keys' },
    ],
    [
      { FLEET_BROKER_CERT_FILE: '/etc/fleet/broker.crt', FLEET_BROKER_KEY_FILE: '/etc/fleet/broker.key' },
      { brokerCertFile: '/etc/fleet/broker.crt', brokerKeyFile: '/etc/fleet/broker.key' },
    ],
    [
      { FLEET_BROKER_SERVER_NAMES: 'mqtt.example.com, 192.0.2.10,2001:db8::1' },
      { brokerServerNames: ['mqtt.example.com', '192.0.2.10', '2001:db8::1'] },
    ],
  ])('reads %j', (env, expected) => {
    expect(loadConfig(env)).toMatchObject(expected);
  });

  it.each([
    [{ FLEET_BROKER_NODE_ID: 'node/1' }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_BROKER_NODE_ID: 'node+' }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_BROKER_NODE_ID: '#' }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_BROKER_NODE_ID: '-leading-dash' }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_BROKER_NODE_ID: 'x'.repeat(65) }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_BROKER_NODE_ID: 'a\u0000b' }, 'FLEET_BROKER_NODE_ID'],
    [{ FLEET_PROXY_PROTOCOL: 'maybe' }, 'FLEET_PROXY_PROTOCOL'],
    [{ FLEET_PROXY_PROTOCOL: 'on' }, 'FLEET_PROXY_TRUSTED'],
    [{ FLEET_PROXY_PROTOCOL: 'on', FLEET_PROXY_TRUSTED: 'haproxy' }, 'FLEET_PROXY_TRUSTED'],
    [{ FLEET_PROXY_PROTOCOL: 'on', FLEET_PROXY_TRUSTED: '10.0.0.0/33' }, 'FLEET_PROXY_TRUSTED'],
    [{ FLEET_PROXY_PROTOCOL: 'on', FLEET_PROXY_TRUSTED: '10.0.0.0/8/1' }, 'FLEET_PROXY_TRUSTED'],
    [{ FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS: '10000' }, 'FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS'],
    [{ FLEET_BROKER_HANDSHAKE_TIMEOUT_MS: '0' }, 'FLEET_BROKER_HANDSHAKE_TIMEOUT_MS'],
    [{ FLEET_BROKER_MAX_HANDSHAKES_PER_SOURCE: '-1' }, 'FLEET_BROKER_MAX_HANDSHAKES_PER_SOURCE'],
    [{ FLEET_BROKER_CONNECT_RATE_PER_SOURCE: '1.5' }, 'FLEET_BROKER_CONNECT_RATE_PER_SOURCE'],
    [{ FLEET_BROKER_CERT_FILE: '/etc/fleet/broker.crt' }, 'FLEET_BROKER_KEY_FILE'],
    [{ FLEET_BROKER_SERVER_NAMES: 'mqtt.example.com,bad name' }, 'FLEET_BROKER_SERVER_NAMES'],
  ])('refuses %j, naming the variable', (env, name) => {
    expect(() => loadConfig(env)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => loadConfig(env)).toThrow(name);
  });
});

describe('TLS ticket keys', () => {
  const keys = randomBytes(48);
  it.each([
    ['48 raw bytes', keys],
    ['96 hex digits', Buffer.from(`${keys.toString('hex')}\n`)],
    ['base64 (openssl rand -base64 48)', Buffer.from(`${keys.toString('base64')}\n`)],
    ['base64url', Buffer.from(keys.toString('base64url'))],
  ])('are read from %s', (_name, raw) => {
    expect(decodeTicketKeys(raw)?.equals(keys)).toBe(true);
  });

  it.each([
    ['32 raw bytes', randomBytes(32)],
    ['base64 of 32 bytes', Buffer.from(randomBytes(32).toString('base64'))],
    ['94 hex digits', Buffer.from(keys.toString('hex').slice(2))],
    ['an empty file', Buffer.alloc(0)],
  ])('are refused from %s', async (_name, raw) => {
    const file = join(dir, `bad-${randomBytes(3).toString('hex')}`);
    await writeFile(file, raw);
    await expect(readTicketKeys(file)).rejects.toMatchObject({
      code: 'BROKER_TICKET_KEYS_INVALID',
    });
  });

  it('are refused with a typed error when the file is missing', async () => {
    await expect(readTicketKeys(join(dir, 'nope'))).rejects.toMatchObject({
      code: 'BROKER_TICKET_KEYS_INVALID',
    });
  });

  it('are generated once (mode 0600) and then read back unchanged', async () => {
    const file = join(dir, 'secrets', 'tls-ticket-keys');
    const first = await ensureTicketKeys(file);
    expect(first.created).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const again = await ensureTicketKeys(file);
    expect(again.created).toBe(false);
    expect(again.keys.equals(first.keys)).toBe(true);
  });
});

describe('REDIS_URL', () => {
  it.each([
    ['redis://127.0.0.1:6380', { host: '127.0.0.1', port: 6380, db: 0 }],
    ['redis://:s%40cret@redis.internal/2', { host: 'redis.internal', port: 6379, db: 2, password: 's@cret' }],
    ['redis://fleet:pw@[::1]:6379', { host: '::1', username: 'fleet', password: 'pw' }],
    ['rediss://redis.example:6380', { host: 'redis.example', tls: { servername: 'redis.example' } }],
  ])('%s gives the connection options', (url, expected) => {
    expect(redisOptionsFromUrl(url)).toMatchObject(expected);
  });

  it.each(['http://127.0.0.1:6379', 'redis://127.0.0.1/x', 'not a url'])('%s is refused', (url) => {
    expect(() => redisOptionsFromUrl(url)).toThrow(
      expect.objectContaining({ code: 'BROKER_REDIS_URL_INVALID' }),
    );
  });

  it('stops start-up with a typed error when Redis does not answer', async () => {
    // A port that accepts TCP and never speaks RESP: ioredis waits, the start-up timeout decides.
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      await expect(
        redisCluster({
          url: `redis://127.0.0.1:${port}`,
          nodeId: 'n1',
          logger: silentLogger(),
          connectTimeoutMs: 300,
        }),
      ).rejects.toMatchObject({ code: 'BROKER_REDIS_UNAVAILABLE' });
    } finally {
      silent.close();
    }
  });
});

describe('fleet broker on the embedded default', () => {
  it('generates ticket keys into data/secrets/, so a ticket from before a restart resumes after it', async () => {
    const data = join(dir, 'embedded');
    const config = loadConfig({ FLEET_DATA_DIR: data, FLEET_MQTT_PORT: '0', FLEET_METRICS_PORT: '0' });
    await initDataDir(config);

    const rt1 = await openRuntime(config);
    rt1.logger.level = 'silent';
    const s1 = await startBrokerNode(config, rt1);
    const port1 = Number(/mqtts:\/\/[^:]+:(\d+)/.exec(s1.describe().join('\n'))![1]);
    expect(s1.describe().join('\n')).toContain('in memory');
    const dev = await enroll(rt1.registry, rt1.ca, 'device', 'dev-restart');
    const first = await rawConnect(port1, rt1.ca, dev);
    expect(first.returnCode).toBe(0);
    await s1.stop();
    await rt1.registry.close();
    const stored = await readFile(ticketKeysPath(data), 'utf8');
    expect(decodeTicketKeys(Buffer.from(stored))).toBeDefined();

    const rt2 = await openRuntime(config);
    rt2.logger.level = 'silent';
    const s2 = await startBrokerNode(config, rt2);
    try {
      const port2 = Number(/mqtts:\/\/[^:]+:(\d+)/.exec(s2.describe().join('\n'))![1]);
      const second = await rawConnect(port2, rt2.ca, dev, { session: first.session! });
      expect(second.reused).toBe(true);
      expect(second.returnCode).toBe(0);
    } finally {
      await s2.stop();
      await rt2.registry.close();
    }
  });
});
