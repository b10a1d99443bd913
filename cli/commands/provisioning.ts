/** `fleet provisioning`: run the provisioning service alone (its composition root is provisioning/main.ts). */
import { runProvisioning } from '../../provisioning/main.ts';
import { apiFlags } from '../args.ts';
import type { Command } from '../command.ts';

export const command: Command = {
  async run(ctx) {
    apiFlags(ctx.argv, []);
    return runProvisioning(ctx.config);
  },
};
