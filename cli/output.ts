/** How a command answers: the JSON value with --json, else the text for a human. */
import type { CommandContext } from './command.ts';

export function print(ctx: CommandContext, json: unknown, text: string): void {
  ctx.out.write(
    ctx.config.json ? `${JSON.stringify(json, null, 2)}\n` : text.endsWith('\n') ? text : `${text}\n`,
  );
}
