/**
 * Bad input: every wrong request gets its own stable code and HTTP status, and changes nothing (no device,
 * no certificate). Real mTLS clients; PGlite and, with DATABASE_URL, PostgreSQL.
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as der from '../pki/der.ts';
import { certToPem } from '../pki/x509.ts';
import { csrPem, generateKey, makeTestCa, nodeCsr, type TestCa } from './helpers/pki.ts';
import {
  backends,
  type Creds,
  createStation,
  deviceCreds,
  type Harness,
  startHarness,
  uid,
} from './helpers/provisioning.ts';

type Who = 'station' | 'device' | 'operator' | 'none' | 'foreign' | 'revoked' | 'suspended' | 'exhausted';

interface Case {
  name: string;
  who: Who;
  method?: string;
  path?: string;
  /** A function so each case gets fresh ids and keys. */
  body: (id: string) => unknown;
  headers?: Record<string, string>;
  status: number;
  code: string;
}

const csrFor = (id: string, cn: string | null = id) =>
  csrPem(nodeCsr(generateKey('P-256'), cn === null ? undefined : cn));
const good = (id: string) => ({ deviceId: id, product: 'thermo', csr: csrFor(id) });
const b64 = (pem: string) => der.fromPemAll(pem, 'CERTIFICATE REQUEST')[0]!.toString('base64');

function tamperedCsr(id: string): string {
  const d = nodeCsr(generateKey('P-256'), id);
  d[d.length - 5] ^= 0x55; // inside the signature
  return csrPem(d);
}

