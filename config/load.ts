/**
 * Configuration, parsed once from the environment and flags into a frozen, typed object at the top (a
 * `main`: cli/main.ts, provisioning/main.ts) and passed down. Nothing below a `main` reads process.env.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';

import type { KeyAlgorithm } from '../pki/keystore.ts';
import { type ConsoleConfig, loadConsoleConfig } from './console.ts';
import { ConfigError } from './errors.ts';

export interface FleetConfig {
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  readonly redisUrl: string | undefined;
  /** Explicit CA passphrase (FLEET_CA_PASSPHRASE) or a file holding it (FLEET_CA_PASSPHRASE_FILE). */
  readonly caPassphrase: string | undefined;
  readonly caPassphraseFile: string | undefined;
  readonly organization: string;
  readonly caAlgorithm: KeyAlgorithm;
  readonly publicBaseUrl: string;
  readonly deviceValidityDays: number;
  /**
   * How long a certificate superseded by a re-enrollment stays usable when its successor does not connect
   * first (FLEET_ROTATION_GRACE_HOURS, default 24; 0 retires it at once): registry/rotation.ts.
   */
  readonly rotationGraceHours: number;
  /** The name clients dial (FLEET_HOST, default localhost): in URLs, certificates and the banner. */
  readonly host: string;
  /**
   * Where every listener binds (API, public HTTP, MQTT, metrics): FLEET_LISTEN_HOST, else FLEET_HOST, else
   * `localhost`, i.e. loopback only. `0.0.0.0` or `::` accepts other machines (containers, production).
   */
  readonly listenHost: string;
  readonly apiPort: number;
  readonly publicPort: number;
  readonly mqttPort: number;
  readonly metricsPort: number;
  readonly brokerUrl: string;
  /** The provisioning API the CLI's operator commands use; undefined = the local one (FLEET_HOST:FLEET_API_PORT). */
  readonly apiUrl: string | undefined;
  readonly logLevel: string;
  /**
   * Log lines (stderr): `json` for machines, `pretty` for a person at a terminal (short lines, the banner's
   * start-up events left out). FLEET_LOG_FORMAT; default pretty when stderr is a terminal, else json.
   */
  readonly logFormat: 'json' | 'pretty';
  /** The broker's MQTT topic policy (FLEET_POLICY_FILE; default broker/default-policy.yaml). */
  readonly policyFile: string | undefined;
  readonly json: boolean;
  /** This broker node's id in presence, logs and the Redis bus (FLEET_BROKER_NODE_ID; default: the host name). */
  readonly brokerNodeId: string | undefined;
  /** 48-byte TLS ticket keys shared by every broker node (FLEET_TLS_TICKET_KEYS_FILE; default: generated in data/secrets/). */
  readonly tlsTicketKeysFile: string | undefined;
  /** Require a PROXY protocol v1/v2 header on every MQTT connection (FLEET_PROXY_PROTOCOL; behind HAProxy send-proxy-v2). */
  readonly proxyProtocol: boolean;
  /**
   * The balancers allowed to connect when the PROXY protocol is on, whose headers are believed
   * (FLEET_PROXY_TRUSTED: addresses and CIDR blocks, comma-separated; required with FLEET_PROXY_PROTOCOL=on).
   */
  readonly proxyTrustedBalancers: readonly string[];
  /**
   * Admission of MQTT connections (broker/tls-admission.ts): the time to the first TLS byte and to the end
   * of the handshake, and per source (an IPv4 address, an IPv6 /64) the handshakes in flight and the
   * connect rate (0 disables either; its burst is twice the rate).
   */
  readonly brokerAdmission: {
    readonly firstByteTimeoutMs: number;
    readonly handshakeTimeoutMs: number;
    readonly maxHandshakesPerSource: number;
    readonly connectRatePerSourcePerS: number;
  };
  /**
   * The broker's TLS chain (certificate + issuing CA) and key (FLEET_BROKER_CERT_FILE, FLEET_BROKER_KEY_FILE),
   * reloaded on SIGHUP and when they change; when absent one is issued at start by the infrastructure CA.
   */
  readonly brokerCertFile: string | undefined;
  readonly brokerKeyFile: string | undefined;
  /** Extra names for an issued broker certificate: the name devices dial, e.g. the load balancer's (FLEET_BROKER_SERVER_NAMES, comma-separated). */
  readonly brokerServerNames: readonly string[];
  /** The operator console provisioning serves (FLEET_CONSOLE_*; console/config.ts); undefined = none. */
  readonly console: ConsoleConfig | undefined;
}

function port(env: Record<string, string | undefined>, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new ConfigError(`${name} must be a port number (0-65535), got ${JSON.stringify(raw)}`, { name });
  return n;
}

