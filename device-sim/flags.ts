/**
 * `fleet sim` flags: run settings (target, identities, credentials, outputs) and, without --scenario, a
 * scenario built from phase flags. Every bad flag is a FlagError naming the flag; a scenario read from a
 * file is checked by scenario.ts and names the field.
 */
import { parseArgs } from 'node:util';
import { FlagError } from './errors.ts';
import { DEFAULT_TELEMETRY, DEFAULTS, KEY_TYPES, LIMITS, type Phase, parseScenario } from './scenario.ts';

export const ENROLL_MODES = ['auto', 'local', 'api', 'none'] as const;
export type EnrollMode = (typeof ENROLL_MODES)[number];

export interface Target {
  readonly host: string;
  readonly port: number;
  /** TLS server name to verify (SNI); defaults to the host, or `localhost` for a loopback IP. */
  readonly servername: string;
  /** True when the user named the target (flag or scenario), false when it came from configuration. */
  readonly named: boolean;
}

/** What the flags say, before defaults from configuration are applied (cli/commands/sim.ts does that). */
export interface SimFlags {
  readonly scenarioFile: string | undefined;
  /** Scenario fields given by flags, to merge over the file's (or to build one from). */
  readonly overrides: Record<string, unknown>;
  /** Phases built from phase flags; undefined when none were given. */
  readonly phases: Phase[] | undefined;
  readonly target: { host: string; port: number } | undefined;
  readonly servername: string | undefined;
  readonly caFile: string | undefined;
  readonly identitiesDir: string | undefined;
  readonly enroll: EnrollMode | undefined;
  readonly reenroll: boolean;
  readonly apiUrl: string | undefined;
  readonly stationCert: string | undefined;
  readonly stationKey: string | undefined;
  readonly operatorCert: string | undefined;
  readonly operatorKey: string | undefined;
  readonly observerCert: string | undefined;
  readonly observerKey: string | undefined;
  readonly outDir: string | undefined;
  /** The broker's Prometheus URL, `off`, or undefined (the local broker's, when the target is the local one). */
  readonly brokerMetrics: string | undefined;
  readonly quiet: boolean;
  readonly help: boolean;
}

export const SIM_USAGE = `usage: fleet sim [flags]

Plays many devices with real certificates against an MQTT broker over mTLS and reports what it cost.

target and identities
  --target HOST:PORT        broker to load (default: 127.0.0.1 and FLEET_MQTT_PORT); non-loopback only when named
  --servername NAME         TLS name to verify (default: localhost for loopback, else the host)
  --ca FILE                 root certificate to trust (default: DATA/ca/root.crt.pem)
  --devices N               simulated devices (default ${DEFAULTS.devices})
  --identities DIR          identity cache: <id>.key.pem + <id>.crt.pem (default: DATA/sim/identities)
  --enroll auto|api|local|none  how identities are made and devices revoked (default auto):
                            api: the station batch API and the operator API of a running service (fleet up);
                            local: the CA and the registry in this process (only while no service runs);
                            none: read DIR as is (e.g. to drive mosquitto), revoke through the API;
                            auto: api when the service answers at --api, local when nothing listens there
  --reenroll                send every cached identity through enrollment again (idempotent)
  --key-type P-256|Ed25519|RSA  device key type (default P-256)
  --id-prefix P, --product P    device ids are P000000, P000001, ... (default sim-), product (default sim)
  --api URL                 provisioning API (default https://localhost:FLEET_API_PORT)
  --station-cert F --station-key F   station credential (default: the operator creates station sim-station)
  --operator-cert F --operator-key F             operator credential for revocations
  --observer-cert F --observer-key F             service credential of the latency subscriber

scale
  --workers N|auto          load processes (default auto: every core, under the open-file limit)
  --source-addresses N|auto spread connections over N source addresses in 127.0.0.0/8 (auto: one per 16 devices)
  --connect-timeout MS      own timeout for TCP+TLS+CONNACK (default ${DEFAULTS.connectTimeoutMs})
  --keepalive S             MQTT keepalive (default ${DEFAULTS.keepaliveS})
  --max-run S               hard cap on the whole run (default ${DEFAULTS.maxRunS})

scenario (or --scenario FILE, a JSON scenario; the flags below then may not be used)
  --connect-rate R | --connect-concurrency C   ramp (default concurrency 100)
  --hold S                  hold the connections S seconds after the ramp
  --telemetry S             S seconds of telemetry
  --msg-rate R --qos 0|1 --payload BYTES --topic TEMPLATE   telemetry shape ({id} {seq} {n})
  --revoke K [--revoke-at S]  revoke K devices under load and check they are dropped and refused
  --storm full|resumed|both   drop every connection and reconnect (TLS resumption or not)
  --jitter none|uniform:MS|exp:MEAN_MS        reconnect delay distribution (default uniform:1000)
  --storm-retries N         devices whose reconnect failed retry, up to N rounds, after a random wait up to
                            1 s, 2 s, 4 s, ... (30 s at most) (default 0: one attempt each)
  --no-observer             no latency subscriber

output
  --json                    the report as JSON on stdout (with the files written)
  --data DIR                the data directory (default ./data, or FLEET_DATA_DIR)
  --out DIR                 reports (summary.txt, report.json, report.html; default bench-results/sim-<time>)
  --broker-metrics URL|off  the broker's Prometheus endpoint on loopback, read around each phase (its admission
                            refusals and handshakes; default the local broker's when --target is not given)
  --quiet                   no live progress line
  -h, --help                this help

examples
  fleet sim --devices 500 --telemetry 30 --storm both --revoke 10     (while \`fleet up\` runs)
  fleet sim --devices 2000 --connect-rate 200 --storm resumed --jitter exp:500 --out bench-results/storm
  fleet sim --scenario scenario.json --target mqtt.example.com:8883 --enroll none --identities ids/
`;

