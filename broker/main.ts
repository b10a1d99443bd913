/**
 * The broker's composition root. `startBrokerNode()` builds a broker node from the parsed configuration
 * (config/) and the CA and registry it is given, and starts it; `runBroker()` starts a broker built by
 * buildBroker() and ties it to the process: SIGHUP reloads the server certificate (sessions stay up).
 * Configuration is parsed at the top (config/, by a `main`); nothing here reads process.env.
 */
import type { Logger } from 'pino';
import { type FleetConfig, ticketKeysPath } from '../config/index.ts';
import type { CertificateAuthority } from '../pki/ca.ts';
import type { Registry } from '../registry/index.ts';
import { ensureTicketKeys, readTicketKeys, redisCluster } from './cluster.ts';
import {
  type Broker,
  type BrokerConfig,
  type BrokerDeps,
  brokerConfig,
  buildBroker,
  DEFAULT_BROKER_CONFIG,
} from './index.ts';
import { fromRegistry } from './registry.ts';

export interface RunningBroker {
  readonly broker: Broker;
  readonly port: number;
  readonly metricsPort: number | undefined;
  stop(): Promise<void>;
}

export interface RunOptions {
  /**
   * Runs after the broker has stopped, and when it fails to start: releases what was made for it, such as
   * the Redis connections of a cluster node (broker/cluster.ts).
   */
  readonly onStopped?: (() => Promise<void>) | undefined;
}

export async function runBroker(
  config: BrokerConfig,
  deps: BrokerDeps,
  opts: RunOptions = {},
): Promise<RunningBroker> {
  let broker: Broker;
  try {
    broker = buildBroker(config, deps);
  } catch (err) {
    await opts.onStopped?.();
    throw err;
  }
  let ports: Awaited<ReturnType<Broker['start']>>;
  try {
    ports = await broker.start();
  } catch (err) {
    // Whatever did start (the change feed subscription, aedes, timers) must not keep the process alive.
    await broker.stop().catch(() => {});
    await opts.onStopped?.();
    throw err;
  }
  const onHup = () => {
    broker.log.info({ event: 'sighup' }, 'reloading the server certificate');
    broker.reloadCertificate();
  };
  process.on('SIGHUP', onHup);
  return {
    broker,
    port: ports.port,
    metricsPort: ports.metricsPort,
    async stop() {
      process.off('SIGHUP', onHup);
      try {
        await broker.stop();
      } finally {
        await opts.onStopped?.();
      }
    },
  };
}

/** What a broker node is started with: the fleet CA, the registry, and the logger it writes to. */
export interface BrokerNodeDeps {
  readonly ca: CertificateAuthority;
  readonly registry: Registry;
  readonly logger: Logger;
}

/** A started broker node, as `fleet up` and `fleet broker` show and stop it. */
export interface BrokerNode {
  readonly name: 'broker';
  readonly running: RunningBroker;
  /** Human lines for the banner (addresses). */
  describe(): string[];
  stop(): Promise<void>;
}

/**
 * A broker node from the configuration. With REDIS_URL it is one node of a cluster: the message bus and
 * sessions in Redis, aedes' connect notices on so a client id that moves to another node is closed here.
 * Without it, everything stays in memory (the embedded default). Either way the TLS ticket keys come from
 * FLEET_TLS_TICKET_KEYS_FILE, or from data/secrets/ (generated once), so tickets survive a restart.
 */
export async function startBrokerNode(c: FleetConfig, deps: BrokerNodeDeps): Promise<BrokerNode> {
  const log = deps.logger.child({ service: 'broker' });
  const ticketFile = c.tlsTicketKeysFile ?? ticketKeysPath(c.dataDir);
  const tickets = c.tlsTicketKeysFile
    ? { keys: await readTicketKeys(ticketFile), created: false }
    : await ensureTicketKeys(ticketFile);
  if (c.redisUrl && !c.tlsTicketKeysFile) {
    log.warn(
      { event: 'tls_ticket_keys_not_shared', file: ticketFile },
      'REDIS_URL is set but FLEET_TLS_TICKET_KEYS_FILE is not: session tickets resume on this node only',
    );
  }
  const nodeId = c.brokerNodeId ?? DEFAULT_BROKER_CONFIG.nodeId;
  const cluster = c.redisUrl ? await redisCluster({ url: c.redisUrl, nodeId, logger: log }) : undefined;
  const config = brokerConfig({
    // One rule for every listener (config/load.ts): FLEET_LISTEN_HOST, default loopback.
    host: c.listenHost,
    port: c.mqttPort,
    nodeId,
    metrics: { port: c.metricsPort, host: c.listenHost },
    policyFile: c.policyFile,
    tls: {
      ticketKeys: tickets.keys,
      firstByteTimeoutMs: c.brokerAdmission.firstByteTimeoutMs,
      handshakeTimeoutMs: c.brokerAdmission.handshakeTimeoutMs,
      serverNames: c.brokerServerNames,
      ...(c.brokerCertFile ? { certFile: c.brokerCertFile, keyFile: c.brokerKeyFile } : {}),
    },
    // aedes closes a client id on the other nodes through these notices: needed once nodes share Redis.
    skipSysConnectNotices: !cluster,
    limits: {
      maxHandshakesPerSource: c.brokerAdmission.maxHandshakesPerSource,
      connectRatePerSourcePerS: c.brokerAdmission.connectRatePerSourcePerS,
      connectBurstPerSource: 2 * c.brokerAdmission.connectRatePerSourcePerS,
    },
    proxyProtocol: c.proxyProtocol,
    proxyTrustedBalancers: c.proxyTrustedBalancers,
  });
  const running = await runBroker(
    config,
    {
      ca: deps.ca,
      registry: fromRegistry(deps.registry),
      logger: log,
      ...(cluster ? { mq: cluster.deps.mq as never, persistence: cluster.deps.persistence as never } : {}),
    },
    { onStopped: cluster ? () => cluster.close() : undefined },
  );
  return {
    name: 'broker',
    running,
    describe: () => [
      `  MQTT broker (mTLS)      mqtts://${c.host}:${running.port}${c.proxyProtocol ? ` (PROXY protocol header required, from ${c.proxyTrustedBalancers.join(', ')} only)` : ''}`,
      `  broker node             ${nodeId}, ${cluster ? 'sessions and message bus in Redis (REDIS_URL)' : 'in memory'}`,
      `  TLS ticket keys         ${ticketFile}${tickets.created ? ' (created)' : ''}`,
      ...(running.metricsPort
        ? [`  metrics (Prometheus)    http://${c.host}:${running.metricsPort}/metrics`]
        : []),
    ],
    stop: () => running.stop(),
  };
}
