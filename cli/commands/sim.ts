/**
 * `fleet sim`: the device simulator's command. Parses flags (device-sim/flags.ts), reads a scenario file
 * when given, prepares identities (enrolled locally or through the station API, or read from a directory),
 * runs, and writes the reports. Ctrl-C stops the run cleanly and still writes them.
 */
import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { FleetConfig } from '../../config/index.ts';
import { FlagError, SimError } from '../../device-sim/errors.ts';
import {
  BOOLEAN_FLAGS,
  parseSimFlags,
  parseTarget,
  SIM_USAGE,
  type SimFlags,
  STRING_FLAGS,
} from '../../device-sim/flags.ts';
import { type ApiCredentials, HttpEnroller, HttpOperator, probeApi } from '../../device-sim/http.ts';
import {
  type Enroller,
  ensureIdentities,
  type IdentitySet,
  readIdentityDir,
  recordRevoked,
  revokedIn,
} from '../../device-sim/identities.ts';
import { type Operator, RecordingOperator } from '../../device-sim/operator.ts';
import { textSummary, writeReports } from '../../device-sim/report.ts';
import { type RunTarget, runScenario } from '../../device-sim/runner.ts';
import { parseScenario, type Scenario } from '../../device-sim/scenario.ts';
import { type FlagSpec, parse, type Spec } from '../args.ts';
import { type Command, type CommandContext, UsageError } from '../command.ts';

/** Builds the scenario: the file (if any) with flag overrides, or the phases the flags describe. */
export async function scenarioFrom(flags: SimFlags): Promise<Scenario> {
  if (flags.scenarioFile) {
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(flags.scenarioFile, 'utf8'));
    } catch (cause) {
      throw new SimError(
        'SIM_SCENARIO_UNREADABLE',
        `cannot read ${flags.scenarioFile} as JSON: ${(cause as Error).message}`,
        { cause },
      );
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return parseScenario(raw);
    return parseScenario({ ...raw, ...flags.overrides });
  }
  return parseScenario({ ...flags.overrides, phases: flags.phases });
}

const isLoopback = (a: string) => a.startsWith('127.') || a === '::1' || a.startsWith('::ffff:127.');

/**
 * Loopback, or an address the user named. A target from configuration (FLEET_BROKER_URL) that is not
 * loopback is refused: load goes only where someone pointed it on purpose.
 */
export async function resolveTarget(flags: SimFlags, config: FleetConfig): Promise<RunTarget> {
  const named = flags.target !== undefined;
  let fromConfig: { host: string; port: number };
  try {
    fromConfig = parseTarget(config.brokerUrl, 'FLEET_BROKER_URL');
  } catch {
    fromConfig = { host: '127.0.0.1', port: config.mqttPort };
  }
  const t = flags.target ?? fromConfig;
  let addrs: string[];
  try {
    addrs = (await lookup(t.host, { all: true })).map((a) => a.address);
  } catch (cause) {
    throw new SimError('SIM_TARGET_FORBIDDEN', `cannot resolve the target ${t.host}`, { cause });
  }
  const loopback = addrs.length > 0 && addrs.every(isLoopback);
  if (!loopback && !named) {
    throw new SimError(
      'SIM_TARGET_FORBIDDEN',
      `the configured target ${t.host} is not loopback; name it with --target to load it on purpose`,
    );
  }
  const host = isIP(t.host) ? t.host : loopback ? addrs[0]! : t.host;
  return {
    host,
    port: t.port,
    servername: flags.servername ?? (isIP(t.host) ? 'localhost' : t.host),
    loopback,
  };
}

async function readCreds(cert: string, key: string) {
  try {
    return { cert: await readFile(cert, 'utf8'), key: await readFile(key, 'utf8') };
  } catch (cause) {
    throw new SimError('SIM_IDENTITIES_INVALID', `cannot read the credential ${cert} / ${key}`, { cause });
  }
}

interface Prepared {
  identities: IdentitySet;
  operator: Operator | undefined;
  /** How identities were made and devices are revoked, and why (for the report). */
  enrollment: { mode: 'api' | 'local' | 'none'; why: string; station?: string | undefined; apiUrl?: string };
  close(): Promise<void>;
}

/**
 * How identities are made and devices revoked. The embedded registry (PGlite) belongs to one process: while
 * `fleet up` runs, the simulator cannot open it, so the default (`auto`) is the provisioning API whenever
 * the service answers at the API URL, and the in-process CA and registry only when nothing listens there
 * (connection refused). Anything else that answers (a TLS failure, a timeout) is an error, never a reason to
 * write a local registry. A station credential given on the command line means the API.
 */
