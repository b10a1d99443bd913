/** `fleet broker`: the MQTT broker alone on this data dir (its composition root is broker/main.ts). */
import type { Command } from '../command.ts';
import { runServices } from '../serve.ts';

export const command: Command = {
  run: (ctx) => runServices(ctx, ['broker']),
};
