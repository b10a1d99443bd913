/**
 * The console over HTTPS without a browser (undici, trusting only the fleet root), on PGlite and on
 * PostgreSQL: who may ask for a sign-in link, what a session may do once its operator is suspended or its
 * sessions revoked, the origin and CSRF checks on every kind of POST, typed refusals of bad input, the
 * security headers, and a station revocation cascading over a previewed window of devices.
 */
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import pino from 'pino';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../cli/main.ts';
import { consoleConfig } from '../config/index.ts';
import { BrokerMetricsReader } from '../console/broker-metrics.ts';
import { sessionAfter } from '../console/routes.ts';
import { createConsoleLink, dbOf } from '../registry/console.ts';
import {
  backends,
  type Creds,
  createStation,
  type Harness,
  startHarness,
  uid,
} from './helpers/provisioning.ts';

describe.each(backends('console'))('console on $name', (backend) => {
  let h: Harness;
  let base: string;
  let browser: Agent;

  /** Signs in as `operator` (a link made straight in the registry) and returns the cookie and CSRF token. */
  async function signIn(operator: string) {
    const token = randomBytes(32).toString('base64url');
    await createConsoleLink(dbOf(h.registry), {
      tokenSha256: createHash('sha256').update(token).digest('hex'),
      operator,
      expiresAt: new Date(Date.now() + 60_000),
    });
    const r = await post('/signin', `token=${token}`);
    expect(r.status).toBe(303);
    const cookie = String(r.headers['set-cookie']).split(';')[0]!;
    const overview = await get('/devices', cookie);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(overview.text)![1]!;
    return { cookie, csrf };
  }
  async function get(path: string, cookie?: string) {
    const r = await request(`${base}${path}`, { dispatcher: browser, headers: cookie ? { cookie } : {} });
    return { status: r.statusCode, headers: r.headers, text: await r.body.text() };
  }
  async function post(path: string, body: string, cookie?: string, origin: string | null = base) {
    const r = await request(`${base}${path}`, {
      method: 'POST',
      dispatcher: browser,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
        ...(origin ? { origin } : {}),
        ...(cookie ? { cookie } : {}),
      },
      body,
    });
    const text = await r.body.text();
    let code: string | undefined;
    try {
      code = JSON.parse(text).error?.code;
    } catch {}
    return { status: r.statusCode, headers: r.headers, text, code };
  }

  beforeAll(async () => {
    h = await startHarness(backend, { console: consoleConfig({ port: 0, brokerMetrics: [] }) });
    base = h.prov.console!.url();
    browser = new Agent({ connect: { ca: h.ca.ca.rootPem } });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await backend.cleanup();
  });

  it('gives a sign-in link only to an operator certificate, for that operator, on the console address', async () => {
    const r = await h.call(h.operator, 'POST', '/v1/console/links');
    expect(r.status).toBe(201);
    expect(r.json.operator).toBe(h.operator.id);
    expect(r.json.url).toMatch(new RegExp(`^${base}/signin\\?token=[A-Za-z0-9_-]{43}$`));
    const station: Creds = await createStation(h, { products: ['thermo'] });
    expect((await h.call(station, 'POST', '/v1/console/links')).json.error.code).toBe(
      'IDENTITY_KIND_FORBIDDEN',
    );
    expect((await h.call(null, 'POST', '/v1/console/links')).status).toBe(401);
    const audit = await h.registry.listAudit({ actor: `operator:${h.operator.id}`, action: 'console.link' });
    expect(audit.items.length).toBe(1);
  });

  it('refuses a POST without the session CSRF token, from another origin or with none, and changes nothing', async () => {
    const { cookie, csrf } = await signIn(h.operator.id);
    const dev = uid('dev');
    const { csrPem } = h.keyAndCsr();
    expect(
      (await h.call(h.operator, 'POST', '/v1/devices', { id: dev, product: 'thermo', csr: csrPem })).status,
    ).toBe(201);
    const paths = [
      [`/devices/${dev}/actions/suspend`, ''],
      [`/stations/${uid('st')}/actions/revoke`, ''],
      ['/signout', ''],
      [`/sessions/${'0'.repeat(16)}/revoke`, ''],
    ];
    for (const [path, body] of paths) {
      expect((await post(path!, body!, cookie)).code, path).toBe('CONSOLE_CSRF_INVALID');
      expect((await post(path!, `_csrf=${csrf}x`, cookie)).code, path).toBe('CONSOLE_CSRF_INVALID');
      expect((await post(path!, `_csrf=${csrf}`, cookie, 'https://evil.example')).code, path).toBe(
        'CONSOLE_ORIGIN_INVALID',
      );
      expect((await post(path!, `_csrf=${csrf}`, cookie, null)).code, path).toBe('CONSOLE_ORIGIN_INVALID');
    }
    expect((await h.registry.getDeviceRow(dev))?.status).toBe('active');
    // With the token and the origin it goes through, audited under the operator.
    const ok = await post(`/devices/${dev}/actions/suspend`, `_csrf=${csrf}`, cookie);
    expect(ok.status).toBe(303);
    expect((await h.registry.getDeviceRow(dev))?.status).toBe('suspended');
    const audit = await h.registry.listAudit({ subject: `device:${dev}`, action: 'subject.suspend' });
    expect(audit.items[0]).toMatchObject({ actor: `operator:${h.operator.id}` });
  });

  it('refuses bad input with a typed 4xx and unknown things with 404', async () => {
    const { cookie, csrf } = await signIn(h.operator.id);
    for (const [path, status] of [
      ['/devices?status=bogus', 400],
      ['/devices?connected=maybe', 400],
      ['/devices?q=a%20b', 400],
      ['/devices/bad%20id', 400],
      [`/devices/${uid('nobody')}`, 404],
      [`/devices/${uid('nobody')}/confirm?action=explode`, 400],
      ['/expiring?days=-1', 400],
      ['/audit?cursor=abc', 400],
      ['/stations?cursor=%27', 400],
      ['/no-such-page', 404],
    ] as const) {
      const r = await get(path, cookie);
      expect(r.status, path).toBe(status);
      expect(r.text, path).toContain('role="alert"');
    }
    expect(
      (await post(`/devices/${uid('nobody')}/actions/revoke`, `_csrf=${csrf}&reason=bogus`, cookie)).code,
    ).toBe('CONSOLE_INPUT_INVALID');
    expect((await post(`/devices/${uid('nobody')}/actions/revoke`, `_csrf=${csrf}`, cookie)).code).toBe(
      'SUBJECT_NOT_FOUND',
    );
  });

  it('sends pages that cannot be framed, cached or scripted from elsewhere', async () => {
    const { cookie } = await signIn(h.operator.id);
    const r = await get('/', cookie);
    expect(r.status).toBe(200);
    expect(r.headers['content-security-policy']).toContain("default-src 'none'");
    expect(r.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.text).not.toMatch(/<script>|https?:\/\/(?!localhost)/); // no inline script, nothing from elsewhere
  });

  it('refuses the sessions of a suspended operator, and ends every session of an operator on request', async () => {
    const op = await h.issueDirect('operator', uid('op'));
    const a = await signIn(op.id);
    expect((await get('/', a.cookie)).status).toBe(200);
    await h.call(h.operator, 'POST', `/v1/operators/${op.id}/suspend`);
    const refused = await get('/', a.cookie);
    expect(refused.status).toBe(403);
    expect(refused.text).toContain('suspended');
    await h.call(h.operator, 'POST', `/v1/operators/${op.id}/reinstate`);
    expect((await get('/', a.cookie)).status).toBe(200);
    const b = await signIn(op.id);
    const ended = await h.call(h.operator, 'POST', '/v1/console/sessions/revoke', { operator: op.id });
    expect(ended.json).toEqual({ operator: op.id, sessionsEnded: 2 });
    expect((await get('/', a.cookie)).status).toBe(401);
    expect((await get('/', b.cookie)).status).toBe(401);
  });

  it('fleet console prints a link that signs in once; revoke-sessions ends the sessions', async () => {
    // A data directory as `fleet init` leaves it, holding this harness's operator credential.
    const dir = await mkdtemp(join(tmpdir(), 'fleet-console-cli-'));
    await mkdir(join(dir, 'operator'));
    await mkdir(join(dir, 'ca'));
    await copyFile(h.operator.certPath, join(dir, 'operator', 'admin.crt.pem'));
    await copyFile(h.operator.keyPath, join(dir, 'operator', 'admin.key.pem'));
    await writeFile(join(dir, 'ca', 'root.crt.pem'), h.ca.ca.rootPem);
    const cli = async (...args: string[]) => {
      let out = '';
      const sink = new Writable({
        write: (c, _e, cb) => {
          out += String(c);
          cb();
        },
      });
      const code = await runCli(
        [...args, '--data', dir, '--json'],
        { FLEET_API_URL: h.apiUrl },
        { out: sink, err: sink },
      );
      return { code, json: code === 0 ? JSON.parse(out) : out };
    };
    try {
      const r = await cli('console');
      expect(r.code).toBe(0);
      expect(r.json.operator).toBe(h.operator.id);
      const token = new URL(r.json.url).searchParams.get('token')!;
      const first = await post('/signin', `token=${token}`);
      expect(first.status).toBe(303);
      expect((await post('/signin', `token=${token}`)).code).toBe('CONSOLE_LINK_INVALID');
      const cookie = String(first.headers['set-cookie']).split(';')[0]!;
      expect((await get('/', cookie)).status).toBe(200);
      expect(
        (await cli('console', 'sessions')).json.items.some(
          (s: { operator: string }) => s.operator === h.operator.id,
        ),
      ).toBe(true);
      const ended = await cli('console', 'revoke-sessions');
      expect(ended.json.sessionsEnded).toBeGreaterThanOrEqual(1);
      expect((await get('/', cookie)).status).toBe(401);
      expect((await cli('console', 'bogus')).code).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("counts a page's background refresh as no activity: an open tab left alone still goes idle", async () => {
    const { cookie } = await signIn(h.operator.id);
    const token = cookie.split('=')[1]!;
    const id = createHash('sha256').update(token).digest('hex');
    const lastSeen = async () => {
      const r = (await dbOf(h.registry).execute(
        sql`select last_seen_at from console_sessions where id_sha256 = ${id}`,
      )) as unknown;
      const rows = (Array.isArray(r) ? r : (r as { rows: unknown[] }).rows) as {
        last_seen_at: string | Date;
      }[];
      return new Date(rows[0]!.last_seen_at).getTime();
    };
    await dbOf(h.registry).execute(
      sql`update console_sessions set last_seen_at = now() - interval '10 minutes' where id_sha256 = ${id}`,
    );
    const before = await lastSeen();
    expect((await get('/overview.json', cookie)).status).toBe(200);
    expect(await lastSeen()).toBe(before);
    expect((await get('/', cookie)).status).toBe(200);
    expect(await lastSeen()).toBeGreaterThan(before + 9 * 60_000);
  });

  it('previews a station cascade with its device count, then revokes exactly those devices', async () => {
    const { cookie, csrf } = await signIn(h.operator.id);
    const station = await createStation(h, { products: ['thermo'] });
    const from = new Date(Date.now() - 60_000);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { csrPem } = h.keyAndCsr();
      const id = uid('casc');
      const r = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: csrPem,
      });
      expect(r.status).toBe(201);
      ids.push(id);
    }
    const to = new Date(Date.now() + 1000);
    const preview = await get(
      `/stations/${station.id}/confirm?action=revoke&from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`,
      cookie,
    );
    expect(preview.text).toContain('also revoke 3 device(s)');
    const done = await post(
      `/stations/${station.id}/actions/revoke`,
      `_csrf=${csrf}&reason=keyCompromise&from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`,
      cookie,
    );
    expect(done.status).toBe(303);
    for (const id of ids) expect((await h.registry.getDeviceRow(id))?.status).toBe('revoked');
    expect((await h.registry.getPrincipal('station', station.id))?.status).toBe('revoked');
    const page = await get(String(done.headers['location']), cookie);
    expect(page.text).toContain('Devices revoked with it: <strong>3</strong>');
  });
});

