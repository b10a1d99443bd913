/**
 * The operator console in a real browser: Debian's Chromium driven by playwright-core, against the
 * provisioning service (with its console) and the broker started here on one CA and one registry, as
 * `fleet up` runs them. The browser trusts the test root through its own NSS database (what an operator
 * does by importing data/ca/root.crt.pem); nothing skips certificate verification.
 *
 * One browser for the whole file. Without Chromium the file is skipped with the reason printed, except in
 * CI (CI=true), where .ci/run installs it and its absence is a failure.
 *
 * Screenshots go to FLEET_CONSOLE_SCREENSHOTS (e.g. docs/console) when set, else to a temporary folder.
 */

import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { sql } from 'drizzle-orm';
import type { MqttClient } from 'mqtt';
import pino from 'pino';
import type { BrowserContext, Locator, Page } from 'playwright-core';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../broker/index.ts';
import { consoleConfig } from '../config/index.ts';
import { certToPem } from '../pki/x509.ts';
import { buildProvisioning, type Provisioning } from '../provisioning/index.ts';
import { Issuance } from '../provisioning/issuance.ts';
import { dbOf } from '../registry/console.ts';
import { openRegistry, type Registry } from '../registry/index.ts';
import { closedWithin, enroll, startBroker, tryConnect } from './helpers/broker.ts';
import { makeTestCa, type TestCa } from './helpers/pki.ts';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const haveCertutil = (() => {
  try {
    execFileSync('certutil', ['-H'], { stdio: 'ignore' });
    return true;
  } catch (e) {
    return (e as { status?: number }).status !== undefined && (e as { code?: string }).code !== 'ENOENT';
  }
})();
const ready = haveChromium && haveCertutil;
if (!ready) {
  const why = `${haveChromium ? '' : `${CHROMIUM} is missing (apt-get install chromium) `}${haveCertutil ? '' : 'certutil is missing (apt-get install libnss3-tools)'}`;
  if (process.env['CI']) throw new Error(`console browser tests cannot run in CI: ${why}`);
  console.warn(`skipping the console browser tests: ${why}`);
}

const shots = resolve(
  process.env['FLEET_CONSOLE_SCREENSHOTS'] ?? mkdtempSync(join(tmpdir(), 'fleet-shots-')),
);

