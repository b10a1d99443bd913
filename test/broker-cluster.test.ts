/**
 * Two broker nodes in one process, as production runs several behind a TCP load balancer: one Redis (the
 * message bus and the session store), one registry (PostgreSQL when DATABASE_URL is set: each node and
 * the operator have their own connections, so revocations cross them by LISTEN/NOTIFY), one set of TLS
 * ticket keys. Real Redis, real TLS, real MQTT clients; certificates made now by the project's CA.
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisCluster, redisCluster } from '../broker/cluster.ts';
import type { Registry } from '../registry/index.ts';
import {
  type BrokerFixture,
  brokerFixture,
  closedWithin,
  rawConnect,
  type StartedBroker,
  silentLogger,
} from './helpers/broker.ts';

const REDIS_URL = process.env.REDIS_URL;
const SKIP_REASON = 'skipped: REDIS_URL is not set (CI sets it; locally: eval "$(infra/redis.sh start)")';

/** A started broker with its Redis connections; stop() closes both. */
interface Node extends StartedBroker {
  readonly cluster: RedisCluster;
}

/**
 * A node on the fixture's CA with its own Redis connections and (on PostgreSQL) its own registry
 * connection, as production runs one per process.
 */
async function startNode(
  f: BrokerFixture,
  registry: Registry,
  nodeId: string,
  ticketKeys: Buffer,
): Promise<Node> {
  const logger = silentLogger();
  const cluster = await redisCluster({ url: REDIS_URL!, nodeId, logger });
  const started = await f.start(
    {
      nodeId,
      tls: { ticketKeys, serverNames: [] },
      presence: { flushMs: 50 },
      // Cluster-wide takeover rides on aedes' connect notices.
      skipSysConnectNotices: false,
    },
    {
      registry,
      logger,
      mq: cluster.deps.mq as never,
      persistence: cluster.deps.persistence as never,
    },
  );
  return {
    ...started,
    cluster,
    async stop() {
      await started.stop();
      await cluster.close();
    },
  };
}

/** A unique id per run: the Redis session store outlives a test run. */
const uid = (name: string) => `${name}-${randomBytes(3).toString('hex')}`;

