#!/usr/bin/env node
// The `fleet` command. It runs the compiled CLI (dist/, built by `npm ci` / `npm install` through the
// `prepare` script, or `npm run build`) in this very process: no wrapper process, so SIGINT and SIGTERM
// reach `fleet up` itself and it stops cleanly. When a source file is newer than the build (a `git pull`,
// an edit), it rebuilds first and says so on stderr; when it cannot build, it says why and runs the
// sources under tsx, slower but never stale.
import { build, staleReason } from '../cli/build.mjs';

// A reader that went away (`fleet device list | head`, a closed terminal) must not turn a write into an
// uncaught exception, least of all while `fleet up` is stopping: the output is lost, the stop goes on.
for (const s of [process.stdout, process.stderr]) s.on('error', () => {});

// Started by npm or npx (they set npm_command): npm passes SIGINT and SIGTERM on, but when npm itself is
// killed outright (or npx, which passes nothing on) the server would go on alone, holding its ports and
// the registry lock. A parent that is gone (this process re-parented) stops it as a SIGTERM would.
if (process.env.npm_command) {
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(watch);
    process.stderr.write(`fleet: npm (process ${parent}) is gone; stopping\n`);
    process.kill(process.pid, 'SIGTERM');
  }, 1000);
  watch.unref();
}

const stale = await staleReason();
let entry = '../dist/main.js';
if (stale) {
  try {
    const r = await build({ quiet: true, clean: false });
    process.stderr.write(`fleet: ${stale}; rebuilt dist/ in ${r.ms} ms\n`);
  } catch (e) {
    process.stderr.write(
      `fleet: ${stale} and the rebuild failed (${String(e?.message ?? e).split('\n')[0]}); ` +
        'running the TypeScript sources under tsx (slow start; `npm run build` shows the error)\n',
    );
    const { register } = await import('tsx/esm/api');
    register();
    entry = '../cli/main.ts';
  }
}
const { runCli } = await import(entry);
process.exitCode = await runCli(process.argv.slice(2));