function positiveInt(env: Record<string, string | undefined>, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0)
    throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`, { name });
  return n;
}

function nonNegativeInt(env: Record<string, string | undefined>, name: string, dflt: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0)
    throw new ConfigError(`${name} must be 0 or a positive integer, got ${JSON.stringify(raw)}`, { name });
  return n;
}

/** FLEET_PROXY_TRUSTED: IPv4/IPv6 addresses and CIDR blocks, comma-separated. */
function trustedBalancers(env: Record<string, string | undefined>, proxyProtocol: boolean): string[] {
  const name = 'FLEET_PROXY_TRUSTED';
  const entries = (env[name] ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  for (const e of entries) {
    const [addr = '', bits, extra] = e.split('/');
    const v = isIP(addr);
    const max = v === 4 ? 32 : 128;
    const ok =
      v !== 0 &&
      extra === undefined &&
      (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= max));
    if (!ok)
      throw new ConfigError(
        `${name}: ${JSON.stringify(e)} is not an IP address or CIDR block (10.0.0.0/24)`,
        {
          name,
        },
      );
  }
  // Fail closed: a PROXY header believed from anyone lets anyone claim any address.
  if (proxyProtocol && entries.length === 0)
    throw new ConfigError(
      `FLEET_PROXY_PROTOCOL=on needs ${name}: the balancers' addresses (only they may connect and send a header)`,
      { name },
    );
  return entries;
}

/** Hours from 0 to `max`, fractions allowed (0.5 = 30 minutes). */
function hours(env: Record<string, string | undefined>, name: string, dflt: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || n > max)
    throw new ConfigError(`${name} must be a number of hours from 0 to ${max}, got ${JSON.stringify(raw)}`, {
      name,
    });
  return n;
}

function flag(env: Record<string, string | undefined>, name: string, dflt: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'on', 'yes'].includes(v)) return true;
  if (['0', 'false', 'off', 'no'].includes(v)) return false;
  throw new ConfigError(`${name} must be on or off (1/0, true/false, yes/no), got ${JSON.stringify(raw)}`, {
    name,
  });
}

