/** `fleet up` (what `npm start` runs): provisioning and the broker in one process on this data dir. */
import { simple } from '../command.ts';
import { runServices, SERVE_ENV } from '../serve.ts';

export const command = simple(
  {
    name: 'up',
    summary: 'run the whole system in one process: provisioning (API, EST, CRL, OCSP) and the MQTT broker',
    description:
      'Initialises DATA first if needed (fleet init), checks every port is free before creating anything,\n' +
      'prints what runs where and the commands to try next, and runs until Ctrl-C or SIGTERM.\n\n' +
      SERVE_ENV,
    examples: ['fleet up', 'FLEET_MQTT_PORT=18883 FLEET_LISTEN_HOST=0.0.0.0 fleet up --data /var/lib/fleet'],
  },
  (ctx) => runServices(ctx, ['provisioning', 'broker']),
);