async function eventually<T>(probe: () => Promise<T | undefined>, ms = 3000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(!REDIS_URL)(
  `two broker nodes sharing Redis and the registry${REDIS_URL ? '' : ` (${SKIP_REASON})`}`,
  () => {
    let f: BrokerFixture;
    /** The operator's registry connection (the fixture's); on PostgreSQL each node has its own. */
    let operator: Registry;
    let a: Node;
    let b: Node;
    let nodeB: Registry;
    const ticketKeys = randomBytes(48);
    const clients: MqttClient[] = [];
    const keep = (c: MqttClient) => {
      clients.push(c);
      return c;
    };

    beforeAll(async () => {
      f = await brokerFixture({ prefix: 'fleet-cluster-' });
      operator = f.registry;
      const nodeA = await f.openRegistry();
      nodeB = await f.openRegistry();
      a = await startNode(f, nodeA, 'node-a', ticketKeys);
      b = await startNode(f, nodeB, 'node-b', ticketKeys);
    });

    afterAll(async () => {
      for (const c of clients) c.end(true);
      await a?.stop();
      await b?.stop();
      await f?.cleanup();
    });

    it('a device publishing on node A reaches a service subscribed on node B', async () => {
      const dev = await f.enroll('device', uid('dev-tel'));
      const svc = await f.enroll('service', uid('svc-tel'));
      const service = keep(await b.connect(svc));
      await service.subscribeAsync(`devices/${dev.id}/telemetry/#`, { qos: 1 });
      const got = new Promise<{ topic: string; payload: string }>((resolve) =>
        service.on('message', (topic, payload) => resolve({ topic, payload: payload.toString() })),
      );
      const device = keep(await a.connect(dev));
      await device.publishAsync(`devices/${dev.id}/telemetry/temp`, '{"t":21.5}', { qos: 1 });
      await expect(got).resolves.toEqual({
        topic: `devices/${dev.id}/telemetry/temp`,
        payload: '{"t":21.5}',
      });
    });

    it('the same device connecting to node B takes over its session on node A (A closes its connection)', async () => {
      const dev = await f.enroll('device', uid('dev-move'));
      const first = keep(await a.connect(dev));
      expect(a.broker.sessions.has(`device:${dev.id}`)).toBe(true);
      const closed = closedWithin(first, 3000);
      const second = keep(await b.connect(dev));
      await closed;
      expect(second.connected).toBe(true);
      await eventually(async () => (a.broker.sessions.has(`device:${dev.id}`) ? undefined : true));
      expect(b.broker.sessions.has(`device:${dev.id}`)).toBe(true);
      // The second connection stays: node A's close does not ricochet back to B.
      await new Promise((r) => setTimeout(r, 300));
      expect(second.connected).toBe(true);
    });

    it('a device revoked through the registry is dropped from whichever node holds it', async () => {
      const onA = await f.enroll('device', uid('dev-rev-a'));
      const onB = await f.enroll('device', uid('dev-rev-b'));
      const ca1 = keep(await a.connect(onA));
      const cb1 = keep(await b.connect(onB));
      const closedA = closedWithin(ca1, 2000);
      const closedB = closedWithin(cb1, 2000);
      // The operator's own registry connection: on PostgreSQL the nodes learn it by LISTEN/NOTIFY.
      await f.setStatus('device', onA.id, 'revoked');
      await f.setStatus('device', onB.id, 'revoked');
      await Promise.all([closedA, closedB]);
      // And neither node lets them back in.
      for (const [node, creds] of [
        [a, onA],
        [b, onB],
        [a, onB],
        [b, onA],
      ] as const) {
        const again = await node.tryConnect(creds);
        expect(again).toMatchObject({ outcome: 'connack', code: 5 });
      }
    });

    it.each(['TLSv1.2', 'TLSv1.3'] as const)(
      'a %s session ticket issued by node A resumes on node B (shared ticket keys)',
      async (maxVersion) => {
        const dev = await f.enroll('device', uid('dev-ticket'));
        const first = await rawConnect(a.port, f.ca, dev, { maxVersion });
        expect(first.returnCode).toBe(0);
        expect(first.reused).toBe(false);
        expect(first.session).toBeDefined();
        const second = await rawConnect(b.port, f.ca, dev, { maxVersion, session: first.session! });
        expect(second.reused).toBe(true);
        // Resumed, and still checked at CONNECT.
        expect(second.returnCode).toBe(0);
      },
    );

    it('a ticket resumes on a node started with another command line (fixed TLS session id context)', async () => {
      // Node derives the default session id context from process.argv: machines started from other paths
      // would refuse each other's tickets. Build a node under another argv to show it does not matter.
      const argv = process.argv;
      process.argv = [...argv, '--started-elsewhere'];
      let other: Node;
      try {
        other = await startNode(f, nodeB, 'node-d', ticketKeys);
      } finally {
        process.argv = argv;
      }
      try {
        const dev = await f.enroll('device', uid('dev-ticket-argv'));
        const first = await rawConnect(a.port, f.ca, dev);
        const second = await rawConnect(other.port, f.ca, dev, { session: first.session! });
        expect(second.reused).toBe(true);
        expect(second.returnCode).toBe(0);
      } finally {
        await other.stop();
      }
    });

    it('a ticket from a node with other ticket keys does not resume (the control for the test above)', async () => {
      const other = await startNode(f, nodeB, 'node-c', randomBytes(48));
      try {
        const dev = await f.enroll('device', uid('dev-ticket-x'));
        const first = await rawConnect(a.port, f.ca, dev);
        expect(first.session).toBeDefined();
        const second = await rawConnect(other.port, f.ca, dev, { session: first.session! });
        expect(second.reused).toBe(false);
        expect(second.returnCode).toBe(0);
      } finally {
        await other.stop();
      }
    });

    it('presence names the node that holds the device after it moved', async () => {
      const dev = await f.enroll('device', uid('dev-pres'));
      const first = keep(await a.connect(dev));
      await eventually(async () => {
        const p = (await operator.getDevice(dev.id))?.presence;
        return p?.connected && p.brokerNode === 'node-a' ? p : undefined;
      });
      const closed = closedWithin(first, 3000);
      keep(await b.connect(dev));
      await closed;
      const p = await eventually(async () => {
        const p = (await operator.getDevice(dev.id))?.presence;
        return p?.brokerNode === 'node-b' ? p : undefined;
      });
      expect(p.brokerNode).toBe('node-b');
    });

    // Node A records the taken-over connection's close after node B's connect; presence must follow B.
    it('presence still says connected after a device moved nodes', async () => {
      const dev = await f.enroll('device', uid('dev-pres'));
      const first = keep(await a.connect(dev));
      await eventually(async () => {
        const p = (await operator.getDevice(dev.id))?.presence;
        return p?.connected && p.brokerNode === 'node-a' ? p : undefined;
      });
      const closed = closedWithin(first, 3000);
      keep(await b.connect(dev));
      await closed;
      const p = await eventually(async () => {
        const p = (await operator.getDevice(dev.id))?.presence;
        return p?.brokerNode === 'node-b' ? p : undefined;
      });
      // Let both nodes flush their batches (node A's disconnect comes after node B's connect).
      await new Promise((r) => setTimeout(r, 300));
      const after = (await operator.getDevice(dev.id))?.presence;
      expect({ node: p.brokerNode, connected: after?.connected }).toEqual({
        node: 'node-b',
        connected: true,
      });
    });
  },
);
