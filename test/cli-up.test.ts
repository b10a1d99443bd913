/**
 * `fleet up` as a user runs it: the `fleet` binary in its own process on a fresh data directory, then the
 * operator's read-only commands against it, a second `fleet up` on the same ports, a client without a
 * certificate, and Ctrl-C pressed the way a terminal and npm deliver it (twice).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, connect as netConnect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../cli/main.ts';
import { prettyLine } from '../config/log.ts';
import { openssl, opensslCsr } from './helpers/pki.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** The keys of a JSON object's top level, in order, duplicates kept (JSON.parse keeps only the last). */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(line.slice(i + 1, j));
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return keys;
}

let dir: string;
let env: Record<string, string>;
let up: ChildProcess;
let stdout = '';
let stderr = '';
let exited: Promise<number | null>;

async function fleet(...args: string[]) {
  const out = new Capture();
  const err = new Capture();
  const code = await runCli([...args, '--json'], env, { out, err });
  let json: unknown;
  try {
    json = JSON.parse(out.text);
  } catch {
    json = undefined;
  }
  // biome-ignore lint/suspicious/noExplicitAny: test convenience
  return { code, out: out.text, err: err.text, json: json as any };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fleet-up-'));
  env = {
    PATH: process.env.PATH ?? '',
    FLEET_DATA_DIR: join(dir, 'data'),
    FLEET_API_PORT: String(await freePort()),
    FLEET_PUBLIC_PORT: String(await freePort()),
    FLEET_MQTT_PORT: String(await freePort()),
    FLEET_METRICS_PORT: String(await freePort()),
    FLEET_CONSOLE_PORT: String(await freePort()),
    FLEET_LOG_FORMAT: 'json',
  };
  up = spawn(process.execPath, ['bin/fleet.mjs', 'up'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  up.stderr!.on('data', (b) => {
    stderr += b;
  });
  exited = new Promise((resolve) => up.on('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    up.stdout!.on('data', (b) => {
      stdout += b;
      if (stdout.includes('Ctrl-C stops it.')) resolve();
    });
    void exited.then((code) => reject(new Error(`fleet up exited ${code}: ${stderr}`)));
  });
}, 180_000);

