/**
 * How the operator commands (`fleet device|station|service|operator|audit|expiring`) reach the
 * provisioning API: with the operator certificate `fleet init` made (data/operator/admin.{crt,key}.pem),
 * trusting only the fleet root, so the CLI works the same against the embedded default and a remote
 * deployment, and every action is authorised and audited by the service under the operator's identity.
 *
 * Where the API is: FLEET_API_URL when the configuration carries it (`apiUrl`), else
 * https://<FLEET_HOST>:<FLEET_API_PORT>. When nothing listens there:
 *   - for the implicit local address (the embedded default with the service not running), the command
 *     starts the same service in-process on a loopback port for the one call, against the data directory,
 *     and says so on stderr: same code path, same authorisation, same audit, no second way to write;
 *   - for an explicit FLEET_API_URL it fails (API_UNREACHABLE): silently acting on a local database when
 *     a remote deployment was meant would be worse than failing.
 * `--local` forces the in-process service; `--remote` forbids it.
 */
import type { FleetConfig } from '../config/load.ts';
import { paths } from '../config/paths.ts';
import { FleetError } from '../pki/errors.ts';
import { isUnreachable, ProvisioningClient } from '../provisioning/client.ts';
import { RegistryError } from '../registry/errors.ts';
import type { Values } from './args.ts';
import type { CommandContext } from './command.ts';

// biome-ignore lint/suspicious/noExplicitAny: JSON answers
export type Json = any;

function apiUrlOf(config: FleetConfig): { url: string; explicit: boolean } {
  const explicit = config.apiUrl;
  if (explicit) return { url: explicit.replace(/\/$/, ''), explicit: true };
  return { url: `https://${config.host}:${config.apiPort}`, explicit: false };
}

function operatorFiles(config: FleetConfig) {
  const p = paths(config.dataDir);
  return { cert: p.operatorCert, key: p.operatorKey, ca: p.rootCert };
}

/**
 * REGISTRY_LOCKED when no provisioning service answers but something holds the embedded registry (a
 * `fleet broker` alone, a `fleet sim` enrolling locally): the same code, with what to do about it.
 */
export function whyLocked(e: unknown, url: string): unknown {
  if (!(e instanceof FleetError) || e.code !== 'REGISTRY_LOCKED') return e;
  const pid = (e.details as { pid?: number } | undefined)?.pid;
  return new RegistryError(
    'REGISTRY_LOCKED',
    `no provisioning service answers at ${url}, and the embedded registry is in use by process ${pid ?? '?'} ` +
      '(a `fleet broker` alone?); run this while `fleet up` or `fleet provisioning` runs on this data ' +
      'directory, or stop that process',
    { details: e.details, cause: e },
  );
}

/** Runs `fn` against the API (see the module comment for where and the in-process fallback). */
export async function withApi<T>(
  ctx: CommandContext,
  values: Values,
  fn: (api: ProvisioningClient) => Promise<T>,
): Promise<T> {
  const { url, explicit } = apiUrlOf(ctx.config);
  const files = operatorFiles(ctx.config);
  if (!values['local']) {
    const api = await ProvisioningClient.fromFiles(url, files);
    try {
      return await fn(api);
    } catch (e) {
      // Only "nothing listens": a TLS or HTTP failure from something that does listen is reported as is.
      const refused =
        isUnreachable(e) && (e as { details?: { reason?: string } }).details?.reason === 'ECONNREFUSED';
      if (!refused || explicit || values['remote']) throw e;
    } finally {
      await api.close();
    }
  }
  ctx.err.write(
    `fleet: the provisioning service is not running at ${url}; running it in-process for this command\n`,
  );
  // Loaded only here: an operator command against a running service never loads the service's code.
  const [{ startProvisioning }, { createLogger }] = await Promise.all([
    import('../provisioning/main.ts'),
    import('../config/log.ts'),
  ]);
  let running: Awaited<ReturnType<typeof startProvisioning>>;
  try {
    running = await startProvisioning(
      // No console for a one-call service: nothing would sign in to it.
      { ...ctx.config, apiPort: 0, publicPort: 0, listenHost: '127.0.0.1', console: undefined },
      createLogger({ ...ctx.config, logLevel: 'warn' }, { service: 'provisioning' }),
    );
  } catch (e) {
    throw whyLocked(e, url);
  }
  const api = await ProvisioningClient.fromFiles(`https://127.0.0.1:${running.ports.apiPort}`, files);
  try {
    return await fn(api);
  } finally {
    await api.close();
    await running.stop();
  }
}
