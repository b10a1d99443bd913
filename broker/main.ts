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

export async function runBroker(config: BrokerConfig, deps: BrokerDeps): Promise<RunningBroker> {
  const broker = buildBroker(config, deps);
  const { port, metricsPort } = await broker.start();
  const onHup = () => {
    broker.log.info({ event: 'sighup' }, 'reloading the server certificate');
    broker.reloadCertificate();
  };
  process.on('SIGHUP', onHup);
  return {
    broker,
    port,
    metricsPort,
    async stop() {
      process.off('SIGHUP', onHup);
      await broker.stop();
    },
  };
}