export async function chooseEnrollMode(
  flags: SimFlags,
  apiUrl: string,
  rootPem: string | undefined,
  operatorCreds: ApiCredentials | undefined,
): Promise<{ mode: 'api' | 'local' | 'none'; why: string }> {
  const asked = flags.enroll ?? 'auto';
  if (asked !== 'auto') return { mode: asked, why: `--enroll ${asked}` };
  if (flags.stationCert) return { mode: 'api', why: 'a station credential was given' };
  if (!rootPem) return { mode: 'local', why: 'no fleet root yet (nothing was initialised)' };
  const answers = await probeApi(apiUrl, rootPem, operatorCreds);
  return answers
    ? { mode: 'api', why: `the provisioning service answers at ${apiUrl}` }
    : { mode: 'local', why: `nothing listens at ${apiUrl}` };
}

async function prepare(ctx: CommandContext, flags: SimFlags, scenario: Scenario): Promise<Prepared> {
  const config = ctx.config;
  const dataDir = config.dataDir;
  const dir = resolve(flags.identitiesDir ?? join(dataDir, 'sim', `identities-${scenario.keyType}`));
  const caFile = flags.caFile ?? join(dataDir, 'ca', 'root.crt.pem');
  const needsOperator = scenario.phases.some((p) => p.type === 'revoke');
  const opCert = flags.operatorCert ?? join(dataDir, 'operator', 'admin.crt.pem');
  const opKey = flags.operatorKey ?? join(dataDir, 'operator', 'admin.key.pem');
  const apiUrl = flags.apiUrl ?? `https://localhost:${config.apiPort}`;
  const progress = (done: number, total: number) => {
    if (!flags.quiet) ctx.err.write(`fleet sim: enrolled ${done}/${total}\n`);
  };
  let rootPem: string | undefined;
  try {
    rootPem = await readFile(caFile, 'utf8');
  } catch {
    rootPem = undefined;
  }
  let opCreds: ApiCredentials | undefined;
  try {
    opCreds = await readCreds(opCert, opKey);
  } catch (e) {
    if (flags.operatorCert) throw e;
    opCreds = undefined;
  }
  const chosen = await chooseEnrollMode(flags, apiUrl, rootPem, opCreds);
  if (!flags.quiet) ctx.err.write(`fleet sim: enrollment and revocation: ${chosen.mode} (${chosen.why})\n`);

  if (chosen.mode === 'none' || chosen.mode === 'api') {
    if (!rootPem)
      throw new SimError('SIM_IDENTITIES_INVALID', `cannot read the root certificate ${caFile} (--ca)`);
    const needOp = () => {
      if (!opCreds)
        throw new SimError(
          'SIM_REVOKE_FAILED',
          `a revoke phase needs the operator credential: cannot read ${opCert} (--operator-cert/--operator-key)`,
        );
      return opCreds;
    };
    const operator = needsOperator ? new HttpOperator(apiUrl, rootPem, needOp()) : undefined;
    const closeOp = async () => {
      await operator?.close();
    };
    if (chosen.mode === 'none') {
      const identities = await readIdentityDir(dir, { devices: scenario.devices, rootPem });
      return { identities, operator, enrollment: { ...chosen, apiUrl }, close: closeOp };
    }
    const station = flags.stationCert ? await readCreds(flags.stationCert, flags.stationKey!) : undefined;
    const enroller = new HttpEnroller({
      baseUrl: apiUrl,
      rootPem,
      operator: opCreds,
      station,
      product: scenario.product,
      stationDir: join(dir, 'station'),
    });
    try {
      const identities = await ensureIdentities({
        dir,
        devices: scenario.devices,
        idPrefix: scenario.idPrefix,
        product: scenario.product,
        keyType: scenario.keyType,
        enroller,
        reenroll: flags.reenroll,
        onProgress: progress,
        skip: await revokedIn(dir),
      });
      return {
        identities,
        operator,
        enrollment: { ...chosen, apiUrl, station: enroller.stationId },
        close: closeOp,
      };
    } catch (e) {
      await closeOp();
      throw e;
    } finally {
      await enroller.close();
    }
  }

  // local: the CA and the registry in this process (the embedded default while no service runs).
  const [{ openRegistry }, { LocalEnroller, LocalOperator }, { openLocalCa }] = await Promise.all([
    import('../../registry/index.ts'),
    import('../../device-sim/local.ts'),
    import('../../runtime/index.ts'),
  ]);
  const ca = await openLocalCa(config);
  const registry = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    const enroller: Enroller = new LocalEnroller(ca, registry);
    const identities = await ensureIdentities({
      dir,
      devices: scenario.devices,
      idPrefix: scenario.idPrefix,
      product: scenario.product,
      keyType: scenario.keyType,
      enroller,
      reenroll: flags.reenroll,
      onProgress: progress,
      skip: await revokedIn(dir),
    });
    return {
      identities,
      operator: new LocalOperator(registry),
      enrollment: { ...chosen, station: 'sim' },
      close: () => registry.close(),
    };
  } catch (e) {
    await registry.close();
    throw e;
  }
}