const CASES: Case[] = [
  {
    name: 'malformed JSON',
    who: 'station',
    body: () => '{"deviceId": ',
    headers: { 'content-type': 'application/json' },
    status: 400,
    code: 'BODY_MALFORMED_JSON',
  },
  {
    name: 'an empty JSON body',
    who: 'station',
    body: () => '',
    headers: { 'content-type': 'application/json' },
    status: 400,
    code: 'BODY_MALFORMED_JSON',
  },
  {
    name: 'a wrong content type',
    who: 'station',
    body: (id) => JSON.stringify(good(id)),
    headers: { 'content-type': 'text/plain' },
    status: 415,
    code: 'CONTENT_TYPE_UNSUPPORTED',
  },
  {
    name: 'a missing field',
    who: 'station',
    body: (id) => ({ deviceId: id, product: 'thermo' }),
    status: 400,
    code: 'BODY_INVALID',
  },
  {
    name: 'an unknown field',
    who: 'station',
    body: (id) => ({ ...good(id), admin: true }),
    status: 400,
    code: 'BODY_INVALID',
  },
  {
    name: 'a field of the wrong type',
    who: 'station',
    body: (id) => ({ ...good(id), product: 42 }),
    status: 400,
    code: 'BODY_INVALID',
  },
  {
    name: 'an oversized body',
    who: 'station',
    body: (id) => ({ ...good(id), csr: 'A'.repeat(200 * 1024) }),
    status: 413,
    code: 'BODY_TOO_LARGE',
  },
  {
    name: 'a CSR that is not one',
    who: 'station',
    body: (id) => ({ ...good(id), csr: 'bm90IGEgY3Ny' }),
    status: 400,
    code: 'CSR_MALFORMED',
  },
  {
    name: 'a CSR whose signature does not verify',
    who: 'station',
    body: (id) => ({ ...good(id), csr: tamperedCsr(id) }),
    status: 400,
    code: 'CSR_SIGNATURE_INVALID',
  },
  {
    name: 'a CSR naming another device',
    who: 'station',
    body: (id) => ({ ...good(id), csr: csrFor(id, 'someone-else') }),
    status: 400,
    code: 'CSR_SUBJECT_MISMATCH',
  },
  {
    name: 'a CSR with a weak RSA key',
    who: 'station',
    body: (id) => ({ ...good(id), csr: csrPem(nodeCsr(generateKey('RSA-1024'), id)) }),
    status: 400,
    code: 'CSR_KEY_TOO_WEAK',
  },
  {
    name: 'a device id with a topic character',
    who: 'station',
    body: (id) => ({ ...good(id), deviceId: `${id}/x` }),
    status: 400,
    code: 'ID_INVALID',
  },
  {
    name: 'an unknown product (in no scope of the station)',
    who: 'station',
    body: (id) => ({ ...good(id), product: 'toaster' }),
    status: 403,
    code: 'PRODUCT_NOT_IN_SCOPE',
  },
  {
    name: 'a device certificate where a station is required',
    who: 'device',
    body: good,
    status: 403,
    code: 'IDENTITY_KIND_FORBIDDEN',
  },
  {
    name: 'an operator certificate where a station is required',
    who: 'operator',
    body: good,
    status: 403,
    code: 'IDENTITY_KIND_FORBIDDEN',
  },
  { name: 'no client certificate', who: 'none', body: good, status: 401, code: 'CLIENT_CERT_REQUIRED' },
  {
    name: "a station certificate of another CA (OpenSSL's verdict)",
    who: 'foreign',
    body: good,
    status: 401,
    code: 'CLIENT_CERT_REQUIRED',
  },
  { name: 'a revoked station', who: 'revoked', body: good, status: 403, code: 'CLIENT_CERT_REVOKED' },
  { name: 'a suspended station', who: 'suspended', body: good, status: 403, code: 'CLIENT_SUSPENDED' },
  { name: 'an exhausted quota', who: 'exhausted', body: good, status: 429, code: 'QUOTA_EXHAUSTED' },
  {
    name: 'EST: a body that is not base64',
    who: 'station',
    path: '/.well-known/est/thermo/simpleenroll',
    body: () => 'this is *not* base64!',
    headers: { 'content-type': 'application/pkcs10' },
    status: 400,
    code: 'EST_BODY_INVALID',
  },
  {
    name: 'EST: a JSON body',
    who: 'station',
    path: '/.well-known/est/thermo/simpleenroll',
    body: good,
    status: 415,
    code: 'CONTENT_TYPE_UNSUPPORTED',
  },
  {
    name: 'EST: a CSR without the device id as CN',
    who: 'station',
    path: '/.well-known/est/thermo/simpleenroll',
    body: (id) => b64(csrFor(id, null)),
    headers: { 'content-type': 'application/pkcs10' },
    status: 400,
    code: 'CSR_SUBJECT_INVALID',
  },
  {
    name: 'EST: a device certificate where a station is required',
    who: 'device',
    path: '/.well-known/est/thermo/simpleenroll',
    body: (id) => b64(csrFor(id)),
    headers: { 'content-type': 'application/pkcs10' },
    status: 403,
    code: 'IDENTITY_KIND_FORBIDDEN',
  },
  {
    name: 'operator API with a station certificate',
    who: 'station',
    method: 'GET',
    path: '/v1/devices',
    body: () => undefined,
    status: 403,
    code: 'IDENTITY_KIND_FORBIDDEN',
  },
  {
    name: 'operator API: a malformed query',
    who: 'operator',
    method: 'GET',
    path: '/v1/devices?limit=lots',
    body: () => undefined,
    status: 400,
    code: 'QUERY_INVALID',
  },
  {
    name: 'operator API: a reason that is not an RFC 5280 reason',
    who: 'operator',
    path: '/v1/devices/DEVICE/revoke',
    body: () => ({ reason: 'because' }),
    status: 400,
    code: 'BODY_INVALID',
  },
  {
    name: 'operator API: station create without an id',
    who: 'operator',
    path: '/v1/stations',
    body: () => ({ products: ['thermo'] }),
    status: 400,
    code: 'BODY_INVALID',
  },
  {
    name: 'an unknown route',
    who: 'operator',
    method: 'GET',
    path: '/v1/nothing-here',
    body: () => undefined,
    status: 404,
    code: 'ROUTE_NOT_FOUND',
  },
];