afterAll(async () => {
  if (up.exitCode === null) up.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('fleet up on a fresh data directory', () => {
  it('starts quietly: on a terminal (pretty logs) the banner and nothing else, no warning', async () => {
    // Before: a WARN that the broker's metrics were unreachable (the console read them before the broker
    // had started) and an INFO console_listening line, around the banner of every start.
    await new Promise((r) => setTimeout(r, 300));
    const lines = stderr.split('\n').filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(3);
    expect(lines.map((l) => prettyLine(l, false)).filter((l) => l !== '')).toEqual([]);
    expect(lines.filter((l) => JSON.parse(l).level >= 40)).toEqual([]);
  });

  it('says where it listens: loopback unless told otherwise', () => {
    expect(stdout).toContain('listening on            localhost (loopback only;');
    expect(stdout).toContain(`mqtts://localhost:${env.FLEET_MQTT_PORT}`);
  });

  it('is not reachable on any other address of this machine', async () => {
    const others = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    for (const host of others) {
      for (const port of [env.FLEET_MQTT_PORT, env.FLEET_METRICS_PORT, env.FLEET_API_PORT]) {
        const outcome = await new Promise<string>((resolve) => {
          const s = netConnect({ host, port: Number(port), timeout: 2000 });
          s.once('connect', () => {
            s.destroy();
            resolve('connected');
          });
          s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
          s.once('timeout', () => {
            s.destroy();
            resolve('timeout');
          });
        });
        expect(outcome, `${host}:${port}`).not.toBe('connected');
      }
    }
  });
});

describe('read-only and operator commands while it runs (no REGISTRY_LOCKED)', () => {
  it('fleet crl fetches the running service CRL, signature checked, as PEM or DER', async () => {
    const r = await fleet('crl');
    expect(r.code, r.err).toBe(0);
    expect(r.json.source).toBe(`http://localhost:${env.FLEET_PUBLIC_PORT}/crl/device.crl`);
    expect(r.json.pem).toMatch(/^-----BEGIN X509 CRL-----/);
    expect(r.json.crlNumber).toMatch(/^\d+$/);
    const file = join(dir, 'device.crl');
    expect((await fleet('crl', '--out', file)).code).toBe(0);
    const text = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-crlnumber']);
    expect(text.code, text.stderr).toBe(0);
    const infra = await fleet('crl', '--ca', 'infrastructure');
    expect(infra.code, infra.err).toBe(0);
  });

  it('device issue, list and show, audit, expiring, station list and init all answer', async () => {
    const { csrPath } = await opensslCsr(dir, '/CN=dev-1');
    const issued = await fleet('device', 'issue', '--id', 'dev-1', '--product', 'thermo', '--csr', csrPath);
    expect(issued.code, issued.err).toBe(0);
    const list = await fleet('device', 'list');
    expect(list.code, list.err).toBe(0);
    expect(list.json.items.map((d: { id: string }) => d.id)).toEqual(['dev-1']);
    expect((await fleet('device', 'show', 'dev-1')).json.status).toBe('active');
    const audit = await fleet('audit', '--subject', 'device:dev-1');
    expect(audit.code, audit.err).toBe(0);
    expect(audit.json.items.length).toBeGreaterThan(0);
    expect((await fleet('expiring', '--days', '1')).code).toBe(0);
    expect((await fleet('station', 'list')).code).toBe(0);
    const init = await fleet('init');
    expect(init.code, init.err).toBe(0);
    expect(init.json.created).toEqual([]);
    expect(init.json.registry).toContain('in use by process');
    for (const r of [list, audit, init]) expect(r.err).not.toContain('REGISTRY_LOCKED');
  });
});

describe('a second fleet up', () => {
  it('on the same ports is refused at once with the variable to change, and creates nothing', async () => {
    const fresh = join(dir, 'second');
    const err = new Capture();
    const out = new Capture();
    expect(await runCli(['up', '--json'], { ...env, FLEET_DATA_DIR: fresh }, { out, err })).toBe(1);
    const e = JSON.parse(out.text).error;
    expect(e.code).toBe('PORT_IN_USE');
    expect(e.details.variable).toBe('FLEET_API_PORT');
    expect(err.text).toContain('FLEET_API_PORT=');
    expect(err.text).not.toContain('EADDRINUSE');
    expect(existsSync(fresh)).toBe(false);
  });

  it.each([
    ['FLEET_MQTT_PORT', 'broker'],
    ['FLEET_PUBLIC_PORT', 'up'],
    ['FLEET_CONSOLE_PORT', 'up'],
  ])('names %s when only that port is taken (fleet %s)', async (variable, command) => {
    const fresh = join(dir, `third-${variable}`);
    const others: Record<string, string> = {};
    for (const v of [
      'FLEET_API_PORT',
      'FLEET_PUBLIC_PORT',
      'FLEET_MQTT_PORT',
      'FLEET_METRICS_PORT',
      'FLEET_CONSOLE_PORT',
    ])
      others[v] = v === variable ? env[v]! : String(await freePort());
    const out = new Capture();
    const code = await runCli(
      [command, '--json'],
      { ...env, ...others, FLEET_DATA_DIR: fresh },
      { out, err: new Capture() },
    );
    expect(code).toBe(1);
    expect(JSON.parse(out.text).error).toMatchObject({ code: 'PORT_IN_USE', details: { variable } });
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('the broker and a client without a certificate', () => {
  it('logs the refusal with the source address, once per window however many come', async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve) => {
        const s = tlsConnect({
          host: '127.0.0.1',
          port: Number(env.FLEET_MQTT_PORT),
          rejectUnauthorized: false,
        });
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.on('secureConnect', () => s.write(Buffer.from([0x10, 0x00])));
      });
    }
    await new Promise((r) => setTimeout(r, 300));
    const lines = stderr
      .split('\n')
      .filter((l) => l.includes('"tls_client_refused"'))
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 40,
      outcome: 'no_certificate',
      remote: '127.0.0.1',
      service: 'broker',
    });
  });
});