/** The shape of every fleet id (design.md), so a node id is safe in `$SYS/<node>/…` topics and Redis keys. */
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface ConfigFlags {
  data?: string;
  json?: boolean;
  /** Whether stderr is a terminal (the default log format follows it). */
  tty?: boolean;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function loadConfig(env: Record<string, string | undefined>, flags: ConfigFlags = {}): FleetConfig {
  const alg = env.FLEET_CA_ALGORITHM ?? 'P-256';
  if (alg !== 'P-256' && alg !== 'P-384')
    throw new ConfigError(`FLEET_CA_ALGORITHM must be P-256 or P-384, got ${JSON.stringify(alg)}`);
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl))
    throw new ConfigError('DATABASE_URL must be a postgres:// URL');
  const redisUrl = env.REDIS_URL || undefined;
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) throw new ConfigError('REDIS_URL must be a redis:// URL');
  const publicPort = port(env, 'FLEET_PUBLIC_PORT', 8080);
  const mqttPort = port(env, 'FLEET_MQTT_PORT', 8883);
  const host = env.FLEET_HOST || 'localhost';
  const publicBaseUrl = (env.FLEET_PUBLIC_URL || `http://${host}:${publicPort}`).replace(/\/$/, '');
  if (!/^https?:\/\/[^\s]+$/.test(publicBaseUrl))
    throw new ConfigError('FLEET_PUBLIC_URL must be an http(s) URL');
  const organization = env.FLEET_ORG || 'Fleet';
  if (organization.length > 64 || /[\u0000-\u001f\u007f]/.test(organization))
    throw new ConfigError('FLEET_ORG must be 1-64 printable characters');
  const brokerNodeId = env.FLEET_BROKER_NODE_ID || undefined;
  if (brokerNodeId !== undefined && !NODE_ID.test(brokerNodeId))
    throw new ConfigError(
      'FLEET_BROKER_NODE_ID must be 1-64 characters: letters, digits, ".", "_" or "-", starting with a letter or digit',
      { name: 'FLEET_BROKER_NODE_ID' },
    );
  const brokerCertFile = env.FLEET_BROKER_CERT_FILE ? resolve(env.FLEET_BROKER_CERT_FILE) : undefined;
  const brokerKeyFile = env.FLEET_BROKER_KEY_FILE ? resolve(env.FLEET_BROKER_KEY_FILE) : undefined;
  if (Boolean(brokerCertFile) !== Boolean(brokerKeyFile))
    throw new ConfigError('FLEET_BROKER_CERT_FILE and FLEET_BROKER_KEY_FILE go together');
  const brokerServerNames = (env.FLEET_BROKER_SERVER_NAMES ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  for (const n of brokerServerNames) {
    if (!/^[A-Za-z0-9.:-]{1,253}$/.test(n))
      throw new ConfigError(
        `FLEET_BROKER_SERVER_NAMES: ${JSON.stringify(n)} is not a DNS name or IP address`,
        {
          name: 'FLEET_BROKER_SERVER_NAMES',
        },
      );
  }
  const listenHost = env.FLEET_LISTEN_HOST || env.FLEET_HOST || 'localhost';
  if (!/^[A-Za-z0-9.:-]{1,253}$/.test(listenHost))
    throw new ConfigError(
      `FLEET_LISTEN_HOST must be a host name or an IP address (0.0.0.0 or :: for every interface), got ${JSON.stringify(listenHost)}`,
      { name: 'FLEET_LISTEN_HOST' },
    );
  const logFormat = env.FLEET_LOG_FORMAT || (flags.tty ? 'pretty' : 'json');
  if (logFormat !== 'json' && logFormat !== 'pretty')
    throw new ConfigError(`FLEET_LOG_FORMAT must be json or pretty, got ${JSON.stringify(logFormat)}`, {
      name: 'FLEET_LOG_FORMAT',
    });
  const logLevel = env.FLEET_LOG_LEVEL || 'info';
  if (!LOG_LEVELS.includes(logLevel))
    throw new ConfigError(
      `FLEET_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`,
      {
        name: 'FLEET_LOG_LEVEL',
      },
    );
  const proxyProtocol = flag(env, 'FLEET_PROXY_PROTOCOL', false);
  const brokerAdmission = Object.freeze({
    firstByteTimeoutMs: positiveInt(env, 'FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS', 2_000),
    handshakeTimeoutMs: positiveInt(env, 'FLEET_BROKER_HANDSHAKE_TIMEOUT_MS', 10_000),
    maxHandshakesPerSource: nonNegativeInt(env, 'FLEET_BROKER_MAX_HANDSHAKES_PER_SOURCE', 32),
    connectRatePerSourcePerS: nonNegativeInt(env, 'FLEET_BROKER_CONNECT_RATE_PER_SOURCE', 50),
  });
  if (brokerAdmission.firstByteTimeoutMs >= brokerAdmission.handshakeTimeoutMs)
    throw new ConfigError(
      'FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS must be below FLEET_BROKER_HANDSHAKE_TIMEOUT_MS (a connection gets far less time to start than to finish a handshake)',
      { name: 'FLEET_BROKER_FIRST_BYTE_TIMEOUT_MS' },
    );
  const apiUrl = env.FLEET_API_URL || undefined;
  if (apiUrl && !/^https:\/\/[^\s/]+(:\d+)?\/?$/.test(apiUrl)) {
    throw new ConfigError('FLEET_API_URL must be an https:// URL (scheme, host and optional port)');
  }
  return Object.freeze({
    dataDir: resolve(flags.data ?? env.FLEET_DATA_DIR ?? './data'),
    databaseUrl,
    redisUrl,
    caPassphrase: env.FLEET_CA_PASSPHRASE || undefined,
    caPassphraseFile: env.FLEET_CA_PASSPHRASE_FILE || undefined,
    organization,
    caAlgorithm: alg,
    publicBaseUrl,
    deviceValidityDays: positiveInt(env, 'FLEET_DEVICE_VALIDITY_DAYS', 20 * 365 + 5),
    rotationGraceHours: hours(env, 'FLEET_ROTATION_GRACE_HOURS', 24, 24 * 365),
    host,
    listenHost,
    apiPort: port(env, 'FLEET_API_PORT', 8443),
    publicPort,
    mqttPort,
    metricsPort: port(env, 'FLEET_METRICS_PORT', 9464),
    brokerUrl: env.FLEET_BROKER_URL || `mqtts://${host}:${mqttPort}`,
    apiUrl,
    logLevel,
    logFormat,
    policyFile: env.FLEET_POLICY_FILE ? resolve(env.FLEET_POLICY_FILE) : undefined,
    json: flags.json ?? false,
    brokerNodeId,
    tlsTicketKeysFile: env.FLEET_TLS_TICKET_KEYS_FILE ? resolve(env.FLEET_TLS_TICKET_KEYS_FILE) : undefined,
    proxyProtocol,
    proxyTrustedBalancers: Object.freeze(trustedBalancers(env, proxyProtocol)),
    brokerAdmission,
    brokerCertFile,
    brokerKeyFile,
    brokerServerNames: Object.freeze(brokerServerNames),
    console: loadConsoleConfig(env, { host, metricsPort: port(env, 'FLEET_METRICS_PORT', 9464) }),
  });
}
