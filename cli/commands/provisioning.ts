/** `fleet provisioning`: run the provisioning service alone (its composition root is provisioning/main.ts). */
import { runProvisioning } from '../../provisioning/main.ts';
import { assertPortsFree } from '../../runtime/index.ts';
import { simple } from '../command.ts';
import { SERVE_ENV } from '../serve.ts';

export const command = simple(
  {
    name: 'provisioning',
    summary: 'run the provisioning service alone: the mTLS API (stations, operators, EST), CRL and OCSP',
    description:
      'Opens the CA that `fleet init` made (it never creates one) and the registry, and runs until Ctrl-C or\n' +
      'SIGTERM.\n\n' +
      SERVE_ENV,
    examples: ['fleet provisioning', 'FLEET_API_PORT=9443 fleet provisioning --data /var/lib/fleet'],
  },
  async (ctx) => {
    await assertPortsFree(ctx.config, ['provisioning']);
    return runProvisioning(ctx.config);
  },
);
