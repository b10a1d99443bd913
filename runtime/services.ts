/**
 * The services of one process on one data directory (`fleet up`: provisioning and the broker; `fleet
 * broker`: the broker alone), sharing one CA and one registry. Each service is built and started by its
 * own composition root (provisioning/main.ts, broker/main.ts); this only composes them.
 */
import { startBrokerNode } from '../broker/main.ts';
import type { FleetConfig } from '../config/index.ts';
import { startProvisioningService } from '../provisioning/main.ts';
import { type InitResult, initDataDir } from './init.ts';
import { openRuntime, type Runtime } from './open.ts';
import { asListenFailure, assertPortsFree, type ServiceName } from './ports.ts';

export type { ServiceName } from './ports.ts';

export interface Service {
  name: string;
  /** Human lines for the banner (addresses). */
  describe(): string[];
  stop(): Promise<void>;
}

export interface RunningServices {
  /** What the data directory's bootstrap found or created. */
  init: InitResult;
  runtime: Runtime;
  /** In start order. */
  services: Service[];
  /** Stops the services in reverse order, then closes the registry. */
  stop(): Promise<void>;
}

/**
 * Checks every port is free (before anything is created), initialises the data directory if needed, opens
 * it, and starts `which` on it (provisioning first).
 */
export async function startServices(config: FleetConfig, which: ServiceName[]): Promise<RunningServices> {
  await assertPortsFree(config, which);
  const init = await initDataDir(config);
  const rt = await openRuntime(config);
  const services: Service[] = [];
  const stop = async () => {
    for (const s of [...services].reverse())
      await s.stop().catch((e) => rt.logger.error({ event: 'stop_failed', service: s.name, err: e }));
    await rt.registry.close();
  };
  try {
    if (which.includes('provisioning'))
      services.push(
        await startProvisioningService(config, {
          ca: rt.ca,
          registry: rt.registry,
          // `service`, not `part`: provisioning's own parts (crl, ocsp) add `part` below it.
          logger: rt.logger.child({ service: 'provisioning' }),
        }),
      );
    if (which.includes('broker')) services.push(await startBrokerNode(config, rt));
  } catch (e) {
    await stop();
    throw asListenFailure(e, config, which);
  }
  return { init, runtime: rt, services, stop };
}
