/**
 * Scenarios: what a run does, as data. A scenario is a list of phases run in order (they compose: connect,
 * then telemetry, then a revoke under load, then a reconnect storm...), plus the run-wide settings. It comes
 * from a JSON file or from flags (flags.ts) and is checked once, here, into a frozen typed value; every
 * refusal names the field (`phases[2].qos`) and what was wrong.
 */
import { ScenarioError } from './errors.ts';

export const KEY_TYPES = ['P-256', 'Ed25519', 'RSA'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export type Jitter =
  | { readonly distribution: 'none' }
  | { readonly distribution: 'uniform'; readonly maxMs: number }
  | { readonly distribution: 'exponential'; readonly meanMs: number; readonly maxMs: number };

export interface TelemetrySpec {
  /** Messages per second per device (may be fractional: 0.1 is one every 10 s). */
  readonly ratePerDevice: number;
  readonly qos: 0 | 1;
  /** Payload bytes; the first 8 carry the send time, so latency is measured from 8 bytes up. */
  readonly payloadBytes: number;
  /** Topic template: `{id}` the device id, `{seq}` a per-device counter, `{n}` the device's index. */
  readonly topic: string;
}

export interface ConnectPhase {
  readonly type: 'connect';
  readonly name: string;
  /** How many devices to connect (default: all). Already connected devices are not counted again. */
  readonly count: number | undefined;
  /** New connections started per second (a ramp)... */
  readonly rate: number | undefined;
  /** ...or a fixed number of connects in flight. Exactly one of rate and concurrency is set. */
  readonly concurrency: number | undefined;
  /** Hold the connections this long after the ramp. */
  readonly holdS: number;
  /** Offer each device's cached TLS session (ticket) when it has one. */
  readonly resume: boolean;
}

export interface HoldPhase {
  readonly type: 'hold';
  readonly name: string;
  readonly durationS: number;
}

export interface TelemetryPhase extends TelemetrySpec {
  readonly type: 'telemetry';
  readonly name: string;
  readonly durationS: number;
}

export interface StormPhase {
  readonly type: 'storm';
  readonly name: string;
  /** Reconnect with each device's TLS session ticket (true) or with a full handshake (false). */
  readonly resume: boolean;
  readonly jitter: Jitter;
  /** Cap on connects in flight per worker during the storm (0: no cap beyond the jitter). */
  readonly concurrency: number;
  /** Keep the reconnected fleet this long after the last reconnect. */
  readonly settleS: number;
  /**
   * Retry rounds for devices whose reconnect failed, as real devices retry: round k waits a random time up
   * to min(30 s, backoffMs × 2^(k-1)) (full jitter). 0: one attempt each.
   */
  readonly retries: number;
  readonly backoffMs: number;
}

/** The longest wait before one storm retry round. */
export const MAX_BACKOFF_MS = 30_000;

export interface RevokePhase {
  readonly type: 'revoke';
  readonly name: string;
  /** How many connected devices to revoke (spread evenly over the fleet). */
  readonly count: number;
  /** Seconds into the phase when the revocations are sent. */
  readonly atS: number;
  /** Phase length; revoked devices still connected at the end count as not disconnected. */
  readonly durationS: number;
  /** RFC 5280 reason sent to the operator API. */
  readonly reason: string;
  /** Telemetry to keep flowing during the phase (the "load"), or none. */
  readonly telemetry: TelemetrySpec | undefined;
}

export type Phase = ConnectPhase | HoldPhase | TelemetryPhase | StormPhase | RevokePhase;
export const PHASE_TYPES = ['connect', 'hold', 'telemetry', 'storm', 'revoke'] as const;

export interface Scenario {
  readonly devices: number;
  readonly keyType: KeyType;
  /** Device ids are `${idPrefix}${index padded to 6}`. */
  readonly idPrefix: string;
  readonly product: string;
  /** Load processes; 'auto' uses every core, and enough processes to stay under the open-file limit. */
  readonly workers: number | 'auto';
  /** Source addresses in 127.0.0.0/8 to spread connections over (loopback targets only). */
  readonly sourceAddresses: number | 'auto';
  readonly connectTimeoutMs: number;
  readonly keepaliveS: number;
  /** Hard cap on the whole run. */
  readonly maxRunS: number;
  /** Run a service subscriber to measure publish-to-delivery latency. */
  readonly observer: boolean;
  /** Topic filter the observer subscribes to. */
  readonly observerFilter: string;
  readonly phases: readonly Phase[];
}

export const DEFAULT_TELEMETRY: TelemetrySpec = Object.freeze({
  ratePerDevice: 1,
  qos: 0,
  payloadBytes: 64,
  topic: 'devices/{id}/telemetry',
});

export const DEFAULTS = Object.freeze({
  devices: 100,
  keyType: 'P-256' as KeyType,
  idPrefix: 'sim-',
  product: 'sim',
  workers: 'auto' as const,
  sourceAddresses: 'auto' as const,
  connectTimeoutMs: 10_000,
  keepaliveS: 60,
  maxRunS: 3600,
  observer: true,
  observerFilter: 'devices/+/telemetry/#',
});

export const LIMITS = Object.freeze({
  maxDevices: 1_000_000,
  maxRate: 100_000,
  maxConcurrency: 20_000,
  maxDurationS: 86_400,
  maxPayloadBytes: 256 * 1024 - 1024,
  maxJitterMs: 600_000,
  maxWorkers: 64,
  maxSourceAddresses: 254 * 254,
});

// ------------------------------------------------------------------------------------------------ checks

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(o: Obj, at: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new ScenarioError(`${at}${at ? '.' : ''}${k}`, `unknown field (allowed: ${allowed.join(', ')})`);
    }
  }
}

