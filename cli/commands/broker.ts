/** `fleet broker`: the MQTT broker alone on this data dir (its composition root is broker/main.ts). */
import { simple } from '../command.ts';
import { runServices, SERVE_ENV } from '../serve.ts';

export const command = simple(
  {
    name: 'broker',
    summary: 'run the MQTT broker alone (mTLS, topic policy, live revocation, metrics)',
    description:
      'One broker node on this data directory: several nodes share REDIS_URL and DATABASE_URL (infra/).\n\n' +
      SERVE_ENV,
    examples: [
      'fleet broker',
      'DATABASE_URL=postgres://… REDIS_URL=redis://… FLEET_BROKER_NODE_ID=b1 fleet broker',
    ],
  },
  (ctx) => runServices(ctx, ['broker']),
);
