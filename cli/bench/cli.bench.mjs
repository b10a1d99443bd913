#!/usr/bin/env node
/**
 * `npm run bench:cli`: how long `fleet` commands take from a shell, beside `node -e 0` (the floor: a Node
 * start doing nothing) measured in the same run, interleaved, median of N runs with min and max.
 *
 *   node cli/bench/cli.bench.mjs [--runs 10] [--source] [--compare DIR]
 *
 * It makes a throwaway data directory, starts `fleet up` there on free ports, issues one device, then times
 * `fleet --help`, `fleet device --help`, and the operator commands against the running system
 * (`device list`, `device show`, `crl`, `expiring`). `--source` adds the same commands run from the
 * TypeScript sources under tsx (how `fleet` ran before the build), for comparison. `--compare DIR` adds
 * `fleet --help` and `fleet device list` run by another checkout's bin/fleet.mjs (an older commit, say),
 * against the same running system, interleaved with the rest.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1]) || (args.includes('--runs') ? 0 : 10);
const withSource = args.includes('--source');
const compare = args.includes('--compare') ? args[args.indexOf('--compare') + 1] : undefined;
if (!(runs > 0)) throw new Error('--runs N: N must be a positive number');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const data = mkdtempSync(join(tmpdir(), 'fleet-bench-cli-'));
const env = {
  ...process.env,
  FLEET_DATA_DIR: data,
  FLEET_API_PORT: String(await freePort()),
  FLEET_PUBLIC_PORT: String(await freePort()),
  FLEET_MQTT_PORT: String(await freePort()),
  FLEET_METRICS_PORT: String(await freePort()),
  FLEET_CONSOLE_PORT: String(await freePort()),
  FLEET_LOG_FORMAT: 'json',
  FLEET_LOG_LEVEL: 'warn',
};
const fleet = [process.execPath, join(ROOT, 'bin', 'fleet.mjs')];
const tsxCli = join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const source = [process.execPath, tsxCli, join(ROOT, 'cli', 'main.ts')];

function run(cmd, check = true) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0], cmd.slice(1), { cwd: ROOT, env, encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (check && r.status !== 0 && r.status !== 3)
    throw new Error(`${cmd.slice(1).join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

// Build once (so no case pays for a rebuild), then a running system with one device.
run(fleet.concat('--help'));
const up = spawn(fleet[0], [...fleet.slice(1), 'up'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
let banner = '';
let stderr = '';
up.stderr.on('data', (b) => {
  stderr += b;
});
await new Promise((resolve, reject) => {
  up.stdout.on('data', (b) => {
    banner += b;
    if (banner.includes('Ctrl-C stops it.')) resolve();
  });
  up.on('exit', (code) => reject(new Error(`fleet up exited ${code}: ${stderr}`)));
});
const csr = join(data, 'dev-1.csr');
spawnSync(
  'openssl',
  [
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(data, 'dev-1.key'),
    '-subj',
    '/CN=dev-1',
    '-out',
    csr,
  ],
  { stdio: 'ignore' },
);
run(fleet.concat(['device', 'issue', '--id', 'dev-1', '--product', 'thermo', '--csr', csr]));

const cases = [
  ['node -e 0 (baseline)', [process.execPath, '-e', '0']],
  ['fleet --help', fleet.concat('--help')],
  ['fleet device issue --help', fleet.concat(['device', 'issue', '--help'])],
  ['fleet device list', fleet.concat(['device', 'list'])],
  ['fleet device show dev-1', fleet.concat(['device', 'show', 'dev-1'])],
  ['fleet crl', fleet.concat('crl')],
  ['fleet expiring', fleet.concat('expiring')],
  // npx's own start (npm's CLI) before it runs bin/fleet.mjs: what `npx fleet` costs on top.
  ['npx fleet --help', ['npx', 'fleet', '--help']],
];
if (compare) {
  const other = [process.execPath, join(compare, 'bin', 'fleet.mjs')];
  cases.push(
    [`${compare}: fleet --help`, other.concat('--help')],
    [`${compare}: fleet device list`, other.concat(['device', 'list'])],
  );
}
if (withSource)
  cases.push(
    ['tsx cli/main.ts --help (source)', source.concat('--help')],
    ['tsx cli/main.ts device list (source)', source.concat(['device', 'list'])],
  );

const times = cases.map(() => []);
try {
  for (let i = 0; i < runs; i++) {
    cases.forEach(([, cmd], k) => {
      times[k].push(run(cmd));
    });
    process.stderr.write(`\rrun ${i + 1}/${runs}`);
  }
  process.stderr.write('\n');
} finally {
  up.kill('SIGTERM');
  await new Promise((r) => up.on('exit', r));
  rmSync(data, { recursive: true, force: true });
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const base = median(times[0]);
const load = (await import('node:os'))
  .loadavg()
  .map((x) => x.toFixed(1))
  .join(' ');
console.log(
  `fleet CLI start times, ${runs} runs each, interleaved (ms; Node ${process.version}; load ${load})`,
);
const width = Math.max(40, ...cases.map(([n]) => n.length));
console.log(
  `${'command'.padEnd(width)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}  × node -e 0`,
);
cases.forEach(([name], k) => {
  const t = times[k];
  console.log(
    `${name.padEnd(width)} ${median(t).toFixed(0).padStart(8)} ${Math.min(...t)
      .toFixed(0)
      .padStart(8)} ${Math.max(...t)
      .toFixed(0)
      .padStart(8)}  ${(median(t) / base).toFixed(2)}`,
  );
});
console.log(
  `minus the baseline (Fleet's own share): --help ${(median(times[1]) - base).toFixed(0)} ms, device list ${(median(times[3]) - base).toFixed(0)} ms`,
);
