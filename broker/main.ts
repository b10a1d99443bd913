/**
 * Starts a broker built by buildBroker() and ties it to the process: SIGHUP reloads the server certificate
 * (sessions stay up). Configuration parsing lives at the top (cli/); nothing here reads process.env.
 */
import { type Broker, type BrokerConfig, type BrokerDeps, buildBroker } from './index.ts';

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
