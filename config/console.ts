/**
 * The operator console's settings (FLEET_CONSOLE_*), parsed once with the rest of the configuration
 * (load.ts) into a frozen object and handed to provisioning, which serves the console (console/).
 */
import { resolve } from 'node:path';
import { ConfigError } from './errors.ts';

export interface ConsoleConfig {
  /** FLEET_CONSOLE=off switches it off (default on). */
  readonly enabled: boolean;
  /** HTTPS port of the console (FLEET_CONSOLE_PORT, default 8444). */
  readonly port: number;
  /** Base of the sign-in links `fleet console` prints (FLEET_CONSOLE_URL; default https://<FLEET_HOST>:<port>). */
  readonly publicUrl: string | undefined;
  /** A sign-in link's life (FLEET_CONSOLE_LINK_MINUTES, default 10). */
  readonly linkTtlSeconds: number;
  /** A session's absolute life (FLEET_CONSOLE_SESSION_HOURS, default 8: a shift). */
  readonly sessionTtlSeconds: number;
  /** A session ends after this long without a request (FLEET_CONSOLE_IDLE_MINUTES, default 30). */
  readonly idleSeconds: number;
  /**
   * The broker nodes' Prometheus endpoints the overview reads connects and refusals from
   * (FLEET_CONSOLE_BROKER_METRICS, comma-separated; default the local broker's).
   */
  readonly brokerMetrics: readonly string[];
  /** A certificate the operators' browsers trust (FLEET_CONSOLE_CERT_FILE / _KEY_FILE); default one issued by the infrastructure CA. */
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
  /** Connection history kept (FLEET_PRESENCE_HISTORY_DAYS, default 30). */
  readonly historyDays: number;
}

type Env = Record<string, string | undefined>;

function positive(env: Env, name: string, dflt: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > max)
    throw new ConfigError(`${name} must be a number above 0 and at most ${max}`, { name });
  return n;
}

export function loadConsoleConfig(env: Env, base: { host: string; metricsPort: number }): ConsoleConfig {
  const switchedOff = ['off', '0', 'false', 'no'].includes((env.FLEET_CONSOLE ?? '').trim().toLowerCase());
  const rawPort = env.FLEET_CONSOLE_PORT;
  const port = rawPort === undefined || rawPort === '' ? 8444 : Number(rawPort);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError('FLEET_CONSOLE_PORT must be a port number (0-65535)', {
      name: 'FLEET_CONSOLE_PORT',
    });
  const publicUrl = env.FLEET_CONSOLE_URL || undefined;
  if (publicUrl && !/^https:\/\/[^\s/?#]+(:\d+)?\/?$/.test(publicUrl))
    throw new ConfigError('FLEET_CONSOLE_URL must be an https:// origin', { name: 'FLEET_CONSOLE_URL' });
  const brokerMetrics = (
    env.FLEET_CONSOLE_BROKER_METRICS ?? `http://${base.host}:${base.metricsPort}/metrics`
  )
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '' && u !== 'off');
  for (const u of brokerMetrics) {
    if (!/^https?:\/\/[^\s]+$/.test(u))
      throw new ConfigError(`FLEET_CONSOLE_BROKER_METRICS: ${u} is not a URL`, {
        name: 'FLEET_CONSOLE_BROKER_METRICS',
      });
  }
  const certFile = env.FLEET_CONSOLE_CERT_FILE ? resolve(env.FLEET_CONSOLE_CERT_FILE) : undefined;
  const keyFile = env.FLEET_CONSOLE_KEY_FILE ? resolve(env.FLEET_CONSOLE_KEY_FILE) : undefined;
  if (Boolean(certFile) !== Boolean(keyFile))
    throw new ConfigError('FLEET_CONSOLE_CERT_FILE and FLEET_CONSOLE_KEY_FILE go together', {
      name: 'FLEET_CONSOLE_CERT_FILE',
    });
  return Object.freeze({
    enabled: !switchedOff,
    port,
    publicUrl: publicUrl?.replace(/\/$/, ''),
    linkTtlSeconds: Math.round(positive(env, 'FLEET_CONSOLE_LINK_MINUTES', 10, 24 * 60) * 60),
    sessionTtlSeconds: Math.round(positive(env, 'FLEET_CONSOLE_SESSION_HOURS', 8, 24 * 30) * 3600),
    idleSeconds: Math.round(positive(env, 'FLEET_CONSOLE_IDLE_MINUTES', 30, 24 * 60) * 60),
    brokerMetrics: Object.freeze(brokerMetrics),
    certFile,
    keyFile,
    historyDays: positive(env, 'FLEET_PRESENCE_HISTORY_DAYS', 30, 3650),
  });
}

/** Defaults for tests and embedders (no environment). */
export function consoleConfig(over: Partial<ConsoleConfig> = {}): ConsoleConfig {
  return Object.freeze({ ...loadConsoleConfig({}, { host: 'localhost', metricsPort: 9464 }), ...over });
}