describe('the session report after an action', () => {
  const t = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
  const row = (c: number, d: number | null, node = 'n1') => ({
    seq: c,
    kind: 'device' as const,
    id: 'd',
    brokerNode: node,
    remoteAddress: '10.0.0.1',
    connectedAt: t(c),
    disconnectedAt: d === null ? null : t(d),
  });
  it('says closed (and how long after), still open, or that there was no session', () => {
    expect(sessionAfter(t(5), [row(1, 6)])).toMatchObject({ state: 'closed', afterMs: 1000 });
    expect(sessionAfter(t(5), [row(1, null)])).toMatchObject({ state: 'open' });
    expect(sessionAfter(t(5), [row(1, 3)]).state).toBe('none');
    expect(sessionAfter(t(5), [row(7, null), row(1, 3)]).state).toBe('none');
    expect(sessionAfter(t(5), [])).toMatchObject({ state: 'none' });
  });
});

describe('the broker metrics reader', () => {
  /** A reader of `url` every `everyMs` whose warnings land in `lines`. */
  function reader(url: string, everyMs = 50) {
    const lines: Record<string, unknown>[] = [];
    const log = pino(
      { level: 'info' },
      { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) },
    );
    return { r: new BrokerMetricsReader([url], log, everyMs), lines };
  }
  const warnings = (lines: Record<string, unknown>[]) =>
    lines.filter((l) => l['event'] === 'console_broker_metrics_unreachable');
  const closedPort = async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const port = (s.address() as AddressInfo).port;
    await new Promise((r) => s.close(r));
    return port;
  };

  it('says nothing of a broker not up yet at its first read (fleet up starts the broker after the console)', async () => {
    // One read only (the next is a minute away): wait until it has failed.
    const { r, lines } = reader(`http://127.0.0.1:${await closedPort()}/metrics`, 60_000);
    r.start();
    for (let i = 0; i < 100 && r.rates().nodes[0]?.error !== 'ECONNREFUSED'; i++)
      await new Promise((res) => setTimeout(res, 20));
    r.stop();
    // Its state is known all the same, for the overview.
    expect(r.rates().nodes[0]).toEqual({ url: expect.any(String), ok: false, error: 'ECONNREFUSED' });
    expect(warnings(lines)).toEqual([]);
  });

  it('warns once of a broker still unreachable at the next read, and at once of one that went away', async () => {
    const down = reader(`http://127.0.0.1:${await closedPort()}/metrics`);
    down.r.start();
    await new Promise((res) => setTimeout(res, 300));
    down.r.stop();
    expect(warnings(down.lines)).toHaveLength(1);

    const server = createHttpServer((_req, res) => res.end('fleet_mqtt_connects_total 1\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const up = reader(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`);
    up.r.start();
    await new Promise((res) => setTimeout(res, 120));
    expect(warnings(up.lines)).toEqual([]);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await new Promise((res) => setTimeout(res, 120));
    up.r.stop();
    expect(warnings(up.lines)).toHaveLength(1);
  });
});