/**
 * The simulator's flags for the CLI's strict parser (unknown flags refused with the nearest suggested); its
 * help is SIM_USAGE, and device-sim/flags.ts checks the values.
 */
const SIM_SPEC: Spec = {
  name: 'sim',
  summary: 'the device simulator',
  flags: Object.fromEntries([
    ...STRING_FLAGS.map((f): [string, FlagSpec] => [f, { type: 'string', help: '' }]),
    ...BOOLEAN_FLAGS.map((f): [string, FlagSpec] => [f, { type: 'boolean', help: '' }]),
  ]),
  examples: [],
};

/** The command line checked strictly, then the simulator's own checks of the values. */
export function simFlagsOf(argv: string[]): SimFlags | 'help' {
  const p = parse(SIM_SPEC, argv);
  if (p.help) return 'help';
  const normalized = Object.entries(p.values).map(([k, v]) => (v === true ? `--${k}` : `--${k}=${v}`));
  try {
    return parseSimFlags(normalized);
  } catch (e) {
    if (e instanceof FlagError)
      throw new UsageError(e.message, { code: 'USAGE_FLAG_VALUE', details: e.details, helpFor: 'sim' });
    throw e;
  }
}

export const command: Command = {
  help: SIM_USAGE,
  async run(ctx) {
    const flags = simFlagsOf(ctx.argv);
    if (flags === 'help') {
      ctx.out.write(SIM_USAGE);
      return 0;
    }
    const scenario = await scenarioFrom(flags);
    const target = await resolveTarget(flags, ctx.config);
    const prepared = await prepare(ctx, flags, scenario);
    const controller = new AbortController();
    let sigints = 0;
    const onSigint = () => {
      sigints++;
      if (sigints === 1) {
        ctx.err.write('\nfleet sim: stopping (Ctrl-C again to quit at once); the report is still written\n');
        controller.abort();
      } else process.exit(130);
    };
    process.on('SIGINT', onSigint);
    const operator = prepared.operator ? new RecordingOperator(prepared.operator) : undefined;
    const tty = (ctx.err as NodeJS.WriteStream).isTTY === true;
    let lastLine = 0;
    try {
      const report = await runScenario({
        scenario,
        identities: prepared.identities,
        target,
        operator,
        brokerMetricsUrl:
          flags.brokerMetrics === 'off'
            ? undefined
            : (flags.brokerMetrics ??
              (flags.target === undefined
                ? `http://127.0.0.1:${ctx.config.metricsPort}/metrics`
                : undefined)),
        signal: controller.signal,
        onProgress: flags.quiet
          ? undefined
          : (line) => {
              if (tty) ctx.err.write(`\r\x1b[2K${line}`);
              else if (Date.now() - lastLine >= 5000) {
                lastLine = Date.now();
                ctx.err.write(`${line}\n`);
              }
            },
      });
      if (tty && !flags.quiet) ctx.err.write('\n');
      report.notes = {
        identities: prepared.identities.dir,
        enrolledThisRun: prepared.identities.enrolled,
        enrollment: prepared.enrollment,
      };
      const outDir = resolve(
        flags.outDir ?? join('bench-results', `sim-${report.startedAt.replace(/[:.]/g, '-')}`),
      );
      const files = await writeReports(outDir, report);
      if (ctx.config.json) ctx.out.write(`${JSON.stringify({ files, report }, null, 2)}\n`);
      else
        ctx.out.write(
          `${textSummary(report)}\nreports: ${files.text}\n         ${files.json}\n         ${files.html}\n`,
        );
      return report.interrupted ? 130 : 0;
    } finally {
      process.off('SIGINT', onSigint);
      // A revoked device never connects again: later runs with this directory leave it out.
      if (operator?.revoked.length) await recordRevoked(prepared.identities.dir, operator.revoked);
      await prepared.close();
    }
  },
};
