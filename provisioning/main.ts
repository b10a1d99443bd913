/**
 * The provisioning service's composition root: `fleet provisioning`, or `tsx provisioning/main.ts`
 * (configuration from the environment, like the CLI: FLEET_DATA_DIR, DATABASE_URL, FLEET_API_PORT,
 * FLEET_PUBLIC_PORT, …). It opens the CA made by `fleet init` (it never creates one) and the registry,
 * listens, and stops cleanly on SIGINT/SIGTERM. The first line it logs with event `provisioning_listening`
 * names the ports bound. `startProvisioningService()` starts it on a CA and registry the caller owns
 * (`fleet up` shares them with the broker).
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import {
  caConfigFrom,
  createLogger,
  type FleetConfig,
  keyStoreFor,
  loadConfig,
  paths,
} from '../config/index.ts';
import { loadCa } from '../pki/ca.ts';
import { openRegistry } from '../registry/index.ts';
import { buildProvisioning, type Provisioning, type ProvisioningDeps } from './index.ts';

export interface RunningProvisioning {
  provisioning: Provisioning;
  ports: { apiPort: number; publicPort: number; consolePort?: number };
  stop(): Promise<void>;
}

/** The service started on a CA and registry its caller owns (and closes). */
export interface ProvisioningService {
  readonly name: 'provisioning';
  readonly provisioning: Provisioning;
  readonly ports: { apiPort: number; publicPort: number; consolePort?: number };
  /** Human lines for the banner (addresses). */
  describe(): string[];
  /** Stops both listeners; the registry stays open. */
  stop(): Promise<void>;
}

/** Builds the service from the configuration on the given CA and registry and listens. */
export async function startProvisioningService(
  config: FleetConfig & { readonly listenHost?: string },
  deps: ProvisioningDeps,
): Promise<ProvisioningService> {
  const provisioning = await buildProvisioning(config, deps);
  let ports: ProvisioningService['ports'];
  try {
    ports = await provisioning.listen();
  } catch (e) {
    await provisioning.close();
    throw e;
  }
  return {
    name: 'provisioning',
    provisioning,
    ports,
    describe: () => [
      `  provisioning API (mTLS) https://${config.host}:${ports.apiPort}   (stations, operators, EST)`,
      `  CRL, OCSP, CA certs     http://${config.host}:${ports.publicPort}/crl/device.crl, /ocsp, /ca/root.crt`,
      ...(provisioning.console
        ? [
            `  operator console        ${provisioning.console.url()}   (HTTPS, server certificate from the fleet CA)`,
            `                          sign in: npx fleet console${config.dataDir === join(process.cwd(), 'data') ? '' : ` --data ${config.dataDir}`}  (prints a one-time link)`,
          ]
        : []),
    ],
    stop: () => provisioning.close(),
  };
}

/** The service on its own: opens the CA (never creating one) and the registry, and listens. */
export async function startProvisioning(
  config: FleetConfig & { readonly listenHost?: string },
  logger: Logger = createLogger(config, { service: 'provisioning' }),
): Promise<RunningProvisioning> {
  const { keys } = await keyStoreFor(config);
  const ca = await loadCa(paths(config.dataDir).ca, keys, caConfigFrom(config));
  const registry = await openRegistry({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    logger: logger.child({ part: 'registry' }),
  });
  let service: ProvisioningService;
  try {
    service = await startProvisioningService(config, { ca, registry, logger });
  } catch (e) {
    await registry.close();
    throw e;
  }
  return {
    provisioning: service.provisioning,
    ports: service.ports,
    async stop() {
      await service.stop();
      await registry.close();
    },
  };
}

/** Runs until SIGINT or SIGTERM. */
export async function runProvisioning(config: FleetConfig): Promise<number> {
  const running = await startProvisioning(config);
  process.stderr.write(
    `fleet provisioning: mTLS API on https://${config.host}:${running.ports.apiPort}, ` +
      `CRL/OCSP/CA on http://${config.host}:${running.ports.publicPort}` +
      (running.provisioning.console
        ? `, console on ${running.provisioning.console.url()} (sign in: fleet console)`
        : '') +
      '\n',
  );
  // Listeners that stay while stopping: a second signal (npm and the terminal both pass Ctrl-C on) must
  // not hit Node's default action half-way through the stop and leave the registry lock behind.
  let stopping = false;
  await new Promise<void>((resolve) => {
    const on = (sig: string) => () => {
      if (stopping) process.stderr.write(`fleet provisioning: ${sig} while stopping: already stopping\n`);
      stopping = true;
      resolve();
    };
    process.on('SIGINT', on('SIGINT'));
    process.on('SIGTERM', on('SIGTERM'));
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
  runProvisioning(loadConfig(process.env, { tty: process.stderr.isTTY })).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`fleet provisioning: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
