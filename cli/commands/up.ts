/** `fleet up` (what `npm start` runs): provisioning and the broker in one process on this data dir. */
import type { Command } from '../command.ts';
import { runServices } from '../serve.ts';

export const command: Command = {
  run: (ctx) => runServices(ctx, ['provisioning', 'broker']),
};