function num(
  o: Obj,
  key: string,
  at: string,
  opts: { min: number; max: number; integer?: boolean; exclusiveMin?: boolean; dflt?: number },
): number {
  const pos = `${at}${at ? '.' : ''}${key}`;
  const v = o[key];
  if (v === undefined) {
    if (opts.dflt !== undefined) return opts.dflt;
    throw new ScenarioError(pos, 'is required');
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ScenarioError(pos, 'must be a number');
  if (opts.integer && !Number.isInteger(v)) throw new ScenarioError(pos, 'must be a whole number');
  if (opts.exclusiveMin ? v <= opts.min : v < opts.min) {
    throw new ScenarioError(pos, `must be ${opts.exclusiveMin ? 'above' : 'at least'} ${opts.min}`);
  }
  if (v > opts.max) throw new ScenarioError(pos, `must be at most ${opts.max}`);
  return v;
}

function optNum(o: Obj, key: string, at: string, opts: Parameters<typeof num>[3]): number | undefined {
  return o[key] === undefined ? undefined : num(o, key, at, opts);
}

function str(o: Obj, key: string, at: string, dflt?: string): string {
  const pos = `${at}${at ? '.' : ''}${key}`;
  const v = o[key];
  if (v === undefined) {
    if (dflt !== undefined) return dflt;
    throw new ScenarioError(pos, 'is required');
  }
  if (typeof v !== 'string' || v.length === 0) throw new ScenarioError(pos, 'must be a non-empty string');
  return v;
}

function bool(o: Obj, key: string, at: string, dflt: boolean): boolean {
  const v = o[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new ScenarioError(`${at}${at ? '.' : ''}${key}`, 'must be true or false');
  return v;
}

function oneOf<T extends string | number>(o: Obj, key: string, at: string, values: readonly T[], dflt: T): T {
  const v = o[key];
  if (v === undefined) return dflt;
  if (!values.includes(v as T)) {
    throw new ScenarioError(
      `${at}${at ? '.' : ''}${key}`,
      `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}`,
    );
  }
  return v as T;
}

function workersOrAuto(o: Obj, key: string, max: number, dflt: number | 'auto'): number | 'auto' {
  const v = o[key];
  if (v === undefined) return dflt;
  if (v === 'auto') return 'auto';
  return num(o, key, '', { min: 1, max, integer: true });
}

const PLACEHOLDER = /\{([^}]*)\}/g;
const TOPIC_PLACEHOLDERS = ['id', 'seq', 'n'];

/** A topic template: no wildcards, no empty or NUL, only known placeholders. */
export function checkTopicTemplate(t: string, pos: string): void {
  if (t.length > 1024) throw new ScenarioError(pos, 'is longer than 1024 characters');
  if (/[+#\u0000]/.test(t)) throw new ScenarioError(pos, "must not contain '+', '#' or NUL (it is a topic)");
  if (t.startsWith('$')) throw new ScenarioError(pos, "must not start with '$' (reserved topics)");
  for (const m of t.matchAll(PLACEHOLDER)) {
    if (!TOPIC_PLACEHOLDERS.includes(m[1]!)) {
      throw new ScenarioError(pos, `unknown placeholder {${m[1]}} (known: {id}, {seq}, {n})`);
    }
  }
}

function checkFilter(f: string, pos: string): void {
  if (f.length === 0 || f.length > 1024) throw new ScenarioError(pos, 'must be 1 to 1024 characters');
  const levels = f.split('/');
  levels.forEach((l, i) => {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1))
      throw new ScenarioError(pos, "'#' must be a whole last level");
    if (l.includes('+') && l !== '+') throw new ScenarioError(pos, "'+' must be a whole level");
  });
}

function telemetrySpec(o: Obj, at: string): TelemetrySpec {
  const topic = str(o, 'topic', at, DEFAULT_TELEMETRY.topic);
  checkTopicTemplate(topic, `${at}.topic`);
  return {
    ratePerDevice: num(o, 'ratePerDevice', at, {
      min: 0,
      exclusiveMin: true,
      max: 1000,
      dflt: DEFAULT_TELEMETRY.ratePerDevice,
    }),
    qos: oneOf(o, 'qos', at, [0, 1] as const, DEFAULT_TELEMETRY.qos),
    payloadBytes: num(o, 'payloadBytes', at, {
      min: 0,
      max: LIMITS.maxPayloadBytes,
      integer: true,
      dflt: DEFAULT_TELEMETRY.payloadBytes,
    }),
    topic,
  };
}

const TELEMETRY_KEYS = ['ratePerDevice', 'qos', 'payloadBytes', 'topic'];

function jitter(v: unknown, at: string): Jitter {
  if (v === undefined) return { distribution: 'uniform', maxMs: 1000 };
  if (!isObj(v))
    throw new ScenarioError(at, 'must be an object such as {"distribution":"uniform","maxMs":2000}');
  const d = oneOf(v, 'distribution', at, ['none', 'uniform', 'exponential'] as const, 'uniform');
  if (d === 'none') {
    onlyKeys(v, at, ['distribution']);
    return { distribution: 'none' };
  }
  if (d === 'uniform') {
    onlyKeys(v, at, ['distribution', 'maxMs']);
    return { distribution: 'uniform', maxMs: num(v, 'maxMs', at, { min: 0, max: LIMITS.maxJitterMs }) };
  }
  onlyKeys(v, at, ['distribution', 'meanMs', 'maxMs']);
  const meanMs = num(v, 'meanMs', at, { min: 0, exclusiveMin: true, max: LIMITS.maxJitterMs });
  const maxMs = num(v, 'maxMs', at, {
    min: meanMs,
    max: LIMITS.maxJitterMs,
    dflt: Math.min(meanMs * 5, LIMITS.maxJitterMs),
  });
  return { distribution: 'exponential', meanMs, maxMs };
}

function phase(v: unknown, i: number, devices: number): Phase {
  const at = `phases[${i}]`;
  if (!isObj(v)) throw new ScenarioError(at, 'must be an object with a "type"');
  const type = v.type;
  if (typeof type !== 'string' || !PHASE_TYPES.includes(type as Phase['type'])) {
    throw new ScenarioError(`${at}.type`, `must be one of ${PHASE_TYPES.join(', ')}`);
  }
  const name = str(v, 'name', at, `${type}${i}`);
  const durationOpts = { min: 0, max: LIMITS.maxDurationS };
  switch (type as Phase['type']) {
    case 'connect': {
      onlyKeys(v, at, ['type', 'name', 'count', 'rate', 'concurrency', 'holdS', 'resume']);
      const rate = optNum(v, 'rate', at, { min: 0, exclusiveMin: true, max: LIMITS.maxRate });
      const concurrency = optNum(v, 'concurrency', at, {
        min: 1,
        max: LIMITS.maxConcurrency,
        integer: true,
      });
      if (rate !== undefined && concurrency !== undefined) {
        throw new ScenarioError(`${at}.rate`, 'give either rate or concurrency, not both');
      }
      const count = optNum(v, 'count', at, { min: 1, max: devices, integer: true });
      return {
        type: 'connect',
        name,
        count,
        rate,
        concurrency: rate === undefined ? (concurrency ?? 100) : undefined,
        holdS: num(v, 'holdS', at, { ...durationOpts, dflt: 0 }),
        resume: bool(v, 'resume', at, false),
      };
    }
    case 'hold':
      onlyKeys(v, at, ['type', 'name', 'durationS']);
      return { type: 'hold', name, durationS: num(v, 'durationS', at, durationOpts) };
    case 'telemetry':
      onlyKeys(v, at, ['type', 'name', 'durationS', ...TELEMETRY_KEYS]);
      return {
        type: 'telemetry',
        name,
        durationS: num(v, 'durationS', at, { ...durationOpts, min: 0, exclusiveMin: true }),
        ...telemetrySpec(v, at),
      };
    case 'storm':
      onlyKeys(v, at, ['type', 'name', 'resume', 'jitter', 'concurrency', 'settleS', 'retries', 'backoffMs']);
      return {
        type: 'storm',
        name,
        resume: bool(v, 'resume', at, false),
        jitter: jitter(v.jitter, `${at}.jitter`),
        concurrency: num(v, 'concurrency', at, {
          min: 0,
          max: LIMITS.maxConcurrency,
          integer: true,
          dflt: 0,
        }),
        settleS: num(v, 'settleS', at, { ...durationOpts, dflt: 1 }),
        retries: num(v, 'retries', at, { min: 0, max: 20, integer: true, dflt: 0 }),
        backoffMs: num(v, 'backoffMs', at, { min: 10, max: MAX_BACKOFF_MS, integer: true, dflt: 1000 }),
      };
    case 'revoke': {
      onlyKeys(v, at, ['type', 'name', 'count', 'atS', 'durationS', 'reason', 'telemetry']);
      const count = num(v, 'count', at, { min: 1, max: devices, integer: true });
      const atS = num(v, 'atS', at, { ...durationOpts, dflt: 1 });
      const durationS = num(v, 'durationS', at, { ...durationOpts, dflt: atS + 5 });
      if (durationS <= atS) throw new ScenarioError(`${at}.durationS`, 'must be longer than atS');
      let telemetry: TelemetrySpec | undefined;
      if (v.telemetry !== undefined && v.telemetry !== null) {
        if (!isObj(v.telemetry)) throw new ScenarioError(`${at}.telemetry`, 'must be an object or null');
        onlyKeys(v.telemetry, `${at}.telemetry`, TELEMETRY_KEYS);
        telemetry = telemetrySpec(v.telemetry, `${at}.telemetry`);
      }
      return {
        type: 'revoke',
        name,
        count,
        atS,
        durationS,
        reason: oneOf(
          v,
          'reason',
          at,
          [
            'unspecified',
            'keyCompromise',
            'affiliationChanged',
            'superseded',
            'cessationOfOperation',
          ] as const,
          'keyCompromise',
        ),
        telemetry,
      };
    }
  }
}

/** Checks a parsed scenario object (a scenario file's JSON) and returns the frozen scenario. */
export function parseScenario(input: unknown): Scenario {
  if (!isObj(input)) throw new ScenarioError('(root)', 'must be a JSON object with "phases"');
  onlyKeys(input, '', [
    '$schema',
    'description',
    'devices',
    'keyType',
    'idPrefix',
    'product',
    'workers',
    'sourceAddresses',
    'connectTimeoutMs',
    'keepaliveS',
    'maxRunS',
    'observer',
    'observerFilter',
    'phases',
  ]);
  const devices = num(input, 'devices', '', {
    min: 1,
    max: LIMITS.maxDevices,
    integer: true,
    dflt: DEFAULTS.devices,
  });
  const idPrefix = str(input, 'idPrefix', '', DEFAULTS.idPrefix);
  // The full id is prefix + 6+ digits and must stay a valid id (design.md).
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,50}$/.test(idPrefix) && idPrefix !== '') {
    throw new ScenarioError(
      'idPrefix',
      'must start with a letter or digit and use only A-Z a-z 0-9 . _ - (≤ 51)',
    );
  }
  const product = str(input, 'product', '', DEFAULTS.product);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(product)) {
    throw new ScenarioError(
      'product',
      'must be a valid id (A-Z a-z 0-9 . _ -, starting with a letter or digit)',
    );
  }
  const observerFilter = str(input, 'observerFilter', '', DEFAULTS.observerFilter);
  checkFilter(observerFilter, 'observerFilter');
  const phasesIn = input.phases;
  if (!Array.isArray(phasesIn) || phasesIn.length === 0) {
    throw new ScenarioError('phases', 'must be a non-empty array of phases');
  }
  if (phasesIn.length > 100) throw new ScenarioError('phases', 'has more than 100 phases');
  const phases = phasesIn.map((p, i) => phase(p, i, devices));
  const names = new Set<string>();
  phases.forEach((p, i) => {
    if (names.has(p.name)) throw new ScenarioError(`phases[${i}].name`, `duplicate phase name ${p.name}`);
    names.add(p.name);
  });
  const scenario: Scenario = {
    devices,
    keyType: oneOf(input, 'keyType', '', KEY_TYPES, DEFAULTS.keyType),
    idPrefix,
    product,
    workers: workersOrAuto(input, 'workers', LIMITS.maxWorkers, DEFAULTS.workers),
    sourceAddresses: workersOrAuto(
      input,
      'sourceAddresses',
      LIMITS.maxSourceAddresses,
      DEFAULTS.sourceAddresses,
    ),
    connectTimeoutMs: num(input, 'connectTimeoutMs', '', {
      min: 100,
      max: 120_000,
      integer: true,
      dflt: DEFAULTS.connectTimeoutMs,
    }),
    keepaliveS: num(input, 'keepaliveS', '', {
      min: 5,
      max: 65_535,
      integer: true,
      dflt: DEFAULTS.keepaliveS,
    }),
    maxRunS: num(input, 'maxRunS', '', { min: 1, max: LIMITS.maxDurationS, dflt: DEFAULTS.maxRunS }),
    observer: bool(input, 'observer', '', DEFAULTS.observer),
    observerFilter,
    phases,
  };
  return deepFreeze(scenario);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** The id of the device at `index` (0-based): zero-padded so ids sort in index order. */
export function deviceId(scenario: Pick<Scenario, 'idPrefix'>, index: number): string {
  return `${scenario.idPrefix}${String(index).padStart(6, '0')}`;
}

/** Fills a topic template for one message. */
export function fillTopic(template: string, id: string, index: number, seq: number): string {
  return template.replace(PLACEHOLDER, (_, k: string) =>
    k === 'id' ? id : k === 'n' ? String(index) : String(seq),
  );
}
