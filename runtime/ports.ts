/**
 * Before a Fleet process creates or opens anything: every port it will listen on must be free. A busy port
 * is refused at once with the variable to change, instead of failing after a new CA was made or with
 * Node's EADDRINUSE stack trace. The check binds and releases each port on the listen address; a race with
 * another process between the check and the real listen is still caught there (listenFailure()).
 */
import { createServer } from 'node:net';
import type { FleetConfig } from '../config/index.ts';
import { RuntimeError } from './errors.ts';

export type ServiceName = 'broker' | 'provisioning';

interface PortUse {
  variable: string;
  port: number;
  what: string;
}

/** The ports the services will listen on, with the variable that sets each. Port 0 (any free one) is left out. */
export function portsOf(config: FleetConfig, which: readonly ServiceName[]): PortUse[] {
  const uses: PortUse[] = [];
  if (which.includes('provisioning')) {
    uses.push(
      { variable: 'FLEET_API_PORT', port: config.apiPort, what: 'the provisioning API' },
      { variable: 'FLEET_PUBLIC_PORT', port: config.publicPort, what: 'CRL/OCSP (public HTTP)' },
    );
    if (config.console)
      uses.push({ variable: 'FLEET_CONSOLE_PORT', port: config.console.port, what: 'the operator console' });
  }
  if (which.includes('broker'))
    uses.push(
      { variable: 'FLEET_MQTT_PORT', port: config.mqttPort, what: 'the MQTT broker' },
      { variable: 'FLEET_METRICS_PORT', port: config.metricsPort, what: 'the metrics endpoint' },
    );
  return uses.filter((u) => u.port !== 0);
}

/** The typed error for a failed listen, naming the variable behind the port. */
export function listenFailure(err: NodeJS.ErrnoException, use: PortUse, host: string): RuntimeError {
  const details = { variable: use.variable, port: use.port, host, reason: err.code };
  if (err.code === 'EADDRINUSE')
    return new RuntimeError(
      'PORT_IN_USE',
      `port ${use.port} for ${use.what} is in use on ${host} (another process, or a Fleet already running); ` +
        `stop it, or choose another port with ${use.variable}, e.g. ${use.variable}=${use.port + 10000}`,
      details,
      err,
    );
  if (err.code === 'EACCES')
    return new RuntimeError(
      'LISTEN_FAILED',
      `port ${use.port} for ${use.what} needs privileges here; choose a port above 1023 with ${use.variable}`,
      details,
      err,
    );
  return new RuntimeError(
    'LISTEN_FAILED',
    `cannot listen on ${host} port ${use.port} for ${use.what} (${err.code ?? err.message}); ` +
      `check FLEET_LISTEN_HOST (an address of this machine, 0.0.0.0 or ::) and ${use.variable}`,
    { ...details, variable: 'FLEET_LISTEN_HOST' },
    err,
  );
}

function tryListen(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (e) => resolve(e as NodeJS.ErrnoException));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}

/** Refuses (PORT_IN_USE, PORT_CONFLICT, LISTEN_FAILED) unless every port `which` needs is free. */
export async function assertPortsFree(config: FleetConfig, which: readonly ServiceName[]): Promise<void> {
  const uses = portsOf(config, which);
  const seen = new Map<number, PortUse>();
  for (const u of uses) {
    const other = seen.get(u.port);
    if (other)
      throw new RuntimeError(
        'PORT_CONFLICT',
        `${other.variable} and ${u.variable} are both ${u.port}; give each service its own port`,
        { variable: u.variable, port: u.port, other: other.variable },
      );
    seen.set(u.port, u);
  }
  for (const u of uses) {
    const err = await tryListen(config.listenHost, u.port);
    if (err) throw listenFailure(err, u, config.listenHost);
  }
}

/** A listen error from a service start, as the typed error naming its variable (others unchanged). */
export function asListenFailure(e: unknown, config: FleetConfig, which: readonly ServiceName[]): unknown {
  const err = e as NodeJS.ErrnoException & { port?: number };
  if (err?.syscall !== 'listen' || typeof err.port !== 'number') return e;
  const use = portsOf(config, which).find((u) => u.port === err.port);
  return use ? listenFailure(err, use, config.listenHost) : e;
}
