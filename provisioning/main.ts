/**
 * Starts the provisioning service: `fleet provisioning`, or `tsx provisioning/main.ts` (configuration from
 * the environment, like the CLI: FLEET_DATA_DIR, DATABASE_URL, FLEET_API_PORT, FLEET_PUBLIC_PORT, …).
 * It opens the CA made by `fleet init` (it never creates one) and the registry, listens, and stops cleanly
 * on SIGINT/SIGTERM. The first line it logs with event `provisioning_listening` names the ports bound.
 */
import { pathToFileURL } from 'node:url';
import pino, { type Logger } from 'pino';
import { caConfigFrom, type FleetConfig, keyStoreFor, loadConfig, paths } from '../config/index.ts';
import { loadCa } from '../pki/ca.ts';
import { openRegistry } from '../registry/index.ts';
import { buildProvisioning, type Provisioning } from './index.ts';

export interface RunningProvisioning {
  provisioning: Provisioning;
  ports: { apiPort: number; publicPort: number };
  stop(): Promise<void>;
}

export async function startProvisioning(
  config: FleetConfig & { readonly listenHost?: string },
  logger: Logger = pino({ level: config.logLevel, base: { service: 'provisioning' } }),
): Promise<RunningProvisioning> {
  const { keys } = await keyStoreFor(config);
  const ca = await loadCa(paths(config.dataDir).ca, keys, caConfigFrom(config));
  const registry = await openRegistry({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    logger: logger.child({ part: 'registry' }),
  });
  let provisioning: Provisioning;
  try {
    provisioning = await buildProvisioning(config, { ca, registry, logger });
  } catch (e) {
    await registry.close();
    throw e;
  }
  let ports: { apiPort: number; publicPort: number };
  try {
    ports = await provisioning.listen();
  } catch (e) {
    await provisioning.close();
    await registry.close();
    throw e;
  }
  return {
    provisioning,
    ports,
    async stop() {
      await provisioning.close();
      await registry.close();
    },
  };
}

/** Runs until SIGINT or SIGTERM. */
export async function runProvisioning(config: FleetConfig): Promise<number> {
  const running = await startProvisioning(config);
  process.stderr.write(
    `fleet provisioning: mTLS API on https://${config.host}:${running.ports.apiPort}, ` +
      `CRL/OCSP/CA on http://${config.host}:${running.ports.publicPort}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // A stop that hangs (a stuck client, an unreachable database) must not keep the process alive.
  setTimeout(() => {
    process.stderr.write('fleet provisioning: stop timed out; exiting\n');
    process.exit(1);
  }, 10_000).unref();
  await running.stop();
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runProvisioning(loadConfig(process.env)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`fleet provisioning: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