/** Every flag taking a value, and every flag taking none (the CLI checks a command line against these first). */
export const STRING_FLAGS = [
  'scenario',
  'target',
  'servername',
  'ca',
  'devices',
  'identities',
  'enroll',
  'key-type',
  'id-prefix',
  'product',
  'api',
  'station-cert',
  'station-key',
  'operator-cert',
  'operator-key',
  'observer-cert',
  'observer-key',
  'workers',
  'source-addresses',
  'connect-timeout',
  'keepalive',
  'max-run',
  'connect-rate',
  'connect-concurrency',
  'hold',
  'telemetry',
  'msg-rate',
  'qos',
  'payload',
  'topic',
  'revoke',
  'revoke-at',
  'storm',
  'jitter',
  'storm-retries',
  'out',
  'broker-metrics',
  'data',
] as const;
export const BOOLEAN_FLAGS = ['no-observer', 'reenroll', 'quiet', 'json', 'help'] as const;
const PHASE_FLAGS = [
  'connect-rate',
  'connect-concurrency',
  'hold',
  'telemetry',
  'msg-rate',
  'qos',
  'payload',
  'topic',
  'revoke',
  'revoke-at',
  'storm',
  'jitter',
  'storm-retries',
];

function number(
  flag: string,
  raw: string,
  opts: { min: number; max: number; integer?: boolean; exclusiveMin?: boolean },
): number {
  if (/^-\d+(\.\d+)?$/.test(raw))
    throw new FlagError(`--${flag}`, `must be at least ${opts.min}, got ${raw}`);
  if (!/^\d+(\.\d+)?$/.test(raw))
    throw new FlagError(`--${flag}`, `expected a number, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (opts.integer && !Number.isInteger(n)) throw new FlagError(`--${flag}`, 'expected a whole number');
  if (opts.exclusiveMin ? n <= opts.min : n < opts.min)
    throw new FlagError(`--${flag}`, `must be ${opts.exclusiveMin ? 'above' : 'at least'} ${opts.min}`);
  if (n > opts.max) throw new FlagError(`--${flag}`, `must be at most ${opts.max}`);
  return n;
}

/** Parses HOST:PORT, [V6]:PORT or mqtts://HOST:PORT. */
export function parseTarget(raw: string, flag = '--target'): { host: string; port: number } {
  let s = raw.trim();
  if (s.startsWith('mqtts://')) s = s.slice('mqtts://'.length).replace(/\/$/, '');
  else if (/^[a-z]+:\/\//i.test(s)) throw new FlagError(flag, 'only mqtts:// (MQTT over TLS) is supported');
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  if (!m) throw new FlagError(flag, `expected HOST:PORT, got ${JSON.stringify(raw)}`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new FlagError(flag, `port ${port} is out of range`);
  return { host: m[1]!, port };
}

function jitterFlag(raw: string): unknown {
  if (raw === 'none') return { distribution: 'none' };
  const m = /^(uniform|exp|exponential):(\d+(?:\.\d+)?)$/.exec(raw);
  if (!m)
    throw new FlagError('--jitter', `expected none, uniform:MS or exp:MEAN_MS, got ${JSON.stringify(raw)}`);
  const ms = Number(m[2]);
  if (ms > LIMITS.maxJitterMs) throw new FlagError('--jitter', `must be at most ${LIMITS.maxJitterMs} ms`);
  return m[1] === 'uniform'
    ? { distribution: 'uniform', maxMs: ms }
    : { distribution: 'exponential', meanMs: ms };
}

export function parseSimFlags(argv: string[]): SimFlags {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const f of STRING_FLAGS) options[f] = { type: 'string' };
  for (const f of BOOLEAN_FLAGS) options[f] = { type: 'boolean' };
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as {
      values: Record<string, string | boolean | undefined>;
      positionals: string[];
    });
  } catch (e) {
    const msg = (e as Error).message;
    const flag = /'(-[^']+)'/.exec(msg)?.[1] ?? '(flags)';
    throw new FlagError(flag, msg);
  }
  if (positionals.length) throw new FlagError(positionals[0]!, 'unexpected argument (flags start with --)');
  const s = (k: string) => values[k] as string | undefined;

  const overrides: Record<string, unknown> = {};
  if (s('devices') !== undefined)
    overrides.devices = number('devices', s('devices')!, { min: 1, max: LIMITS.maxDevices, integer: true });
  if (s('key-type') !== undefined) {
    if (!KEY_TYPES.includes(s('key-type') as (typeof KEY_TYPES)[number]))
      throw new FlagError('--key-type', `must be one of ${KEY_TYPES.join(', ')}`);
    overrides.keyType = s('key-type');
  }
  if (s('id-prefix') !== undefined) overrides.idPrefix = s('id-prefix');
  if (s('product') !== undefined) overrides.product = s('product');
  for (const [flag, key, max] of [
    ['workers', 'workers', LIMITS.maxWorkers],
    ['source-addresses', 'sourceAddresses', LIMITS.maxSourceAddresses],
  ] as const) {
    const v = s(flag);
    if (v !== undefined)
      overrides[key] = v === 'auto' ? 'auto' : number(flag, v, { min: 1, max, integer: true });
  }
  if (s('connect-timeout') !== undefined)
    overrides.connectTimeoutMs = number('connect-timeout', s('connect-timeout')!, {
      min: 100,
      max: 120_000,
      integer: true,
    });
  if (s('keepalive') !== undefined)
    overrides.keepaliveS = number('keepalive', s('keepalive')!, { min: 5, max: 65_535, integer: true });
  if (s('max-run') !== undefined)
    overrides.maxRunS = number('max-run', s('max-run')!, { min: 1, max: LIMITS.maxDurationS });
  if (values['no-observer']) overrides.observer = false;

  const phaseFlagsGiven = PHASE_FLAGS.filter((f) => values[f] !== undefined);
  if (s('scenario') !== undefined && phaseFlagsGiven.length) {
    throw new FlagError(
      `--${phaseFlagsGiven[0]}`,
      'phase flags cannot be combined with --scenario (edit the file)',
    );
  }
  let phases: Phase[] | undefined;
  if (s('scenario') === undefined) phases = phasesFromFlags(s, overrides);

  const enroll = s('enroll');
  if (enroll !== undefined && !ENROLL_MODES.includes(enroll as EnrollMode))
    throw new FlagError('--enroll', `must be one of ${ENROLL_MODES.join(', ')}`);
  const pair = (a: string, b: string) => {
    if ((s(a) === undefined) !== (s(b) === undefined))
      throw new FlagError(`--${a}`, `goes together with --${b}`);
  };
  pair('station-cert', 'station-key');
  pair('operator-cert', 'operator-key');
  pair('observer-cert', 'observer-key');
  if (s('api') !== undefined && !/^https:\/\/[^\s]+$/.test(s('api')!))
    throw new FlagError('--api', 'expected an https:// URL');
  const bm = s('broker-metrics');
  if (bm !== undefined && bm !== 'off') {
    let u: URL;
    try {
      u = new URL(bm);
    } catch {
      throw new FlagError('--broker-metrics', `expected an http:// URL or off, got ${JSON.stringify(bm)}`);
    }
    const h = u.hostname.replace(/^\[|\]$/g, '');
    if (u.protocol !== 'http:' || !(h === 'localhost' || h === '::1' || /^127\./.test(h)))
      throw new FlagError(
        '--broker-metrics',
        'expected an http:// URL on loopback (127.0.0.0/8, ::1, localhost)',
      );
  }

  return {
    scenarioFile: s('scenario'),
    overrides,
    phases,
    target: s('target') === undefined ? undefined : parseTarget(s('target')!),
    servername: s('servername'),
    caFile: s('ca'),
    identitiesDir: s('identities'),
    enroll: enroll as EnrollMode | undefined,
    reenroll: values.reenroll === true,
    apiUrl: s('api'),
    stationCert: s('station-cert'),
    stationKey: s('station-key'),
    operatorCert: s('operator-cert'),
    operatorKey: s('operator-key'),
    observerCert: s('observer-cert'),
    observerKey: s('observer-key'),
    outDir: s('out'),
    brokerMetrics: bm,
    quiet: values.quiet === true,
    help: values.help === true,
  };
}

