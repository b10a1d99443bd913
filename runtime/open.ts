/**
 * What one Fleet process opens from its data directory: the CA (behind the key store the configuration
 * chooses) and the registry, shared by the services it runs.
 */
import type { Logger } from 'pino';
import { caConfigFrom, createLogger, type FleetConfig, keyStoreFor, paths } from '../config/index.ts';
import { type CertificateAuthority, openCa } from '../pki/ca.ts';
import { openRegistry, type Registry } from '../registry/index.ts';

export interface Runtime {
  config: FleetConfig;
  ca: CertificateAuthority;
  registry: Registry;
  logger: Logger;
}

/** The data directory's CA, opened with the configured key store. */
export async function openLocalCa(config: FleetConfig): Promise<CertificateAuthority> {
  const { keys } = await keyStoreFor(config);
  return (await openCa(paths(config.dataDir).ca, keys, caConfigFrom(config))).ca;
}

/** Runs `fn` on the registry (PostgreSQL with DATABASE_URL, else the data directory's PGlite) and closes it. */
export async function withRegistry<T>(config: FleetConfig, fn: (r: Registry) => Promise<T>): Promise<T> {
  const registry = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    return await fn(registry);
  } finally {
    await registry.close();
  }
}

export async function openRuntime(config: FleetConfig): Promise<Runtime> {
  const ca = await openLocalCa(config);
  // Logs go to stderr so the banner on stdout stays readable: JSON lines, or pretty on a terminal.
  const logger = createLogger(config);
  const registry = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  return { config, ca, registry, logger };
}
