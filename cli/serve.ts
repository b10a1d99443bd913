/**
 * What `fleet up` (what `npm start` runs) and `fleet broker` share: the services started on one data
 * directory in this process (runtime/), a banner with what exists and the exact commands to try next,
 * then running until SIGINT or SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { FleetConfig } from '../config/index.ts';
import type { Registry } from '../registry/index.ts';
import { type ServiceName, startServices } from '../runtime/index.ts';
import type { CommandContext } from './command.ts';

/** The environment a serving command reads, for its --help. */
export const SERVE_ENV = [
  'environment (the README lists every variable)',
  '  FLEET_LISTEN_HOST   where every listener binds (default FLEET_HOST, else localhost: loopback only;',
  '                      0.0.0.0 or :: accepts other machines)',
  '  FLEET_HOST          the name clients dial, in URLs and certificates (default localhost)',
  '  FLEET_API_PORT 8443, FLEET_PUBLIC_PORT 8080, FLEET_MQTT_PORT 8883, FLEET_METRICS_PORT 9464 (0: off)',
  '  DATABASE_URL, REDIS_URL   PostgreSQL and Redis instead of the embedded registry and memory',
  '  FLEET_POLICY_FILE   the MQTT topic policy (default broker/default-policy.yaml)',
  '  FLEET_LOG_LEVEL (info), FLEET_LOG_FORMAT (pretty on a terminal, else json)',
].join('\n');

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1']);

/**
 * The device id the banner's example uses: `dev-1`, or on a later start the first `dev-N` the registry has
 * never seen. An id used before is taken (another key is DEVICE_KEY_CONFLICT) or, once the example's revoke
 * was followed, a dead end for good (DEVICE_REVOKED): the example must never send anyone into it.
 */
export async function freeDeviceId(registry: Pick<Registry, 'getDeviceRow'>): Promise<string> {
  for (let n = 1; n <= 1000; n++) {
    const id = `dev-${n}`;
    if (!(await registry.getDeviceRow(id))) return id;
  }
  return `dev-${randomBytes(4).toString('hex')}`;
}

export function nextSteps(config: FleetConfig, id = 'dev-1'): string[] {
  const d = config.dataDir;
  const fleet = 'npx fleet';
  const dataFlag = d === join(process.cwd(), 'data') ? '' : ` --data ${d}`;
  return [
    'Enroll a first device (its key never leaves it) and publish telemetry:',
    '',
    '  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\',
    `    -keyout ${id}.key -subj /CN=${id} -out ${id}.csr`,
    `  ${fleet} device issue --id ${id} --product thermo --csr ${id}.csr --out certs${dataFlag}`,
    `  mosquitto_pub --cafile ${join(d, 'ca', 'root.crt.pem')} --cert certs/${id}.crt.pem --key ${id}.key \\`,
    `    -h ${config.host} -p ${config.mqttPort} -i ${id} -t devices/${id}/telemetry -m '{"t":21.5}' -q 1`,
    '',
    `Revoke it (its live connection is dropped at once; revocation is final, the id is never issued again):`,
    `  ${fleet} device revoke ${id} --reason keyCompromise${dataFlag}`,
    `Then ask the OCSP responder: openssl ocsp -issuer ${join(d, 'ca', 'device-ca.crt.pem')} -cert certs/${id}.crt.pem \\`,
    `    -url http://${config.host}:${config.publicPort}/ocsp -CAfile ${join(d, 'ca', 'root.crt.pem')}`,
  ];
}

/**
 * Resolves on the first SIGINT or SIGTERM. The listeners stay for the life of the process, so a second
 * signal while stopping (npm and a terminal both pass Ctrl-C on; tsx relays it again; a user presses it twice)
 * is noted instead of killing the process half-way through its stop: with `once` listeners, Node's default
 * action for that second signal ended 1 stop in 7 between broker_stopped and registry_closed, leaving the
 * registry lock behind.
 */
export function stopSignal(err: NodeJS.WritableStream): { stopping: Promise<string>; done(): void } {
  let first: string | undefined;
  let resolve!: (sig: string) => void;
  const stopping = new Promise<string>((r) => {
    resolve = r;
  });
  let finished = false;
  const on = (sig: string) => () => {
    if (finished) {
      // Stopped, closed and about to exit: a late relay of the same Ctrl-C just ends it now, cleanly.
      process.exit(process.exitCode ?? 0);
    } else if (first === undefined) {
      first = sig;
      resolve(sig);
    } else err.write(`fleet: ${sig} while stopping: already stopping\n`);
  };
  const onInt = on('SIGINT');
  const onTerm = on('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    stopping,
    // The listeners stay: a signal arriving after the stop, while the process winds down, must not meet
    // Node's default action either (it would turn exit 0 into death by signal).
    done() {
      finished = true;
    },
  };
}

/** How long a stop may take before the process gives up on it and exits. */
const STOP_TIMEOUT_MS = 15_000;

export async function runServices(ctx: CommandContext, which: ServiceName[]): Promise<number> {
  // A signal during the start (a first CA can take a while on a busy machine) ends the process at once,
  // as before; from here on, a stop is always a clean one.
  const { init, runtime, services, stop: stopAll } = await startServices(ctx.config, which);
  const signal = stopSignal(ctx.err);
  try {
    const c = ctx.config;
    const listen = LOOPBACK.has(c.listenHost)
      ? `${c.listenHost} (loopback only; FLEET_LISTEN_HOST=0.0.0.0 accepts other machines)`
      : `${c.listenHost} (FLEET_LISTEN_HOST)`;
    const out = [
      `Fleet is running (data: ${c.dataDir})`,
      ...init.created.map((x) => `  created ${x}`),
      `  root CA                 ${init.ca.root}`,
      `  registry                ${init.registry}`,
      `  listening on            ${listen}`,
      ...services.flatMap((s) => s.describe()),
      '',
      ...(which.includes('provisioning') ? [...nextSteps(c, await freeDeviceId(runtime.registry)), ''] : []),
      'Ctrl-C stops it.',
    ];
    if (init.ca.passphraseSource === 'generated') {
      out.push(
        '',
        'WARNING: the CA passphrase was generated into data/secrets/; production supplies its own (FLEET_CA_PASSPHRASE_FILE).',
      );
    }
    ctx.out.write(`${out.join('\n')}\n`);
    const sig = await signal.stopping;
    ctx.err.write(`fleet: ${sig}: stopping\n`);
    // A stop that hangs (a stuck client, an unreachable database) must not keep the process alive.
    const timer = setTimeout(() => {
      ctx.err.write(`fleet: the stop took over ${STOP_TIMEOUT_MS / 1000} s; exiting\n`);
      process.exit(1);
    }, STOP_TIMEOUT_MS);
    timer.unref();
    await stopAll();
    clearTimeout(timer);
    ctx.err.write('fleet: stopped\n');
    return 0;
  } finally {
    signal.done();
  }
}