/** Retries an assertion until it passes or `ms` runs out (pages update on their own: redirects, live refresh). */
async function eventually(check: () => Promise<void>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      await check();
      return;
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
// What a user sees (Playwright's innerText), not DOM text.
const contains = (l: Locator, text: string, ms?: number) =>
  // biome-ignore lint/performance/useDomNodeTextContent: a Playwright locator, not a DOM node
  eventually(async () => expect(await l.first().innerText()).toContain(text), ms);
const equals = (l: Locator, text: string, ms?: number) =>
  // biome-ignore lint/performance/useDomNodeTextContent: a Playwright locator, not a DOM node
  eventually(async () => expect((await l.first().innerText()).trim()).toBe(text), ms);

describe.skipIf(!ready)('operator console in Chromium', () => {
  let ca: TestCa;
  let registry: Registry;
  let broker: Broker;
  let mqttPort: number;
  let prov: Provisioning;
  let consoleUrl: string;
  let apiUrl: string;
  let operator: { id: string; agent: Agent };
  let home: string;
  let context: BrowserContext;
  let page: Page;
  let device: MqttClient;
  const deviceId = `console-dev-${process.pid}`;
  let attacker: Server;

  /** A sign-in link for the operator, through the mTLS API as `fleet console` asks for it. */
  async function link(): Promise<string> {
    const r = await request(`${apiUrl}/v1/console/links`, { method: 'POST', dispatcher: operator.agent });
    const body = (await r.body.json()) as { url: string };
    expect(r.statusCode).toBe(201);
    return body.url;
  }

  /** What a client with no session gets (undici, trusting only the fleet root). */
  async function anonymous(
    path: string,
    init: { method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> } = {},
  ) {
    const r = await request(`${consoleUrl}${path}`, {
      method: init.method ?? 'GET',
      dispatcher: new Agent({ connect: { ca: ca.ca.rootPem } }),
      ...(init.body ? { body: init.body } : {}),
      headers: init.headers ?? {},
    });
    return { status: r.statusCode, text: await r.body.text(), headers: r.headers };
  }

  beforeAll(async () => {
    ca = await makeTestCa();
    registry = await openRegistry();
    const b = await startBroker(ca.ca, registry, {
      metrics: { port: 0 },
      presence: { flushMs: 100 },
    } as never);
    broker = b.broker;
    mqttPort = b.port;
    prov = await buildProvisioning(
      {
        host: 'localhost',
        apiPort: 0,
        publicPort: 0,
        brokerUrl: `mqtts://localhost:${mqttPort}`,
        console: consoleConfig({ port: 0, brokerMetrics: [] }),
      },
      { ca: ca.ca, registry, logger: pino({ level: process.env['FLEET_TEST_LOG'] ?? 'silent' }) },
    );
    const ports = await prov.listen();
    apiUrl = `https://localhost:${ports.apiPort}`;
    consoleUrl = prov.console!.url();
    // The operator, issued as `fleet init` does.
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const opId = `ops-${process.pid}`;
    const issued = await new Issuance(ca.ca, registry).issuePrincipal(
      { kind: 'operator', id: opId },
      { spki: publicKey.export({ type: 'spki', format: 'der' }) },
      'system:test',
    );
    operator = {
      id: opId,
      agent: new Agent({
        connect: {
          ca: ca.ca.rootPem,
          cert: certToPem(issued.der) + issued.chain.map(certToPem).join(''),
          key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        },
      }),
    };
    // A connected device: MQTT.js over mTLS to the broker.
    const creds = await enroll(registry, ca.ca, 'device', deviceId, { product: 'thermo', fleet: 'eu' });
    await enroll(registry, ca.ca, 'device', `${deviceId}-spare`, { product: 'thermo', fleet: 'eu' });
    const c = await tryConnect(mqttPort, ca.ca, creds);
    if (c.outcome !== 'connected') throw new Error(`device did not connect: ${JSON.stringify(c)}`);
    device = c.client;
    // The browser trusts the fleet root through an NSS database in its own HOME.
    home = mkdtempSync(join(tmpdir(), 'fleet-chromium-home-'));
    const nss = join(home, '.pki', 'nssdb');
    mkdirSync(nss, { recursive: true });
    execFileSync('certutil', ['-N', '-d', `sql:${nss}`, '--empty-password']);
    execFileSync('certutil', [
      '-A',
      '-d',
      `sql:${nss}`,
      '-n',
      'fleet-test-root',
      '-t',
      'C,,',
      '-i',
      ca.files.root,
    ]);
    const { chromium } = await import('playwright-core');
    context = await chromium.launchPersistentContext(join(home, 'profile'), {
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      env: { ...process.env, HOME: home },
      viewport: { width: 1280, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    // Another origin that tries to drive the console (cross-site request forgery).
    attacker = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<form id="f" method="post" action="${consoleUrl}/devices/${deviceId}-spare/actions/suspend">
        <input name="_csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`);
    });
    await new Promise<void>((r) => attacker.listen(0, '127.0.0.1', r));
  }, 120_000);

  afterAll(async () => {
    await context?.close().catch(() => {});
    device?.end(true);
    attacker?.close();
    await prov?.close();
    await broker?.stop();
    await operator?.agent.close();
    await registry?.close();
    await ca?.cleanup();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('gives a stranger without a session nothing: every page and data route answers 401 without data', async () => {
    for (const path of [
      '/',
      '/overview.json',
      '/devices',
      `/devices?q=${deviceId}`,
      `/devices/${deviceId}`,
      `/devices/${deviceId}/live.json`,
      `/devices/${deviceId}/confirm?action=revoke`,
      '/stations',
      '/services',
      '/operators',
      '/audit',
      '/expiring',
      '/expiring.csv',
      '/no-such-page',
    ]) {
      const r = await anonymous(path);
      expect(r.status, path).toBe(401);
      expect(r.text, path).not.toContain(deviceId);
      expect(r.text, path).not.toContain(operator.id);
    }
    // A forged cookie is no session either; a POST from nowhere is refused before it is read.
    const forged = await anonymous('/devices', {
      headers: { cookie: `__Host-fleet_console=${'A'.repeat(43)}` },
    });
    expect(forged.status).toBe(401);
    const post = await anonymous(`/devices/${deviceId}/actions/revoke`, {
      method: 'POST',
      body: '_csrf=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: consoleUrl },
    });
    expect(post.status).toBe(401);
    expect((await registry.getDeviceRow(deviceId))?.status).toBe('active');
    await page.goto(`${consoleUrl}/devices`);
    await contains(page.locator('main'), 'sign in');
    expect(await page.content()).not.toContain(deviceId);
  });

  it('does not sign in with an expired link, nor with a link used before', async () => {
    const expired = await link();
    const token = new URL(expired).searchParams.get('token')!;
    const { createHash } = await import('node:crypto');
    await dbOf(registry).execute(
      sql`update console_links set expires_at = now() - interval '1 second'
        where token_sha256 = ${createHash('sha256').update(token).digest('hex')}`,
    );
    await page.goto(expired);
    await page.getByRole('button', { name: 'Continue to the console' }).click();
    await contains(page.locator('[role=alert]'), 'has expired');
    expect((await context.cookies()).filter((c) => c.name.includes('fleet_console'))).toEqual([]);

    const once = await link();
    await page.goto(once);
    await page.getByRole('button', { name: 'Continue to the console' }).click();
    await equals(page.getByRole('heading', { level: 1 }), 'Overview');
    await context.clearCookies();
    await page.goto(once);
    await page.getByRole('button', { name: 'Continue to the console' }).click();
    await contains(page.locator('[role=alert]'), 'already used');
    expect((await context.cookies()).filter((c) => c.name.includes('fleet_console'))).toEqual([]);
    const audit = await registry.listAudit({ actor: `operator:${operator.id}`, action: 'console.sign_in' });
    expect(
      audit.items.map((a) => [a.outcome, (a.details as { reason?: string } | null)?.reason ?? null]),
    ).toEqual([
      ['denied', 'link_used'],
      ['success', null],
      ['denied', 'link_expired'],
    ]);
  });

  it('signs in with a fresh link to an HttpOnly, Secure, SameSite=Strict session and shows the overview', async () => {
    await page.goto(await link());
    await page.screenshot({ path: join(shots, 'signin.png') });
    await page.getByRole('button', { name: 'Continue to the console' }).click();
    await equals(page.getByRole('heading', { level: 1 }), 'Overview');
    const [cookie] = (await context.cookies()).filter((c) => c.name === '__Host-fleet_console');
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' });
    expect(page.url()).toBe(`${consoleUrl}/`); // the token is gone from the address bar
    // Presence is flushed every 100 ms here; the live refresh (5 s) brings it if the first render missed it.
    await equals(page.locator('[data-live="connected"]'), '1', 12_000);
    await equals(page.locator('[data-live="devices.total"]'), '2');
    await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });
  });

  it('finds the connected device, revokes it, and shows its live session closed and its status revoked', async () => {
    await page.getByRole('link', { name: 'Devices' }).click();
    await page.getByLabel('Id starts with').fill(deviceId);
    await page.getByLabel('Connected').selectOption('yes');
    await page.getByRole('button', { name: 'Search' }).click();
    const row = page.getByRole('row', { name: new RegExp(deviceId) });
    expect(await row.count()).toBe(1); // the spare is not connected
    await contains(row, 'online');
    await page.screenshot({ path: join(shots, 'devices.png'), fullPage: true });
    await page.getByRole('link', { name: deviceId, exact: true }).click();
    await contains(page.getByRole('heading', { level: 1 }), deviceId);
    await page.getByRole('link', { name: 'Revoke…' }).click();
    const confirm = page.locator('.confirm');
    await contains(confirm, 'connected now on broker node test-node');
    await page.getByLabel('Reason (RFC 5280)').selectOption('keyCompromise');
    await page.screenshot({ path: join(shots, 'confirm-revoke.png'), fullPage: true });
    const closed = closedWithin(device, 10_000);
    await page.getByRole('button', { name: `Revoke device ${deviceId}` }).click();
    expect(await closed).toBeGreaterThanOrEqual(0); // the MQTT.js client saw its connection closed
    await contains(page.locator('[data-live="session"]'), 'closed at');
    await contains(page.locator('[data-live="session"]'), 'by broker node test-node');
    await equals(page.locator('[data-live="status"]'), 'revoked');
    await page.reload();
    await contains(page.locator('dl.facts'), 'keyCompromise');
    await page.screenshot({ path: join(shots, 'device.png'), fullPage: true });
    // Audited under the operator, through the operator API's code path.
    const audit = await registry.listAudit({ subject: `device:${deviceId}`, action: 'subject.revoke' });
    expect(audit.items[0]).toMatchObject({ actor: `operator:${operator.id}`, outcome: 'success' });
    expect(audit.items[0]!.details).toMatchObject({ reason: 'keyCompromise', via: 'console' });
    // And the broker refuses it from now on.
    const again = await tryConnect(mqttPort, ca.ca, undefined, { clientId: deviceId });
    expect(again.outcome).not.toBe('connected');
  });

  it('refuses a forged CSRF token and a request from another origin, and changes nothing', async () => {
    const spare = `${deviceId}-spare`;
    const forged = await page.evaluate(async (id) => {
      const r = await fetch(`/devices/${id}/actions/suspend`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ _csrf: 'forged-token' }),
      });
      return { status: r.status, body: await r.json() };
    }, spare);
    expect(forged).toEqual({
      status: 403,
      body: { error: expect.objectContaining({ code: 'CONSOLE_CSRF_INVALID' }) },
    });
    // A page elsewhere submitting a form to the console: the cookie stays home (SameSite=Strict) and the origin is wrong.
    const other = await context.newPage();
    const answered = other.waitForResponse((r) => r.url().includes('/actions/suspend'));
    await other.goto(`http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`);
    expect((await answered).status()).toBe(403);
    await other.close();
    expect((await registry.getDeviceRow(spare))?.status).toBe('active');
    const refused = await registry.listAudit({ action: 'console.csrf_refused' });
    expect(refused.items[0]?.actor).toBe(`operator:${operator.id}`);
  });

  it('works at phone width, and signing out ends the session', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${consoleUrl}/devices`);
    expect(await page.getByLabel('Id starts with').isVisible()).toBe(true);
    await page.screenshot({ path: join(shots, 'devices-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${consoleUrl}/operators`);
    expect(await page.locator('#h-sessions').isVisible()).toBe(true);
    await page.screenshot({ path: join(shots, 'operators.png'), fullPage: true });
    const [cookie] = (await context.cookies()).filter((c) => c.name === '__Host-fleet_console');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.goto(`${consoleUrl}/`);
    await contains(page.locator('main'), 'sign in');
    // The old cookie, replayed, is dead.
    const replay = await anonymous('/', { headers: { cookie: `__Host-fleet_console=${cookie!.value}` } });
    expect(replay.status).toBe(401);
  });
});