describe('stopping', () => {
  it('logs no line with a key written twice', () => {
    const lines = stderr.split('\n').filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) {
      const keys = topLevelKeys(l);
      expect(new Set(keys).size, l).toBe(keys.length);
    }
  });

  it('Ctrl-C delivered again and again while it stops (terminal, npm, a user) still stops cleanly: registry closed, lock gone', async () => {
    // Before: `once` listeners, and a second SIGINT during the stop killed it between broker_stopped and
    // registry_closed, leaving registry.lock behind (1 stop in 7 under npm start); and bin/fleet.mjs, a
    // wrapper, died at the first SIGINT while the real process went on.
    up.kill('SIGINT');
    const again = setInterval(() => up.exitCode === null && up.signalCode === null && up.kill('SIGINT'), 15);
    const code = await exited.finally(() => clearInterval(again));
    // Exit 0, or the default action of a SIGINT that lands while Node tears the finished process down.
    expect(code === 0 || up.signalCode === 'SIGINT', stderr.slice(-2000)).toBe(true);
    expect(stderr).toContain('fleet: stopped');
    expect(stderr).toContain('"registry_closed"');
    expect(existsSync(join(env.FLEET_DATA_DIR!, 'registry.lock'))).toBe(false);
    expect(await readFile(join(env.FLEET_DATA_DIR!, 'ca', 'root.crt.pem'), 'utf8')).toMatch(
      /BEGIN CERTIFICATE/,
    );
  });
  it('stops cleanly on SIGTERM after its terminal went away (stdout and stderr closed)', async () => {
    // Before: the first write to the closed stderr ("stopping", a log line) threw, the process died
    // half-way through the stop and left registry.lock behind.
    const again = spawn(process.execPath, ['bin/fleet.mjs', 'up'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const gone = new Promise<number | null>((resolve) => again.on('exit', (c) => resolve(c)));
    let banner = '';
    await new Promise<void>((resolve, reject) => {
      again.stdout!.on('data', (b) => {
        banner += b;
        if (banner.includes('Ctrl-C stops it.')) resolve();
      });
      void gone.then((c) => reject(new Error(`fleet up exited ${c}`)));
    });
    again.stdout!.destroy();
    again.stderr!.destroy();
    await new Promise((r) => setTimeout(r, 200));
    again.kill('SIGTERM');
    expect(await gone).toBe(0);
    expect(existsSync(join(env.FLEET_DATA_DIR!, 'registry.lock'))).toBe(false);
  });
  it('stops cleanly when the npm or npx that started it is killed outright', async () => {
    // npx passes no signal on, and a SIGKILLed npm cannot: the server would go on alone with the lock.
    const parent = spawn(
      process.execPath,
      [
        '-e',
        "const c = require('node:child_process').spawn(process.execPath, ['bin/fleet.mjs', 'up'], { stdio: ['ignore', 'ignore', 'inherit'] }); process.stdout.write(String(c.pid) + '\\n'); setInterval(() => {}, 1000);",
      ],
      { env: { ...env, npm_command: 'exec' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    parent.stderr!.on('data', (b) => {
      err += b;
    });
    const child = Number(
      await new Promise<string>((resolve) => parent.stdout!.once('data', (b) => resolve(String(b)))),
    );
    const lock = join(env.FLEET_DATA_DIR!, 'registry.lock');
    for (let i = 0; i < 600 && !err.includes('"broker_started"'); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(lock)).toBe(true);
    parent.kill('SIGKILL');
    let alive = true;
    for (let i = 0; i < 200 && alive; i++) {
      await new Promise((r) => setTimeout(r, 100));
      try {
        process.kill(child, 0);
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
    expect(existsSync(lock)).toBe(false);
  });
});