describe.each(backends('provin'))('bad input on $name', (backend) => {
  let h: Harness;
  let foreign: TestCa;
  const who = {} as Record<Who, Creds | null>;
  let deviceId: string;

  beforeAll(async () => {
    h = await startHarness(backend);
    who.station = await createStation(h, { products: ['thermo'] });
    who.revoked = await createStation(h, { products: ['thermo'] });
    who.suspended = await createStation(h, { products: ['thermo'] });
    who.exhausted = await createStation(h, { products: ['thermo'], hourlyQuota: 0 });
    who.operator = h.operator;
    who.none = null;
    deviceId = uid('dev');
    const k = h.keyAndCsr(deviceId);
    const e = await h.call(who.station, 'POST', '/v1/enrollments', {
      deviceId,
      product: 'thermo',
      csr: k.csrPem,
    });
    who.device = await deviceCreds(h, e.json, k.keyPem);
    expect((await h.call(h.operator, 'POST', `/v1/stations/${who.revoked.id}/revoke`, {})).status).toBe(200);
    expect((await h.call(h.operator, 'POST', `/v1/stations/${who.suspended.id}/suspend`, {})).status).toBe(
      200,
    );
    // A station certificate from a CA that is not this fleet's, with a well-formed identity.
    foreign = await makeTestCa();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const fc = foreign.ca.issue({
      profile: 'station',
      id: who.station.id,
      spki: publicKey.export({ type: 'spki', format: 'der' }),
    });
    who.foreign = {
      kind: 'station',
      id: who.station.id,
      serial: fc.serial,
      certPem: certToPem(fc.der) + certToPem(foreign.ca.issuers.infrastructure.certificate),
      keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      certPath: '',
      keyPath: '',
    };
  });
  afterAll(async () => {
    await h?.close();
    await foreign?.cleanup();
    await backend.cleanup();
  });

  const snapshot = async () => ({
    devices: (await h.registry.listDevices({ limit: 1000 })).items.length,
    certificates: (await h.registry.expiringCertificates({ withinDays: 100_000, limit: 1000 })).items.length,
  });

  it.each(CASES)('$name: $status $code, nothing changed', async (c) => {
    const before = await snapshot();
    const id = uid('bad');
    const path = (c.path ?? '/v1/enrollments').replace('DEVICE', deviceId);
    const r = await h.call(who[c.who], c.method ?? 'POST', path, c.body(id), c.headers);
    expect(r.status, r.text).toBe(c.status);
    expect(r.json?.error?.code, r.text).toBe(c.code);
    expect(typeof r.json.error.message).toBe('string');
    expect(await h.registry.getDevice(id)).toBeUndefined();
    expect(await snapshot()).toEqual(before);
  });

  it('a refusal never shows an internal cause', async () => {
    const r = await h.call(who.station, 'POST', '/v1/enrollments', '{"x":', {
      'content-type': 'application/json',
    });
    expect(Object.keys(r.json.error).sort()).toEqual(['code', 'message']);
    expect(r.text).not.toMatch(/stack|at .*\.ts|SyntaxError/);
  });

  it('batch: an overlong line and a non-object line fail alone; the good line still succeeds', async () => {
    const before = await snapshot();
    const okId = uid('ok');
    const body = [
      JSON.stringify({ deviceId: uid('big'), product: 'thermo', csr: 'A'.repeat(70 * 1024) }),
      '[1,2,3]',
      JSON.stringify(good(okId)),
    ].join('\n');
    const r = await h.call(who.station, 'POST', '/v1/enrollments/batch', body, {
      'content-type': 'application/x-ndjson',
    });
    const out = r.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(out.map((o) => o.ok)).toEqual([false, false, true]);
    expect(out[0].error.code).toBe('LINE_TOO_LARGE');
    expect(out[1].error.code).toBe('BODY_INVALID');
    const after = await snapshot();
    expect(after.devices).toBe(before.devices + 1);
  });

  it('batch: a device certificate, a revoked station and an exhausted quota fail every line', async () => {
    const body = `${JSON.stringify(good(uid('x')))}\n${JSON.stringify(good(uid('x')))}\n`;
    const before = await snapshot();
    const asDevice = await h.call(who.device, 'POST', '/v1/enrollments/batch', body, {
      'content-type': 'application/x-ndjson',
    });
    expect(asDevice.status).toBe(403);
    expect(asDevice.json.error.code).toBe('IDENTITY_KIND_FORBIDDEN');
    const asRevoked = await h.call(who.revoked, 'POST', '/v1/enrollments/batch', body, {
      'content-type': 'application/x-ndjson',
    });
    expect(asRevoked.json.error.code).toBe('CLIENT_CERT_REVOKED');
    const exhausted = await h.call(who.exhausted, 'POST', '/v1/enrollments/batch', body, {
      'content-type': 'application/x-ndjson',
    });
    const lines = exhausted.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.error.code)).toEqual(['QUOTA_EXHAUSTED', 'QUOTA_EXHAUSTED']);
    expect(await snapshot()).toEqual(before);
  });
});
