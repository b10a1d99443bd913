/**
 * `npm run bench:console`: the console's page load times with 100,000 devices in the registry.
 *
 * The embedded default as `fleet up` runs it: PGlite on disk (or PostgreSQL when DATABASE_URL is set), the
 * provisioning service with its console on HTTPS, a signed-in session. The devices (with a certificate
 * each, 20 % connected, some suspended or revoked, an audit entry each) are written with set-based SQL,
 * not through the issuing path. Each page is fetched `--rounds` x `--requests` times, one request at a
 * time over a kept-alive TLS connection (client and server never compete for the CPU), pages interleaved
 * by round; printed: p50, p95 and max per page, the p50 of each round, and the ratio to the baseline in
 * the same run: the console's static stylesheet over the same connection (TLS, HTTP and the session-less
 * route, no database). Then the EXPLAIN of the queries behind the pages.
 *
 *   npm run bench:console -- [--devices 100000] [--rounds 3] [--requests 20]
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { Agent, request } from 'undici';
import { consoleConfig } from '../../config/index.ts';
import { createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { buildProvisioning } from '../../provisioning/index.ts';
import { Issuance } from '../../provisioning/issuance.ts';
import {
  connectedCount,
  countDevices,
  createConsoleLink,
  dbOf,
  deviceCounts,
  expiringCount,
  presenceHistoryOf,
  revocationsSince,
  searchDevices,
} from '../../registry/console.ts';
import { openRegistry } from '../../registry/index.ts';
import { sha256 } from '../session.ts';
import { explainCall } from './explain.ts';
import { seedDevices } from './seed.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
    requests: { type: 'string', default: '20' },
  },
});
const DEVICES = Number(values.devices);
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const BUDGET_MS = 300;

const dir = mkdtempSync(join(tmpdir(), 'fleet-console-bench-'));
const log = pino({ level: 'warn' });
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const f1 = (n: number) => n.toFixed(1);

async function main() {
  const databaseUrl = process.env['DATABASE_URL'];
  const ca = await createCa(
    join(dir, 'ca'),
    new FileKeyStore(join(dir, 'keys'), randomBytes(24).toString('base64url')),
    {
      ...DEFAULT_CA_CONFIG,
      organization: 'Fleet Bench',
    },
  );
  const registry = await openRegistry(databaseUrl ? { databaseUrl } : { dataDir: dir });
  const db = dbOf(registry);
  const prefix = `b${Date.now().toString(36)}`;
  console.log(
    `registry: ${databaseUrl ? 'PostgreSQL (DATABASE_URL)' : 'PGlite on disk (the embedded default)'}`,
  );
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  console.log(`load average at start: ${load()} (2 shared cores: a busy machine widens the p95)`);
  const t = performance.now();
  const ids = await seedDevices(db, { prefix, count: DEVICES });
  await db.execute(sql`analyze`);
  const [real] = (await db
    .execute(sql`select count(*)::int as n from devices`)
    .then((r) => (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows))) as { n: number }[];
  console.log(
    `seeded ${DEVICES.toLocaleString('en-US')} devices (with certificates, presence, status changes, audit) in ${f1((performance.now() - t) / 1000)} s; devices in the registry: ${real!.n.toLocaleString('en-US')}`,
  );

  const prov = await buildProvisioning(
    {
      host: 'localhost',
      apiPort: 0,
      publicPort: 0,
      brokerUrl: 'mqtts://localhost:8883',
      console: consoleConfig({ port: 0, brokerMetrics: [] }),
    },
    { ca, registry, logger: log },
  );
  await prov.listen();
  const base = prov.console!.url();
  // An operator and a signed-in session, as `fleet console` and the browser make them.
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  await new Issuance(ca, registry).issuePrincipal(
    { kind: 'operator', id: 'bench' },
    { spki: publicKey.export({ type: 'spki', format: 'der' }) },
    'system:bench',
  );
  const token = randomBytes(32).toString('base64url');
  await createConsoleLink(db, {
    tokenSha256: sha256(token),
    operator: 'bench',
    expiresAt: new Date(Date.now() + 60_000),
  });
  const agent = new Agent({ connect: { ca: ca.rootPem }, connections: 1, pipelining: 1 });
  const signin = await request(`${base}/signin`, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base },
    body: `token=${token}`,
  });
  await signin.body.text();
  const cookie = String(signin.headers['set-cookie']).split(';')[0]!;
  if (signin.statusCode !== 303 || !cookie.startsWith('__Host-'))
    throw new Error(`sign-in failed: ${signin.statusCode}`);

  const mid = `${prefix}-${String(Math.floor(DEVICES / 2)).padStart(6, '0')}`;
  const someDevice = () => `${prefix}-${String(Math.floor(Math.random() * DEVICES)).padStart(6, '0')}`;
  const pages: [string, () => string][] = [
    ['baseline: static stylesheet', () => '/assets/console.css'],
    ['overview', () => '/'],
    ['overview.json (live refresh)', () => '/overview.json'],
    ['device list, first page', () => '/devices'],
    ['device list, page in the middle', () => `/devices?cursor=${mid}`],
    ['search: id prefix', () => `/devices?q=${prefix}-0421`],
    ['search: product + connected', () => '/devices?product=meter&connected=yes'],
    ['search: station + status revoked', () => '/devices?station=line-2&status=revoked'],
    ['search: fleet + not connected', () => '/devices?fleet=apac&connected=no'],
    ['device page', () => `/devices/${someDevice()}`],
    ['stations', () => '/stations'],
    ['audit log', () => '/audit'],
    ['expiring (90 days)', () => '/expiring?days=90'],
  ];
  const get = async (path: string) => {
    const t0 = performance.now();
    const r = await request(`${base}${path}`, { dispatcher: agent, headers: { cookie } });
    const body = await r.body.text();
    const ms = performance.now() - t0;
    if (r.statusCode !== 200) throw new Error(`${path}: HTTP ${r.statusCode} ${body.slice(0, 200)}`);
    return ms;
  };
  for (const [, path] of pages) for (let i = 0; i < 3; i++) await get(path()); // warm-up
  const samples = new Map<string, number[]>(pages.map(([n]) => [n, []]));
  const roundP50 = new Map<string, number[]>(pages.map(([n]) => [n, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, path] of pages) {
      const xs: number[] = [];
      for (let i = 0; i < REQUESTS; i++) xs.push(await get(path()));
      samples.get(name)!.push(...xs);
      roundP50.get(name)!.push(pct(xs, 50));
    }
  }
  const baseline = pct(samples.get(pages[0]![0])!, 50);
  console.log(
    `\npage load over HTTPS with a session, ${ROUNDS} rounds x ${REQUESTS} requests (ms; budget ${BUDGET_MS} ms)`,
  );
  console.log(
    `${'page'.padEnd(36)} ${'p50'.padStart(7)} ${'p95'.padStart(7)} ${'max'.padStart(7)}  ${'round p50s'.padEnd(20)} x baseline`,
  );
  let worst = 0;
  for (const [name] of pages) {
    const xs = samples.get(name)!;
    worst = name.startsWith('baseline') ? worst : Math.max(worst, pct(xs, 95));
    console.log(
      `${name.padEnd(36)} ${f1(pct(xs, 50)).padStart(7)} ${f1(pct(xs, 95)).padStart(7)} ${f1(Math.max(...xs)).padStart(7)}  ${roundP50
        .get(name)!
        .map(f1)
        .join(' / ')
        .padEnd(20)} ${f1(pct(xs, 50) / baseline)}`,
    );
  }
  console.log(`load average at the end: ${load()}`);
  console.log(
    `\nworst p95 of a page: ${f1(worst)} ms (${worst < BUDGET_MS ? 'under' : 'OVER'} the ${BUDGET_MS} ms budget)`,
  );

  console.log('\nquery plans behind the pages (EXPLAIN ANALYZE):');
  const plans: [string, () => Promise<unknown>][] = [
    ['devices by status (counters)', () => deviceCounts(db)],
    ['connected now (counter)', () => connectedCount(db)],
    ['revoked today', () => revocationsSince(db, new Date(Date.now() - 86_400_000))],
    ['expiring within 90 days', () => expiringCount(db, 90)],
    ['first page', () => searchDevices(db, { limit: 50 })],
    ['page in the middle', () => searchDevices(db, { cursor: mid, limit: 50 })],
    ['id prefix', () => searchDevices(db, { prefix: `${prefix}-0421`, limit: 50 })],
    ['product + connected', () => searchDevices(db, { product: 'meter', connected: true, limit: 50 })],
    ['match count, capped at 1,000', () => countDevices(db, { product: 'meter' })],
    ['match count, product + connected', () => countDevices(db, { product: 'meter', connected: true })],
    ['match count, fleet + not connected', () => countDevices(db, { fleet: 'apac', connected: false })],
    ['presence history', () => presenceHistoryOf(db, 'device', ids.first, 20)],
  ];
  for (const [name, run] of plans) {
    console.log(`-- ${name}\n${await explainCall(db, run, true)}`);
  }
  await agent.close();
  await prov.close();
  await registry.close();
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
