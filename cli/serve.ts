/**
 * What `fleet up` (what `npm start` runs) and `fleet broker` share: the services started on one data
 * directory in this process (runtime/), a banner with what exists and the exact commands to try next,
 * then running until SIGINT or SIGTERM.
 */
import { join } from 'node:path';
import type { FleetConfig } from '../config/index.ts';
import { type ServiceName, startServices } from '../runtime/index.ts';
import type { CommandContext } from './command.ts';

function nextSteps(config: FleetConfig): string[] {
  const d = config.dataDir;
  const fleet = 'npx fleet';
  const dataFlag = d === join(process.cwd(), 'data') ? '' : ` --data ${d}`;
  return [
    'Enroll a first device (its key never leaves it) and publish telemetry:',
    '',
    '  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\',
    '    -keyout dev-1.key -subj /CN=dev-1 -out dev-1.csr',
    `  ${fleet} device issue --id dev-1 --product thermo --csr dev-1.csr --out certs${dataFlag}`,
    `  mosquitto_pub --cafile ${join(d, 'ca', 'root.crt.pem')} --cert certs/dev-1.crt.pem --key dev-1.key \\`,
    `    -h ${config.host} -p ${config.mqttPort} -i dev-1 -t devices/dev-1/telemetry -m '{"t":21.5}' -q 1`,
    '',
    `Revoke it (its live connection is dropped at once): ${fleet} device revoke dev-1 --reason keyCompromise${dataFlag}`,
    `Then ask the OCSP responder: openssl ocsp -issuer ${join(d, 'ca', 'device-ca.crt.pem')} -cert certs/dev-1.crt.pem \\`,
    `    -url http://${config.host}:${config.publicPort}/ocsp -CAfile ${join(d, 'ca', 'root.crt.pem')}`,
  ];
}

export async function runServices(ctx: CommandContext, which: ServiceName[]): Promise<number> {
  const { init, services, stop: stopAll } = await startServices(ctx.config, which);
  const out = [
    `Fleet is running (data: ${ctx.config.dataDir})`,
    ...init.created.map((c) => `  created ${c}`),
    `  root CA                 ${init.ca.root}`,
    `  registry                ${init.registry}`,
    ...services.flatMap((s) => s.describe()),
    '',
    ...nextSteps(ctx.config),
    '',
    'Ctrl-C stops it.',
  ];
  if (init.ca.passphraseSource === 'generated') {
    out.push(
      '',
      'WARNING: the CA passphrase was generated into data/secrets/; production supplies its own (FLEET_CA_PASSPHRASE_FILE).',
    );
  }
  ctx.out.write(`${out.join('\n')}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  ctx.err.write('fleet: stopping\n');
  await stopAll();
  return 0;
}
