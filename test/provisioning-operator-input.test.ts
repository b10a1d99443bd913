/**
 * The operator API against bad input (issue 9 item 6): what a database cannot hold (a NUL byte), numbers
 * beyond any sense (`expiringWithinDays=1e20`), wrong types, on every route and every parameter the OpenAPI
 * document lists, get a 4xx with a specific code and change nothing; and a caller is authenticated before
 * its body or query is looked at, so an anonymous request learns nothing from validation. Real mTLS clients;
 * PGlite and, with DATABASE_URL, PostgreSQL.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certToPem } from '../pki/x509.ts';
import { dbOf } from '../registry/console.ts';
import { makeTestCa, type TestCa } from './helpers/pki.ts';
import {
  backends,
  type Creds,
  createStation,
  type Harness,
  type Reply,
  startHarness,
  uid,
} from './helpers/provisioning.ts';

/** Routes that answer without a client certificate (RFC 7030 §4.1.1 cacerts, the health check). */
const PUBLIC_PATHS = new Set(['/.well-known/est/cacerts', '/healthz']);

interface Operation {
  method: string;
  path: string;
  // biome-ignore lint/suspicious/noExplicitAny: an OpenAPI operation object
  op: any;
}

function operations(doc: { paths: Record<string, Record<string, unknown>> }): Operation[] {
  const out: Operation[] = [];
  for (const [path, ops] of Object.entries(doc.paths))
    for (const [method, op] of Object.entries(ops)) out.push({ method: method.toUpperCase(), path, op });
  return out;
}

/** The path with every `{param}` filled. */
const fill = (path: string, v: string) => path.replace(/\{\w+\}/g, encodeURIComponent(v));

/** Devices, principals, certificates and audit-free state in one query: what a refusal must not change. */
async function rowCounts(h: Harness): Promise<string> {
  const r = await dbOf(h.registry).execute(
    sql`select (select count(*) from devices)::int as d, (select count(*) from principals)::int as p,
      (select count(*) from certificates)::int as c`,
  );
  const row = ((r as { rows?: unknown[] }).rows ?? (r as unknown as unknown[]))[0] as Record<string, number>;
  return `${row['d']} devices, ${row['p']} principals, ${row['c']} certificates`;
}

const expectRefused = (r: Reply, status: number, code: string, what: string) => {
  expect({ what, status: r.status, code: r.json?.error?.code }).toEqual({ what, status, code });
};

