/**
 * The provisioning service end to end with real TLS clients: undici with client certificates for the JSON
 * API, curl and openssl for EST, openssl for the CRL and OCSP on the public listener. Runs on PGlite and,
 * when DATABASE_URL is set, on a fresh PostgreSQL database.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as der from '../pki/der.ts';
import { openssl, opensslCsr, opensslOcspAgainstRequest, opensslVerify } from './helpers/pki.ts';
import {
  backends,
  createStation,
  deviceCreds,
  type Harness,
  startHarness,
  uid,
  writeTemp,
} from './helpers/provisioning.ts';

const execFileP = promisify(execFile);

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP('curl', ['-sS', ...args], { encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : 1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

const b64Lines = (d: Buffer) => `${(d.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n`;

describe.each(backends('prov'))('provisioning on $name', (backend) => {
  let h: Harness;
  let station: Awaited<ReturnType<typeof createStation>>;

  beforeAll(async () => {
    h = await startHarness(backend);
    station = await createStation(h, { products: ['thermo', 'valve'] });
  });
  afterAll(async () => {
    await h?.close();
    await backend.cleanup();
  });

  describe('station enrollment (JSON)', () => {
    it('answers the device certificate, its chain, the root to embed and the broker URL', async () => {
      const id = uid('dev');
      const { csrPem, keyPem } = h.keyAndCsr(id);
      const r = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: csrPem,
      });
      expect(r.status, r.text).toBe(201);
      expect(r.json).toMatchObject({ deviceId: id, reused: false, brokerUrl: 'mqtts://localhost:8883' });
      expect(r.json.serial).toMatch(/^[0-9a-f]{32}$/);
      expect(r.json.root).toBe(h.ca.ca.rootPem);
      const dev = await deviceCreds(h, r.json, keyPem);
      const ok = await opensslVerify(dev.certPath, {
        purpose: 'sslclient',
        root: h.ca.files.root,
        chain: h.ca.files.deviceCa,
      });
      expect(ok.code, ok.stderr).toBe(0);
      const d = await h.registry.getDevice(id);
      expect(d).toMatchObject({
        id,
        product: 'thermo',
        fleet: 'thermo',
        enrolledBy: station.id,
        status: 'active',
      });
    });

    it('is idempotent: the same device id and key get the same certificate back', async () => {
      const id = uid('dev');
      const { csrPem } = h.keyAndCsr(id);
      const body = { deviceId: id, product: 'thermo', csr: csrPem };
      const first = await h.call(station, 'POST', '/v1/enrollments', body);
      const again = await Promise.all([1, 2, 3].map(() => h.call(station, 'POST', '/v1/enrollments', body)));
      expect(first.status).toBe(201);
      for (const a of again) {
        expect(a.status).toBe(200);
        expect(a.json.serial).toBe(first.json.serial);
        expect(a.json.reused).toBe(true);
      }
      expect((await h.registry.getDevice(id))!.certificates).toHaveLength(1);
    });

    it('concurrent first enrollments of one device with one key mint one certificate', async () => {
      const id = uid('dev');
      const { csrPem } = h.keyAndCsr(id);
      const body = { deviceId: id, product: 'thermo', csr: csrPem };
      const all = await Promise.all([1, 2, 3, 4].map(() => h.call(station, 'POST', '/v1/enrollments', body)));
      expect(new Set(all.map((a) => a.json.serial)).size).toBe(1);
      expect(all.map((a) => a.status).sort()).toEqual([200, 200, 200, 201]);
      expect((await h.registry.getDevice(id))!.certificates).toHaveLength(1);
    });

    it('refuses another key for an enrolled device with 409 DEVICE_KEY_CONFLICT until an operator resets it', async () => {
      const id = uid('dev');
      const first = h.keyAndCsr(id);
      const second = h.keyAndCsr(id);
      const r1 = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: first.csrPem,
      });
      expect(r1.status).toBe(201);
      const r2 = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: second.csrPem,
      });
      expect(r2.status).toBe(409);
      expect(r2.json.error.code).toBe('DEVICE_KEY_CONFLICT');

      const reset = await h.call(h.operator, 'POST', `/v1/devices/${id}/reset`, {});
      expect(reset.status, reset.text).toBe(200);
      const r3 = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: second.csrPem,
      });
      expect(r3.status, r3.text).toBe(201);
      // The reset retired the old certificate at once (revoked, reason superseded).
      const d = await h.registry.getDevice(id);
      expect(d!.certificates.map((c) => [c.serial, c.status, c.revocationReason])).toEqual(
        expect.arrayContaining([
          [r3.json.serial, 'active', null],
          [r1.json.serial, 'revoked', 'superseded'],
        ]),
      );
    });

    it('a revoked device id is final: issuing it again (same key, another key, JSON, NDJSON, EST) and resetting it answer DEVICE_REVOKED naming the id, when, and what to do instead', async () => {
      const id = uid('gone');
      const k = h.keyAndCsr(id);
      const r1 = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k.csrPem,
      });
      expect(r1.status).toBe(201);
      const rv = await h.call(h.operator, 'POST', `/v1/devices/${id}/revoke`, { reason: 'keyCompromise' });
      expect(rv.status, rv.text).toBe(200);
      const revokedAt = (await h.registry.getDevice(id))!.revokedAt!.toISOString();
      const expectDeadEnd = (error: { code: string; message: string; details: Record<string, unknown> }) => {
        expect(error.code).toBe('DEVICE_REVOKED');
        expect(error.message).toContain(id);
        expect(error.message).toContain(revokedAt);
        expect(error.message).toContain('new id');
        expect(error.message).not.toContain('reset');
        expect(error.details).toMatchObject({ id, revokedAt, reason: 'keyCompromise' });
      };
      for (const csr of [k.csrPem, h.keyAndCsr(id).csrPem]) {
        const again = await h.call(station, 'POST', '/v1/enrollments', {
          deviceId: id,
          product: 'thermo',
          csr,
        });
        expect(again.status, again.text).toBe(409);
        expectDeadEnd(again.json.error);
      }
      const batch = await h.call(
        station,
        'POST',
        '/v1/enrollments/batch',
        `${JSON.stringify({ deviceId: id, product: 'thermo', csr: h.keyAndCsr(id).csrPem })}\n`,
        { 'content-type': 'application/x-ndjson' },
      );
      expectDeadEnd(JSON.parse(batch.text.trim()).error);
      const est = await h.call(
        station,
        'POST',
        '/.well-known/est/thermo/simpleenroll',
        b64Lines(der.fromPemAll(h.keyAndCsr(id).csrPem, 'CERTIFICATE REQUEST')[0]!),
        { 'content-type': 'application/pkcs10' },
      );
      expect(est.status, est.text).toBe(409);
      expectDeadEnd(est.json.error);
      // The advice no longer loops: reset says the same, not ALREADY_REVOKED.
      const reset = await h.call(h.operator, 'POST', `/v1/devices/${id}/reset`, {});
      expect(reset.status).toBe(409);
      expectDeadEnd(reset.json.error);
      // And a new id is the way out.
      const other = uid('gone-new');
      const fresh = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: other,
        product: 'thermo',
        csr: h.keyAndCsr(other).csrPem,
      });
      expect(fresh.status).toBe(201);
    });

    it('records the issuance in the audit log with the station as actor', async () => {
      const id = uid('dev');
      const r = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'valve',
        csr: h.keyAndCsr(id).csrPem,
      });
      expect(r.status).toBe(201);
      const audit = await h.call(h.operator, 'GET', `/v1/audit?subject=device:${id}`);
      expect(audit.status).toBe(200);
      expect(audit.json.items[0]).toMatchObject({
        actor: `station:${station.id}`,
        action: 'certificate.issue',
        outcome: 'success',
      });
      expect(audit.json.items[0].details.serial).toBe(r.json.serial);
    });
  });

  describe('batch enrollment (NDJSON)', () => {
    it('answers one line per line, in order, each succeeding or failing alone', async () => {
      const ids = Array.from({ length: 7 }, () => uid('bat'));
      const lines = ids.map((id) =>
        JSON.stringify({ deviceId: id, product: 'thermo', csr: h.keyAndCsr(id).csrPem }),
      );
      lines[2] = '{not json';
      lines[4] = JSON.stringify({ deviceId: ids[4], product: 'nope', csr: h.keyAndCsr(ids[4]).csrPem });
      lines[5] = JSON.stringify({ deviceId: ids[5], product: 'thermo', csr: 'AAAA' });
      const body = `${lines.join('\n')}\n\n`;
      const r = await h.call(station, 'POST', '/v1/enrollments/batch', body, {
        'content-type': 'application/x-ndjson',
      });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toContain('application/x-ndjson');
      const out = r.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(out.map((o) => o.line)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(out.map((o) => o.ok)).toEqual([true, true, false, true, false, false, true]);
      expect(out[2].error.code).toBe('BODY_MALFORMED_JSON');
      expect(out[4].error.code).toBe('PRODUCT_NOT_IN_SCOPE');
      expect(out[5].error.code).toBe('CSR_MALFORMED');
      expect(out[0].certificate).toMatch(/^-----BEGIN CERTIFICATE-----/);
      for (const i of [0, 1, 3, 6]) expect((await h.registry.getDevice(ids[i]!))?.status).toBe('active');
      for (const i of [2, 4, 5]) expect(await h.registry.getDevice(ids[i]!)).toBeUndefined();
    });

    it('re-sending a batch answers the same certificates without duplicates, across chunk boundaries', async () => {
      const n = 450; // more than two chunks of 200
      const ids = Array.from({ length: n }, () => uid('re'));
      const body = `${ids.map((id) => JSON.stringify({ deviceId: id, product: 'valve', csr: h.keyAndCsr(id).csrPem })).join('\n')}\n`;
      const send = async () => {
        const r = await h.call(station, 'POST', '/v1/enrollments/batch', body, {
          'content-type': 'application/x-ndjson',
        });
        return r.text
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
      };
      const first = await send();
      expect(first.every((o) => o.ok && !o.reused)).toBe(true);
      const second = await send();
      expect(second.every((o) => o.ok && o.reused)).toBe(true);
      expect(second.map((o) => o.serial)).toEqual(first.map((o) => o.serial));
      const page = await h.registry.listDevices({ enrolledBy: station.id, product: 'valve', limit: 1000 });
      expect(page.items.filter((d) => d.id.startsWith('re-')).length).toBe(n);
    });

    it('streams: results of the first chunk arrive while the client is still sending the rest', async () => {
      const first = Array.from({ length: 250 }, () => uid('st'));
      const rest = Array.from({ length: 50 }, () => uid('st'));
      const line = (id: string) =>
        `${JSON.stringify({ deviceId: id, product: 'thermo', csr: h.keyAndCsr(id).csrPem })}\n`;
      let gotFirstResult!: () => void;
      const firstResult = new Promise<void>((r) => {
        gotFirstResult = r;
      });
      let sentAll = false;
      // The body withholds its last lines until a result has come back: a server that buffered the whole
      // request before answering would never answer (the test would time out).
      async function* body() {
        for (const id of first) yield line(id);
        await firstResult;
        for (const id of rest) yield line(id);
        sentAll = true;
      }
      const res = await request(`${h.apiUrl}/v1/enrollments/batch`, {
        method: 'POST',
        dispatcher: h.agent(station),
        headers: { 'content-type': 'application/x-ndjson' },
        body: Readable.from(body()),
      });
      expect(res.statusCode).toBe(200);
      let buf = '';
      let sentAllAtFirstResult: boolean | undefined;
      for await (const chunk of res.body) {
        buf += chunk.toString();
        if (sentAllAtFirstResult === undefined && buf.includes('\n')) {
          sentAllAtFirstResult = sentAll;
          gotFirstResult();
        }
      }
      expect(sentAllAtFirstResult).toBe(false);
      const out = buf
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(out).toHaveLength(300);
      expect(out.every((o) => o.ok)).toBe(true);
    }, 60_000);

    it('revoking the station stops a running batch: later chunks are refused line by line', async () => {
      const s = await createStation(h, { products: ['thermo'] });
      const line = (id: string) =>
        `${JSON.stringify({ deviceId: id, product: 'thermo', csr: h.keyAndCsr(id).csrPem })}\n`;
      let gotFirst!: () => void;
      const first = new Promise<void>((r) => {
        gotFirst = r;
      });
      async function* body() {
        for (let i = 0; i < 200; i++) yield line(uid('stop'));
        await first;
        for (let i = 0; i < 10; i++) yield line(uid('stop'));
      }
      const res = await request(`${h.apiUrl}/v1/enrollments/batch`, {
        method: 'POST',
        dispatcher: h.agent(s),
        headers: { 'content-type': 'application/x-ndjson' },
        body: Readable.from(body()),
      });
      let buf = '';
      let revoked = false;
      for await (const chunk of res.body) {
        buf += chunk.toString();
        if (!revoked && buf.includes('\n')) {
          revoked = true;
          const r = await h.call(h.operator, 'POST', `/v1/stations/${s.id}/revoke`, {
            reason: 'keyCompromise',
          });
          expect(r.status).toBe(200);
          gotFirst();
        }
      }
      const out = buf
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(out).toHaveLength(210);
      expect(out.slice(0, 200).every((o) => o.ok)).toBe(true);
      expect(out.slice(200).map((o) => o.error?.code)).toEqual(Array(10).fill('CLIENT_CERT_REVOKED'));
    }, 60_000);

    it('a duplicated device id within one chunk gets one certificate', async () => {
      const id = uid('dup');
      const { csrPem } = h.keyAndCsr(id);
      const line = JSON.stringify({ deviceId: id, product: 'thermo', csr: csrPem });
      const other = uid('dup');
      const body = [
        line,
        JSON.stringify({ deviceId: other, product: 'thermo', csr: h.keyAndCsr(other).csrPem }),
        line,
      ].join('\n');
      const r = await h.call(station, 'POST', '/v1/enrollments/batch', body, {
        'content-type': 'application/x-ndjson',
      });
      const out = r.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(out.map((o) => o.ok)).toEqual([true, true, true]);
      expect(out[2].serial).toBe(out[0].serial);
      expect((await h.registry.getDevice(id))!.certificates).toHaveLength(1);
    });
  });

  describe('EST (RFC 7030) with curl and openssl', () => {
    it('cacerts answers without a client certificate', async () => {
      const out = await writeTemp(h, `cacerts-${uid('c')}.b64`, '');
      const r = await curl([
        '--cacert',
        h.ca.files.root,
        '-o',
        out,
        '-w',
        '%{http_code}',
        `${h.apiUrl}/.well-known/est/cacerts`,
      ]);
      expect(r.stdout).toBe('200');
      const p7 = await writeTemp(
        h,
        `cacerts-${uid('c')}.p7`,
        Buffer.from(await readFile(out, 'utf8'), 'base64'),
      );
      const certs = await openssl(['pkcs7', '-inform', 'DER', '-in', p7, '-print_certs', '-noout']);
      expect(certs.code, certs.stderr).toBe(0);
      expect(certs.stdout).toContain('Root CA');
      expect(certs.stdout).toContain('Device CA');
    });

    it('simpleenroll: base64 PKCS#10 in, base64 PKCS#7 certs-only out, the CN as the device id', async () => {
      const id = uid('est');
      const { csrPath } = await opensslCsr(h.ca.dir, `/CN=${id}`);
      const csrDer = der.fromPemAll(await readFile(csrPath, 'utf8'), 'CERTIFICATE REQUEST')[0]!;
      const b64 = await writeTemp(h, `${id}.b64`, b64Lines(csrDer));
      const out = `${b64}.out`;
      const r = await curl([
        '--cert',
        station.certPath,
        '--key',
        station.keyPath,
        '--cacert',
        h.ca.files.root,
        '--data-binary',
        `@${b64}`,
        '-H',
        'Content-Type: application/pkcs10',
        '-o',
        out,
        '-w',
        '%{http_code} %{content_type}',
        `${h.apiUrl}/.well-known/est/thermo/simpleenroll`,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('200 application/pkcs7-mime; smime-type=certs-only');
      const p7 = await writeTemp(h, `${id}.p7`, Buffer.from(await readFile(out, 'utf8'), 'base64'));
      const printed = await openssl(['pkcs7', '-inform', 'DER', '-in', p7, '-print_certs']);
      expect(printed.code, printed.stderr).toBe(0);
      expect(printed.stdout).toContain(`subject=O = Fleet Test, CN = ${id}`);
      expect((await h.registry.getDevice(id))?.product).toBe('thermo');
    });

    it('simpleenroll without a label needs a station with exactly one product', async () => {
      const id = uid('est');
      const { csrPem } = h.keyAndCsr(id);
      const body = b64Lines(der.fromPemAll(csrPem, 'CERTIFICATE REQUEST')[0]!);
      const r = await h.call(station, 'POST', '/.well-known/est/simpleenroll', body, {
        'content-type': 'application/pkcs10',
      });
      expect(r.status).toBe(400);
      expect(r.json.error.code).toBe('EST_PRODUCT_REQUIRED');
      const single = await createStation(h, { products: ['lamp'] });
      const ok = await h.call(single, 'POST', '/.well-known/est/simpleenroll', body, {
        'content-type': 'application/pkcs10',
      });
      expect(ok.status, ok.text).toBe(200);
      expect((await h.registry.getDevice(id))?.product).toBe('lamp');
    });

    it('simplereenroll: the device gets a new certificate with its current one, the old one is superseded', async () => {
      const id = uid('reen');
      const k1 = h.keyAndCsr(id);
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k1.csrPem,
      });
      const dev = await deviceCreds(h, e.json, k1.keyPem);
      const { csrPath, keyPem: k2 } = await opensslCsr(h.ca.dir, `/CN=${id}`);
      const csrDer = der.fromPemAll(await readFile(csrPath, 'utf8'), 'CERTIFICATE REQUEST')[0]!;
      const b64 = await writeTemp(h, `${id}-re.b64`, b64Lines(csrDer));
      const args = (c: { certPath: string; keyPath: string }) => [
        '--cert',
        c.certPath,
        '--key',
        c.keyPath,
        '--cacert',
        h.ca.files.root,
        '--data-binary',
        `@${b64}`,
        '-H',
        'Content-Type: application/pkcs10',
        '-w',
        '\n%{http_code}',
        `${h.apiUrl}/.well-known/est/simplereenroll`,
      ];
      const r = await curl(args(dev));
      const [body, status] = [
        r.stdout.slice(0, r.stdout.lastIndexOf('\n')),
        r.stdout.slice(r.stdout.lastIndexOf('\n') + 1),
      ];
      expect(status, body).toBe('200');
      const p7 = await writeTemp(h, `${id}-re.p7`, Buffer.from(body, 'base64'));
      const printed = await openssl(['pkcs7', '-inform', 'DER', '-in', p7, '-print_certs']);
      expect(printed.stdout).toContain(`CN = ${id}`);
      const d = await h.registry.getDevice(id);
      const statuses = Object.fromEntries(d!.certificates.map((c) => [c.serial, c.status]));
      expect(statuses[e.json.serial]).toBe('superseded');
      expect(Object.values(statuses).filter((s) => s === 'active')).toHaveLength(1);
      // A retry with the (now superseded) certificate and the same new key gets the same answer.
      const again = await curl(args(dev));
      expect(again.stdout.slice(again.stdout.lastIndexOf('\n') + 1)).toBe('200');
      expect(again.stdout.slice(0, again.stdout.lastIndexOf('\n'))).toBe(body);
      // The superseded certificate is refused elsewhere.
      const other = await h.call(dev, 'GET', '/.well-known/est/csrattrs');
      expect(other.json.error.code).toBe('CLIENT_CERT_SUPERSEDED');
      expect(k2).toContain('PRIVATE KEY');
    });

    it('simplereenroll refuses a CSR naming another device', async () => {
      const id = uid('reen');
      const k1 = h.keyAndCsr(id);
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k1.csrPem,
      });
      const dev = await deviceCreds(h, e.json, k1.keyPem);
      const body = b64Lines(der.fromPemAll(h.keyAndCsr('someone-else').csrPem, 'CERTIFICATE REQUEST')[0]!);
      const r = await h.call(dev, 'POST', '/.well-known/est/simplereenroll', body, {
        'content-type': 'application/pkcs10',
      });
      expect(r.status).toBe(403);
      expect(r.json.error.code).toBe('REENROLL_IDENTITY_MISMATCH');
      expect((await h.registry.getDevice(id))!.certificates).toHaveLength(1);
    });

    it('csrattrs answers base64 DER CSR attributes', async () => {
      const r = await h.call(station, 'GET', '/.well-known/est/csrattrs');
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('application/csrattrs');
      const asn = await openssl([
        'asn1parse',
        '-inform',
        'DER',
        '-in',
        await writeTemp(h, `${uid('a')}.der`, Buffer.from(r.text, 'base64')),
      ]);
      expect(asn.stdout).toContain('ecdsa-with-SHA256');
      expect(asn.stdout).toContain('prime256v1');
    });
  });

  describe('operator API', () => {
    it('lists and filters devices, shows one with certificates and presence', async () => {
      const s2 = await createStation(h, { products: ['meter'] });
      const ids = [uid('m'), uid('m'), uid('m')];
      for (const id of ids)
        await h.call(s2, 'POST', '/v1/enrollments', {
          deviceId: id,
          product: 'meter',
          csr: h.keyAndCsr(id).csrPem,
        });
      const list = await h.call(h.operator, 'GET', `/v1/devices?station=${s2.id}&product=meter&limit=2`);
      expect(list.status).toBe(200);
      expect(list.json.items.map((d: { id: string }) => d.id)).toEqual([...ids].sort().slice(0, 2));
      const next = await h.call(
        h.operator,
        'GET',
        `/v1/devices?station=${s2.id}&limit=2&cursor=${list.json.nextCursor}`,
      );
      expect(next.json.items).toHaveLength(1);
      const window = await h.call(
        h.operator,
        'GET',
        `/v1/devices?station=${s2.id}&enrolledFrom=${new Date(Date.now() - 60_000).toISOString()}&enrolledTo=${new Date(Date.now() + 60_000).toISOString()}`,
      );
      expect(window.json.items).toHaveLength(3);
      const expiring = await h.call(h.operator, 'GET', `/v1/devices?station=${s2.id}&expiringWithinDays=30`);
      expect(expiring.json.items).toHaveLength(0);
      const show = await h.call(h.operator, 'GET', `/v1/devices/${ids[0]}`);
      expect(show.status).toBe(200);
      expect(show.json).toMatchObject({ id: ids[0], status: 'active', presence: null });
      expect(show.json.certificates).toHaveLength(1);
      const missing = await h.call(h.operator, 'GET', `/v1/devices/${uid('none')}`);
      expect(missing.status).toBe(404);
      expect(missing.json.error.code).toBe('DEVICE_NOT_FOUND');
    });

    it('an operator issues a device certificate from its CSR (idempotent); a station may not use that route', async () => {
      const devId = uid('op-dev');
      const { csrPem } = h.keyAndCsr(devId);
      const first = await h.call(h.operator, 'POST', '/v1/devices', {
        id: devId,
        product: 'meter',
        csr: csrPem,
      });
      expect(first.status).toBe(201);
      expect(first.json).toMatchObject({ deviceId: devId, reused: false });
      expect(first.json.certificate).toContain('BEGIN CERTIFICATE');
      const again = await h.call(h.operator, 'POST', '/v1/devices', {
        id: devId,
        product: 'meter',
        csr: csrPem,
      });
      expect(again.status).toBe(200);
      expect(again.json.serial).toBe(first.json.serial);
      const station = await createStation(h, { products: ['meter'] });
      const other = uid('op-dev');
      const refused = await h.call(station, 'POST', '/v1/devices', {
        id: other,
        product: 'meter',
        csr: h.keyAndCsr(other).csrPem,
      });
      expect(refused.status).toBe(403);
      expect(await h.registry.getDevice(other)).toBeUndefined();
      const audit = await h.call(h.operator, 'GET', `/v1/audit?subject=device:${devId}`);
      expect(audit.json.items.some((a: { actor: string }) => a.actor === `operator:${h.operator.id}`)).toBe(
        true,
      );
    });

    it('suspend, reinstate and revoke show in OCSP (certificateHold, good, revoked) and in the CRL', async () => {
      const id = uid('life');
      const k = h.keyAndCsr(id);
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k.csrPem,
      });
      const dev = await deviceCreds(h, e.json, k.keyPem);
      const ocsp = async () => {
        const r = await openssl([
          'ocsp',
          '-issuer',
          h.ca.files.deviceCa,
          '-cert',
          dev.certPath,
          '-url',
          `${h.publicUrl}/ocsp`,
          '-CAfile',
          h.ca.files.root,
          '-verify_other',
          h.ca.files.deviceCa,
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toContain('Response verify OK');
        expect(r.stderr + r.stdout).not.toContain('WARNING: no nonce');
        return r.stdout;
      };
      const crlText = async () => {
        const file = await writeTemp(h, `${uid('crl')}.crl`, '');
        const dl = await curl(['-o', file, `${h.publicUrl}/crl/device.crl`]);
        expect(dl.code).toBe(0);
        const bundle = await writeTemp(
          h,
          'root-and-device-ca.pem',
          (await readFile(h.ca.files.root, 'utf8')) + (await readFile(h.ca.files.deviceCa, 'utf8')),
        );
        const t = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-text', '-CAfile', bundle]);
        expect(t.code, t.stderr).toBe(0);
        return t.stdout + t.stderr;
      };
      const serialHex = e.json.serial.toUpperCase();
      expect(await ocsp()).toContain(': good');

      expect((await h.call(h.operator, 'POST', `/v1/devices/${id}/suspend`, {})).status).toBe(200);
      const held = await ocsp();
      expect(held).toContain(': revoked');
      expect(held).toMatch(/Reason: certificateHold/);
      const crl1 = await crlText();
      expect(crl1).toContain(serialHex);
      expect(crl1).toContain('Certificate Hold');
      // The suspended device itself is refused by the API.
      expect((await h.call(dev, 'GET', '/.well-known/est/csrattrs')).json.error.code).toBe(
        'CLIENT_SUSPENDED',
      );

      expect((await h.call(h.operator, 'POST', `/v1/devices/${id}/reinstate`, {})).status).toBe(200);
      expect(await ocsp()).toContain(': good');
      expect(await crlText()).not.toContain(serialHex);

      const rv = await h.call(h.operator, 'POST', `/v1/devices/${id}/revoke`, { reason: 'keyCompromise' });
      expect(rv.status, rv.text).toBe(200);
      expect(rv.json).toMatchObject({ status: 'revoked', changed: true });
      const revoked = await ocsp();
      expect(revoked).toContain(': revoked');
      expect(revoked).toMatch(/Reason: keyCompromise/);
      const crl3 = await crlText();
      expect(crl3).toContain(serialHex);
      expect(crl3).toContain('Key Compromise');
      expect(crl3).toContain('verify OK');
      const again = await h.call(h.operator, 'POST', `/v1/devices/${id}/reinstate`, {});
      expect(again.status).toBe(409);
      expect(again.json.error.code).toBe('ALREADY_REVOKED');
    });

    it('a superseded certificate is good in OCSP during its grace; once retired, OCSP and the CRL say revoked (superseded) and the API refuses it', async () => {
      const id = uid('rot');
      const k = h.keyAndCsr(id);
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k.csrPem,
      });
      const dev = await deviceCreds(h, e.json, k.keyPem);
      const csrDer = der.fromPemAll(h.keyAndCsr(id).csrPem, 'CERTIFICATE REQUEST')[0]!;
      const re = await h.call(dev, 'POST', '/.well-known/est/simplereenroll', b64Lines(csrDer), {
        'content-type': 'application/pkcs10',
      });
      expect(re.status, re.text).toBe(200);
      const ocsp = async () => {
        const r = await openssl([
          'ocsp',
          '-issuer',
          h.ca.files.deviceCa,
          '-cert',
          dev.certPath,
          '-url',
          `${h.publicUrl}/ocsp`,
          '-CAfile',
          h.ca.files.root,
          '-verify_other',
          h.ca.files.deviceCa,
        ]);
        expect(r.code, r.stderr).toBe(0);
        return r.stdout;
      };
      // In its grace period: not revoked anywhere, and EST re-enrollment retries still work with it.
      expect(await ocsp()).toContain(': good');
      const next = (await h.registry.getDevice(id))!.certificates.find((c) => c.status === 'active')!;
      // Its successor connects (what a broker node reports): retired.
      expect(
        await h.registry.retireSuperseded({ kind: 'device', id, serial: next.serial, actor: 'broker:test' }),
      ).toEqual([e.json.serial]);
      const retired = await ocsp();
      expect(retired).toContain(': revoked');
      expect(retired).toMatch(/Reason: superseded/);
      const crl = await request(`${h.publicUrl}/crl/device.crl`);
      const file = await writeTemp(h, `${uid('crl')}.crl`, Buffer.from(await crl.body.arrayBuffer()));
      const t = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-text']);
      expect(t.stdout).toContain(e.json.serial.toUpperCase());
      expect(t.stdout).toContain('Superseded');
      const refused = await h.call(dev, 'POST', '/.well-known/est/simplereenroll', b64Lines(csrDer), {
        'content-type': 'application/pkcs10',
      });
      expect(refused.status).toBe(403);
      expect(refused.json.error.code).toBe('CLIENT_CERT_SUPERSEDED');
    });

    it('stations: create, issue, scope and quota, revoke with a cascade over a time window', async () => {
      const s = await createStation(h, { products: ['a'], hourlyQuota: 2 });
      const enroll = (product: string) => {
        const id = uid('q');
        return h.call(s, 'POST', '/v1/enrollments', { deviceId: id, product, csr: h.keyAndCsr(id).csrPem });
      };
      expect((await enroll('b')).json.error.code).toBe('PRODUCT_NOT_IN_SCOPE');
      const scoped = await h.call(h.operator, 'PATCH', `/v1/stations/${s.id}`, { products: ['a', 'b'] });
      expect(scoped.status, scoped.text).toBe(200);
      expect(scoped.json.products).toEqual(['a', 'b']);
      const ok1 = await enroll('b');
      const ok2 = await enroll('a');
      expect([ok1.status, ok2.status]).toEqual([201, 201]);
      const over = await enroll('a');
      expect(over.status).toBe(429);
      expect(over.json.error.code).toBe('QUOTA_EXHAUSTED');
      expect((await h.call(h.operator, 'PATCH', `/v1/stations/${s.id}`, { hourlyQuota: null })).status).toBe(
        200,
      );
      const ok3 = await enroll('a');
      expect(ok3.status).toBe(201);

      const rv = await h.call(h.operator, 'POST', `/v1/stations/${s.id}/revoke`, {
        reason: 'keyCompromise',
        cascade: { from: new Date(Date.now() - 3600_000).toISOString() },
      });
      expect(rv.status, rv.text).toBe(200);
      expect(rv.json.cascade.devicesRevoked).toBe(3);
      for (const r of [ok1, ok2, ok3])
        expect((await h.registry.getDevice(r.json.deviceId))?.status).toBe('revoked');
      const refused = await enroll('a');
      expect(refused.status).toBe(403);
      expect(refused.json.error.code).toBe('CLIENT_CERT_REVOKED');
      const crl = await request(`${h.publicUrl}/crl/infrastructure.crl`);
      const file = await writeTemp(h, `${uid('infra')}.crl`, Buffer.from(await crl.body.arrayBuffer()));
      const t = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-text']);
      expect(t.stdout).toContain(s.serial.toUpperCase());
    });

    it('services and operators: create, issue, revoke; a new operator can use the API', async () => {
      const sid = uid('svc');
      expect((await h.call(h.operator, 'POST', '/v1/services', { id: sid, role: 'telemetry' })).status).toBe(
        201,
      );
      const svcKey = h.keyAndCsr(sid);
      const svc = await h.call(h.operator, 'POST', `/v1/services/${sid}/certificates`, {
        csr: svcKey.csrPem,
      });
      expect(svc.status, svc.text).toBe(201);
      expect(svc.json.certificate).toMatch(/BEGIN CERTIFICATE/);
      const oid = uid('op');
      expect((await h.call(h.operator, 'POST', '/v1/operators', { id: oid })).status).toBe(201);
      const opKey = h.keyAndCsr(oid);
      const op = await h.call(h.operator, 'POST', `/v1/operators/${oid}/certificates`, { csr: opKey.csrPem });
      const opCreds = {
        kind: 'operator' as const,
        id: oid,
        serial: op.json.serial,
        certPem: op.json.certificate + op.json.chain.join(''),
        keyPem: opKey.keyPem,
        certPath: '',
        keyPath: '',
      };
      expect(
        (await h.call(opCreds, 'GET', '/v1/services')).json.items.some((p: { id: string }) => p.id === sid),
      ).toBe(true);
      expect(
        (await h.call(h.operator, 'POST', `/v1/operators/${oid}/revoke`, { reason: 'affiliationChanged' }))
          .status,
      ).toBe(200);
      const after = await h.call(opCreds, 'GET', '/v1/services');
      expect(after.status).toBe(403);
      expect(after.json.error.code).toBe('CLIENT_CERT_REVOKED');
      const noSuch = await h.call(h.operator, 'POST', `/v1/services/${uid('none')}/certificates`, {
        csr: svcKey.csrPem,
      });
      expect(noSuch.json.error.code).toBe('PRINCIPAL_NOT_FOUND');
    });

    it('the audit log names refusals and the expiring list lists soon-to-expire certificates', async () => {
      const id = uid('ref');
      const r = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'nope',
        csr: h.keyAndCsr(id).csrPem,
      });
      expect(r.json.error.code).toBe('PRODUCT_NOT_IN_SCOPE');
      const audit = await h.call(
        h.operator,
        'GET',
        `/v1/audit?actor=station:${station.id}&action=device.enroll&limit=1000`,
      );
      // Refusals with one code are aggregated per window (registry/audit.ts): this one is counted in the
      // row of its code, and its subject is named there (the first in `subject`, the others in the sample).
      const row = audit.json.items.find(
        (a: { details?: { code?: string } }) => a.details?.code === 'PRODUCT_NOT_IN_SCOPE',
      );
      expect(row).toMatchObject({ action: 'device.enroll', outcome: 'denied' });
      expect([row.subject, ...(row.details.subjects ?? [])]).toContain(`device:${id}`);
      expect(row.count).toBeGreaterThanOrEqual(1);
      // Operators (1 year) and stations (2 years) expire within 800 days; devices (20 years) do not.
      const exp = await h.call(h.operator, 'GET', '/v1/certificates/expiring?days=800&limit=1000');
      expect(exp.status).toBe(200);
      const kinds = new Set(exp.json.items.map((c: { subjectKind: string }) => c.subjectKind));
      expect(kinds.has('operator')).toBe(true);
      expect(kinds.has('device')).toBe(false);
      const none = await h.call(h.operator, 'GET', '/v1/certificates/expiring?days=1');
      expect(none.json.items).toEqual([]);
    });
  });

  describe('revocation data follows the registry', () => {
    const crlHas = async (which: 'device' | 'infrastructure', serial: string) => {
      const res = await request(`${h.publicUrl}/crl/${which}.crl`);
      const file = await writeTemp(h, `${uid('crl')}.crl`, Buffer.from(await res.body.arrayBuffer()));
      const t = await openssl(['crl', '-inform', 'DER', '-in', file, '-noout', '-text']);
      return t.stdout.includes(serial.toUpperCase()) ? t.stdout : undefined;
    };
    const eventually = async <T>(fn: () => Promise<T | undefined>): Promise<T | undefined> => {
      for (let i = 0; i < 40; i++) {
        const v = await fn();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    };

    it('a revocation written to the registry by someone else reaches the CRL through the change feed', async () => {
      const id = uid('feed');
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: h.keyAndCsr(id).csrPem,
      });
      const before = await request(`${h.publicUrl}/crl/device.crl`);
      const numberBefore = before.headers['etag'];
      await before.body.dump();
      // Not through the API: straight into the registry, as another process (or the CLI) would.
      await h.registry.setStatus({
        kind: 'device',
        id,
        status: 'revoked',
        reason: 'cessationOfOperation',
        actor: 'operator:other',
      });
      const text = await eventually(() => crlHas('device', e.json.serial));
      expect(text).toContain('Cessation Of Operation');
      const after = await request(`${h.publicUrl}/crl/device.crl`);
      await after.body.dump();
      expect(BigInt(`0x${String(after.headers['etag']).replace(/"/g, '')}`)).toBeGreaterThan(
        BigInt(`0x${String(numberBefore).replace(/"/g, '')}`),
      );
    });

    it('a suspended station is on hold on the infrastructure CRL until reinstated', async () => {
      const s = await createStation(h, { products: ['thermo'] });
      expect((await h.call(h.operator, 'POST', `/v1/stations/${s.id}/suspend`, {})).status).toBe(200);
      expect(await crlHas('infrastructure', s.serial)).toContain('Certificate Hold');
      expect((await h.call(h.operator, 'POST', `/v1/stations/${s.id}/reinstate`, {})).status).toBe(200);
      expect(await crlHas('infrastructure', s.serial)).toBeUndefined();
      const id = uid('back');
      const ok = await h.call(s, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: h.keyAndCsr(id).csrPem,
      });
      expect(ok.status).toBe(201);
    });

    it('the expiring list pages with a cursor', async () => {
      const p1 = await h.call(h.operator, 'GET', '/v1/certificates/expiring?days=800&limit=1');
      expect(p1.json.items).toHaveLength(1);
      expect(p1.json.nextCursor).toBeDefined();
      const p2 = await h.call(
        h.operator,
        'GET',
        `/v1/certificates/expiring?days=800&limit=1&cursor=${p1.json.nextCursor}`,
      );
      expect(p2.json.items).toHaveLength(1);
      expect(p2.json.items[0].serial).not.toBe(p1.json.items[0].serial);
      expect(p2.json.items[0].notAfter >= p1.json.items[0].notAfter).toBe(true);
    });
  });

  describe('the mTLS listener', () => {
    it.each([
      ['localhost', ['-verify_hostname', 'localhost']],
      ['127.0.0.1', ['-verify_ip', '127.0.0.1']],
    ])('sends the full chain, valid for %s, to a client that trusts only the root', async (_name, check) => {
      const port = new URL(h.apiUrl).port;
      const r = await new Promise<{ stdout: string }>((resolve) => {
        const child = execFile(
          'openssl',
          [
            's_client',
            '-connect',
            `127.0.0.1:${port}`,
            '-servername',
            'localhost',
            '-CAfile',
            h.ca.files.root,
            '-verify_return_error',
            '-showcerts',
            ...check,
          ],
          { encoding: 'utf8', timeout: 20_000 },
          (_e, stdout) => resolve({ stdout }),
        );
        child.stdin?.end();
      });
      expect(r.stdout).toContain('Verify return code: 0 (ok)');
      expect(r.stdout.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
      // It asks for a client certificate (EST cacerts and /healthz answer without one).
      expect(r.stdout).toMatch(/Acceptable client certificate CA names/);
    });
  });

  describe('public listener', () => {
    it('serves CA certificates, health, and the OpenAPI document', async () => {
      const root = await request(`${h.publicUrl}/ca/root.crt`);
      expect(root.statusCode).toBe(200);
      expect(root.headers['content-type']).toBe('application/pkix-cert');
      expect(Buffer.from(await root.body.arrayBuffer()).equals(h.ca.ca.root)).toBe(true);
      const pem = await request(`${h.publicUrl}/ca/device.pem`);
      expect(await pem.body.text()).toContain('BEGIN CERTIFICATE');
      const health = await request(`${h.publicUrl}/healthz`);
      expect(await health.body.json()).toMatchObject({ status: 'ok' });
      const doc = (await (await request(`${h.publicUrl}/openapi.json`)).body.json()) as {
        openapi: string;
        paths: Record<string, unknown>;
      };
      expect(doc.openapi).toMatch(/^3\./);
      expect(Object.keys(doc.paths)).toEqual(
        expect.arrayContaining([
          '/v1/enrollments',
          '/v1/enrollments/batch',
          '/.well-known/est/simpleenroll',
          '/v1/devices',
        ]),
      );
    });

    it('OCSP GET (RFC 6960 A.1) and POST answer alike; a malformed request gets malformedRequest', async () => {
      const id = uid('og');
      const k = h.keyAndCsr(id);
      const e = await h.call(station, 'POST', '/v1/enrollments', {
        deviceId: id,
        product: 'thermo',
        csr: k.csrPem,
      });
      const dev = await deviceCreds(h, e.json, k.keyPem);
      const reqPath = await writeTemp(h, `${id}.ocspreq`, '');
      const made = await openssl([
        'ocsp',
        '-issuer',
        h.ca.files.deviceCa,
        '-cert',
        dev.certPath,
        '-reqout',
        reqPath,
      ]);
      expect(made.code, made.stderr).toBe(0);
      const reqDer = await readFile(reqPath);
      const get = await request(`${h.publicUrl}/ocsp/${encodeURIComponent(reqDer.toString('base64'))}`);
      expect(get.statusCode).toBe(200);
      expect(get.headers['content-type']).toBe('application/ocsp-response');
      const respPath = await writeTemp(h, `${id}.ocspresp`, Buffer.from(await get.body.arrayBuffer()));
      const v = await opensslOcspAgainstRequest({
        request: reqPath,
        response: respPath,
        root: h.ca.files.root,
        verifyOther: h.ca.files.deviceCa,
        text: true,
      });
      expect(v.stderr).toContain('Response verify OK');
      expect(v.stdout).toContain('Cert Status: good');
      expect(v.stdout).toContain('OCSP Nonce');
      const bad = await request(`${h.publicUrl}/ocsp`, {
        method: 'POST',
        body: Buffer.from('nonsense'),
        headers: { 'content-type': 'application/ocsp-request' },
      });
      expect(bad.statusCode).toBe(200);
      // OCSPResponse { responseStatus malformedRequest(1) }
      expect(Buffer.from(await bad.body.arrayBuffer()).toString('hex')).toBe('30030a0101');
    });
  });
});

describe('when the registry is down', () => {
  it('the CRL endpoint keeps serving the last CRL while it is valid, and /healthz says 503', async () => {
    const h = await startHarness(backends('provdown')[0]!);
    try {
      const first = await request(`${h.publicUrl}/crl/device.crl`);
      const der1 = Buffer.from(await first.body.arrayBuffer());
      await h.registry.close();
      h.prov.crl.invalidate();
      const again = await request(`${h.publicUrl}/crl/device.crl`);
      expect(again.statusCode).toBe(200);
      expect(Buffer.from(await again.body.arrayBuffer()).equals(der1)).toBe(true);
      const health = await request(`${h.publicUrl}/healthz`);
      expect(health.statusCode).toBe(503);
      expect(((await health.body.json()) as { error: { code: string } }).error.code).toBe(
        'SERVICE_UNAVAILABLE',
      );
    } finally {
      await h.close();
    }
  });
});