function phasesFromFlags(s: (k: string) => string | undefined, overrides: Record<string, unknown>): Phase[] {
  // Built as scenario JSON, then checked by the one scenario parser: one set of rules, one set of errors.
  const raw: Record<string, unknown>[] = [];
  if (s('connect-rate') !== undefined && s('connect-concurrency') !== undefined)
    throw new FlagError('--connect-rate', 'give either --connect-rate or --connect-concurrency, not both');
  const connect: Record<string, unknown> = { type: 'connect', name: 'connect' };
  if (s('connect-rate') !== undefined)
    connect.rate = number('connect-rate', s('connect-rate')!, {
      min: 0,
      exclusiveMin: true,
      max: LIMITS.maxRate,
    });
  if (s('connect-concurrency') !== undefined)
    connect.concurrency = number('connect-concurrency', s('connect-concurrency')!, {
      min: 1,
      max: LIMITS.maxConcurrency,
      integer: true,
    });
  if (s('hold') !== undefined)
    connect.holdS = number('hold', s('hold')!, { min: 0, max: LIMITS.maxDurationS });
  raw.push(connect);

  const telemetry: Record<string, unknown> = {};
  if (s('msg-rate') !== undefined)
    telemetry.ratePerDevice = number('msg-rate', s('msg-rate')!, { min: 0, exclusiveMin: true, max: 1000 });
  if (s('qos') !== undefined) {
    if (s('qos') !== '0' && s('qos') !== '1') throw new FlagError('--qos', 'must be 0 or 1');
    telemetry.qos = Number(s('qos'));
  }
  if (s('payload') !== undefined)
    telemetry.payloadBytes = number('payload', s('payload')!, {
      min: 0,
      max: LIMITS.maxPayloadBytes,
      integer: true,
    });
  if (s('topic') !== undefined) telemetry.topic = s('topic');
  const telemetryS = s('telemetry');
  if (telemetryS !== undefined) {
    raw.push({
      type: 'telemetry',
      name: 'telemetry',
      durationS: number('telemetry', telemetryS, { min: 0, exclusiveMin: true, max: LIMITS.maxDurationS }),
      ...telemetry,
    });
  } else if (Object.keys(telemetry).length && s('revoke') === undefined) {
    throw new FlagError(
      `--${['msg-rate', 'qos', 'payload', 'topic'].find((f) => s(f) !== undefined)}`,
      'shapes telemetry; add --telemetry S (or --revoke K for load during revocation)',
    );
  }
  if (s('revoke') !== undefined) {
    const count = number('revoke', s('revoke')!, { min: 1, max: LIMITS.maxDevices, integer: true });
    const devices = (overrides.devices as number | undefined) ?? DEFAULTS.devices;
    if (count >= devices)
      throw new FlagError('--revoke', `must be below --devices (${devices}) so some stay`);
    const atS =
      s('revoke-at') === undefined ? 2 : number('revoke-at', s('revoke-at')!, { min: 0, max: 3600 });
    raw.push({
      type: 'revoke',
      name: 'revoke',
      count,
      atS,
      durationS: atS + 5,
      telemetry: { ...DEFAULT_TELEMETRY, ...telemetry },
    });
  } else if (s('revoke-at') !== undefined) throw new FlagError('--revoke-at', 'needs --revoke K');
  const storm = s('storm');
  if (storm !== undefined) {
    if (!['full', 'resumed', 'both'].includes(storm))
      throw new FlagError('--storm', 'must be full, resumed or both');
    const jitter = s('jitter') === undefined ? undefined : jitterFlag(s('jitter')!);
    const retries =
      s('storm-retries') === undefined
        ? undefined
        : number('storm-retries', s('storm-retries')!, { min: 0, max: 20, integer: true });
    if (storm !== 'resumed') raw.push({ type: 'storm', name: 'storm-full', resume: false, jitter, retries });
    if (storm !== 'full') raw.push({ type: 'storm', name: 'storm-resumed', resume: true, jitter, retries });
  } else if (s('jitter') !== undefined) throw new FlagError('--jitter', 'needs --storm');
  else if (s('storm-retries') !== undefined) throw new FlagError('--storm-retries', 'needs --storm');
  // Check through the scenario parser with the overrides, so flag-built phases obey the same rules.
  return [...parseScenario({ ...overrides, phases: raw }).phases];
}