describe.each(backends('opin'))('operator API bad input on $name', (backend) => {
  let h: Harness;
  let foreign: TestCa;
  let foreignCreds: Creds;
  let station: Creds;
  let ops: Operation[];

  beforeAll(async () => {
    h = await startHarness(backend);
    station = await createStation(h, { products: ['thermo'] });
    foreign = await makeTestCa();
    const { keyPem, csrPem } = h.keyAndCsr('admin');
    const { checkCsr } = await import('../pki/csr.ts');
    const fc = foreign.ca.issue({ profile: 'operator', id: 'admin', spki: checkCsr(csrPem).spki });
    foreignCreds = {
      ...h.operator,
      serial: fc.serial,
      certPem: certToPem(fc.der) + certToPem(foreign.ca.issuers.infrastructure.certificate),
      keyPem,
    };
    const doc = await h.call(h.operator, 'GET', '/openapi.json');
    ops = operations(doc.json);
  });
  afterAll(async () => {
    await h?.close();
    await foreign?.cleanup();
    await backend.cleanup();
  });

  describe('what the database cannot hold, and numbers beyond sense, are a 400 with a code', () => {
    it.each([
      ['a NUL byte in the audit actor filter', '/v1/audit?actor=%00'],
      ['a NUL byte inside the audit actor filter', '/v1/audit?actor=operator%3Aa%00b'],
      ['a NUL byte in the audit subject filter', '/v1/audit?subject=a%00'],
      ['a NUL byte in the audit action filter', '/v1/audit?action=device.%00revoke'],
      ['expiringWithinDays=1e20', '/v1/devices?expiringWithinDays=1e20'],
      ['expiringWithinDays=1e300', '/v1/devices?expiringWithinDays=1e300'],
      ['expiringWithinDays of 21 digits', '/v1/devices?expiringWithinDays=999999999999999999999'],
      ['days=NaN on expiring certificates', '/v1/certificates/expiring?days=NaN'],
    ])('%s: 400 QUERY_INVALID', async (_name, path) => {
      const r = await h.call(h.operator, 'GET', path);
      expectRefused(r, 400, 'QUERY_INVALID', path);
      expect(r.json.error.details?.field).toBeTruthy();
    });

    it.each([
      ['a NUL byte in a service role', { role: 'a\u0000b' }],
      ['a service role that is only a NUL byte', { role: '\u0000' }],
      ['a service role with a topic wildcard', { role: 'a/#' }],
    ])('%s: 400 ID_INVALID, no service created', async (_name, extra) => {
      const before = await rowCounts(h);
      const r = await h.call(h.operator, 'POST', '/v1/services', { id: uid('svc'), ...extra });
      expectRefused(r, 400, 'ID_INVALID', JSON.stringify(extra));
      expect(await rowCounts(h)).toBe(before);
    });
  });

  describe('authentication comes before the body and the query', () => {
    const bad = (o: Operation) =>
      o.method === 'GET' || o.method === 'DELETE'
        ? { path: `${fill(o.path, 'p1')}?bogus=%00`, body: undefined }
        : { path: fill(o.path, 'p1'), body: { bogus: '\u0000', id: 42 } };

    it('every route but the public ones answers an anonymous request with an invalid body 401', async () => {
      const seen: string[] = [];
      for (const o of ops) {
        if (PUBLIC_PATHS.has(o.path)) continue;
        const { path, body } = bad(o);
        const r = await h.call(null, o.method, path, body);
        seen.push(`${o.method} ${o.path} ${r.status} ${r.json?.error?.code}`);
        expectRefused(r, 401, 'CLIENT_CERT_REQUIRED', `${o.method} ${o.path}`);
      }
      expect(seen.length).toBeGreaterThan(25);
    });

    it('a certificate of another CA with an invalid body: 401 on every route', async () => {
      for (const o of ops) {
        if (PUBLIC_PATHS.has(o.path)) continue;
        const { path, body } = bad(o);
        const r = await h.call(foreignCreds, o.method, path, body);
        expectRefused(r, 401, 'CLIENT_CERT_REQUIRED', `${o.method} ${o.path}`);
      }
    });

    it('a station on an operator route with an invalid body: 403, not 400', async () => {
      let n = 0;
      for (const o of ops) {
        if (!o.op.tags?.includes('operator')) continue;
        const { path, body } = bad(o);
        const r = await h.call(station, o.method, path, body);
        expectRefused(r, 403, 'IDENTITY_KIND_FORBIDDEN', `${o.method} ${o.path}`);
        n++;
      }
      expect(n).toBeGreaterThan(20);
    });
  });

  describe('every parameter of every route, mutated: a 4xx with a code, never a 500, nothing changed', () => {
    const STRINGS = ['\u0000', 'a\u0000b', '\u001b[2J', 'x'.repeat(5000), '%', '../..', 'a/b', '\uFFFF'];
    const NUMBERS = [
      '1e20',
      '1e400',
      '-1',
      '1.5',
      'NaN',
      'Infinity',
      '999999999999999999999',
      '0x10',
      'true',
    ];

    it('query parameters', async () => {
      const before = await rowCounts(h);
      let tried = 0;
      for (const o of ops) {
        for (const p of (o.op.parameters ?? []) as { in: string; name: string }[]) {
          if (p.in !== 'query') continue;
          for (const v of [...STRINGS, ...NUMBERS, '']) {
            const path = `${fill(o.path, 'p1')}?${p.name}=${encodeURIComponent(v)}`;
            const r = await h.call(h.operator, o.method, path, o.method === 'GET' ? undefined : {});
            tried++;
            const what = `${o.method} ${o.path} ?${p.name}=${JSON.stringify(v).slice(0, 24)}`;
            expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBeLessThan(500);
            if (r.status >= 400) expect(String(r.json?.error?.code), what).toMatch(/^[A-Z][A-Z0-9_]+$/);
          }
        }
      }
      expect(tried).toBeGreaterThan(100);
      expect(await rowCounts(h)).toBe(before);
    });

    it('path parameters', async () => {
      const before = await rowCounts(h);
      for (const o of ops) {
        if (!/\{\w+\}/.test(o.path) || PUBLIC_PATHS.has(o.path)) continue;
        for (const v of [...STRINGS, '9'.repeat(70)]) {
          const r = await h.call(h.operator, o.method, fill(o.path, v), o.method === 'GET' ? undefined : {});
          const what = `${o.method} ${o.path} with ${JSON.stringify(v).slice(0, 24)}`;
          expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBeGreaterThanOrEqual(400);
          expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBeLessThan(500);
          expect(String(r.json?.error?.code), `${what}: ${r.status} ${r.text.slice(0, 200)}`).toMatch(
            /^[A-Z][A-Z0-9_]+$/,
          );
        }
      }
      // Bad percent-encoding, sent as it is: the router's refusal has our shape and a code too.
      for (const raw of ['/v1/devices/%E0%A4%A', '/v1/stations/%', '/.well-known/est/%ZZ/simpleenroll']) {
        const r = await h.call(h.operator, raw.includes('est') ? 'POST' : 'GET', raw);
        expectRefused(r, 400, 'URL_INVALID', raw);
      }
      expect(await rowCounts(h)).toBe(before);
    });

    // A sweep of some 200 requests, each with its row count before and after: more than the default 60 s
    // when CI shares its cores.
    it('JSON body fields', { timeout: 180_000 }, async () => {
      const BODY_VALUES: unknown[] = [
        '\u0000',
        'a\u0000b',
        'x'.repeat(70),
        1e20,
        -1,
        1.5,
        true,
        null,
        ['a', 'a\u0000'],
        { from: '\u0000' },
        { from: '2020-01-01T00:00:00Z', to: '1970-01-01T00:00:00Z' },
      ];
      let tried = 0;
      let refused = 0;
      for (const o of ops) {
        const schema = o.op.requestBody?.content?.['application/json']?.schema;
        if (!schema?.properties) continue;
        for (const name of Object.keys(schema.properties)) {
          for (const v of BODY_VALUES) {
            // The fields a create needs, valid, so that the mutated one is what is judged.
            const body: Record<string, unknown> = {};
            for (const req of (schema.required ?? []) as string[])
              body[req] = req === 'csr' ? h.keyAndCsr('x').csrPem : uid('v');
            if (body['product'] !== undefined) body['product'] = 'thermo';
            body[name] = v;
            const before = await rowCounts(h);
            const r = await h.call(h.operator, o.method, fill(o.path, 'no-such'), body);
            tried++;
            const what = `${o.method} ${o.path} ${name}=${JSON.stringify(v).slice(0, 30)}`;
            // Some mutations are valid (an empty product list): those may succeed; none may fail with a 500.
            expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBeLessThan(500);
            if (r.status < 400) continue;
            refused++;
            expect(String(r.json?.error?.code), what).toMatch(/^[A-Z][A-Z0-9_]+$/);
            expect(await rowCounts(h), `${what} changed nothing`).toBe(before);
          }
        }
      }
      expect(tried).toBeGreaterThan(100);
      expect(refused).toBeGreaterThan(tried / 2);
    });
  });
});
