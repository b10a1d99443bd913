/**
 * OCSP (RFC 6960) and PKCS#7 certs-only (RFC 5652, for EST) against the real openssl: openssl builds the
 * requests, we answer, openssl verifies the answers.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCsr } from '../pki/csr.ts';
import * as der from '../pki/der.ts';
import { isFleetError, type PkiErrorCode } from '../pki/errors.ts';
import {
  answerOcspRequest,
  buildOcspError,
  buildOcspResponse,
  type CertId,
  certIdFor,
  certIdMatchesIssuer,
  findIssuerForCertId,
  type OcspCertStatus,
  type OcspErrorStatus,
  ocspRequestFromGetPath,
  parseOcspRequest,
} from '../pki/ocsp.ts';
import { OID } from '../pki/oids.ts';
import { certsFromPkcs7, certsOnly, fromBase64Body, toBase64Body } from '../pki/pkcs7.ts';
import { certToPem, type IssuedCertificate } from '../pki/x509.ts';
import {
  generateKey,
  makeTestCa,
  nodeCsr,
  type OpensslResult,
  openssl,
  opensslOcspAgainstRequest,
  opensslOcspStatus,
  type TestCa,
} from './helpers/pki.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (isFleetError(e)) return e.code;
    throw e;
  }
  return undefined;
}

let t: TestCa;
let foreign: TestCa;
let dev: IssuedCertificate;
let dev2: IssuedCertificate;
let devPath: string;
let dev2Path: string;

const issue = (ca: TestCa, id: string) =>
  ca.ca.issue({ profile: 'device', id, spki: checkCsr(nodeCsr(generateKey('P-256'), id), id).spki });

beforeAll(async () => {
  [t, foreign] = await Promise.all([makeTestCa(), makeTestCa({ config: { organization: 'Someone Else' } })]);
  dev = issue(t, 'dev-ocsp-1');
  dev2 = issue(t, 'dev-ocsp-2');
  devPath = await t.write('dev.pem', certToPem(dev.der));
  dev2Path = await t.write('dev2.pem', certToPem(dev2.der));
});
afterAll(async () => {
  await Promise.all([t?.cleanup(), foreign?.cleanup()]);
});

let n = 0;
/** `openssl ocsp … -reqout`: a request exactly as the openssl client makes it. */
async function opensslRequest(args: string[]): Promise<{ der: Buffer; path: string }> {
  const path = join(t.dir, `req-${n++}.der`);
  const r = await openssl(['ocsp', ...args, '-reqout', path]);
  expect(r.code, r.stderr).toBe(0);
  return { der: await readFile(path), path };
}

async function writeResponse(resp: Buffer): Promise<string> {
  return t.write(`resp-${n++}.der`, resp);
}

const hour = 3_600_000;
function answer(certId: CertId, status: OcspCertStatus, nonce?: Buffer, ca: TestCa = t) {
  const now = new Date();
  return buildOcspResponse({
    issuer: ca.ca.issuers.device,
    responses: [{ certId, status, thisUpdate: now, nextUpdate: new Date(now.getTime() + hour) }],
    nonce,
    producedAt: now,
  });
}

describe('OCSP requests from openssl', () => {
  it('parses a SHA-1 CertID without nonce, with the serial in canonical form', async () => {
    const { der: req } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath, '-no_nonce']);
    const parsed = parseOcspRequest(req);
    expect(parsed.nonce).toBeUndefined();
    expect(parsed.certIds).toHaveLength(1);
    expect(parsed.certIds[0]).toMatchObject({ hashAlgorithm: 'sha1', serial: dev.serial });
    expect(parsed.certIds[0]!.der.equals(certIdFor(t.ca.issuers.device, dev.serial).der)).toBe(true);
  });

  it('parses a SHA-256 CertID', async () => {
    const { der: req } = await opensslRequest([
      '-issuer',
      t.files.deviceCa,
      '-sha256',
      '-cert',
      devPath,
      '-no_nonce',
    ]);
    const [id] = parseOcspRequest(req).certIds;
    expect(id).toMatchObject({ hashAlgorithm: 'sha256', serial: dev.serial });
    expect(id!.issuerNameHash).toHaveLength(32);
    expect(certIdMatchesIssuer(id!, t.ca.issuers.device)).toBe(true);
  });

  it('parses the nonce openssl adds by default (16 octets)', async () => {
    const { der: req } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath]);
    expect(parseOcspRequest(req).nonce).toHaveLength(16);
  });

  it('parses several certificates in one request', async () => {
    const { der: req } = await opensslRequest([
      '-issuer',
      t.files.deviceCa,
      '-cert',
      devPath,
      '-cert',
      dev2Path,
      '-no_nonce',
    ]);
    expect(parseOcspRequest(req).certIds.map((c) => c.serial)).toEqual([dev.serial, dev2.serial]);
  });

  it('tells which CA is asked, and no CA for a foreign issuer', async () => {
    const { der: req } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath, '-no_nonce']);
    const [id] = parseOcspRequest(req).certIds;
    const issuers = Object.values(t.ca.issuers);
    expect(findIssuerForCertId(id!, issuers)).toBe(t.ca.issuers.device);
    expect(certIdMatchesIssuer(id!, t.ca.issuers.infrastructure)).toBe(false);

    const other = issue(foreign, 'dev-foreign');
    const otherPath = await foreign.write('other.pem', certToPem(other.der));
    const { der: fr } = await opensslRequest([
      '-issuer',
      foreign.files.deviceCa,
      '-cert',
      otherPath,
      '-no_nonce',
    ]);
    expect(findIssuerForCertId(parseOcspRequest(fr).certIds[0]!, issuers)).toBeUndefined();
  });

  it('decodes the GET form (base64, URL-encoded, in the path)', async () => {
    const { der: req } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath]);
    expect(ocspRequestFromGetPath(encodeURIComponent(req.toString('base64'))).equals(req)).toBe(true);
    expect(ocspRequestFromGetPath(req.toString('base64')).equals(req)).toBe(true);
  });
});

describe('OCSP requests that are refused with OCSP_MALFORMED', () => {
  const certId = () => certIdFor(t.ca.issuers.device, 'abcd');
  const tbs = (...fields: Buffer[]) => der.seq(der.seq(...fields));
  const nonceExt = (v: Buffer) =>
    der.ctx(2, der.seq(der.seq(der.oid(OID.ocspNonce), der.octetString(der.octetString(v)))));
  const md5CertId = () =>
    der.seq(
      der.seq(der.oid('1.2.840.113549.2.5'), der.NULL),
      der.octetString(Buffer.alloc(16)),
      der.octetString(Buffer.alloc(16)),
      der.uint(1),
    );

  const cases: [string, () => Buffer][] = [
    ['garbage', () => Buffer.from('GET / HTTP/1.1\r\n\r\n')],
    ['an empty body', () => Buffer.alloc(0)],
    ['a truncated request', () => tbs(der.seq(der.seq(certId().der))).subarray(0, 40)],
    ['trailing bytes', () => Buffer.concat([tbs(der.seq(der.seq(certId().der))), Buffer.from([0])])],
    ['an empty request list', () => tbs(der.seq())],
    ['a CertID with an unsupported hash (MD5)', () => tbs(der.seq(der.seq(md5CertId())))],
    [
      'a CertID whose hash lengths do not fit its algorithm',
      () =>
        tbs(
          der.seq(
            der.seq(
              der.seq(
                der.seq(der.oid(OID.sha1), der.NULL),
                der.octetString(Buffer.alloc(32)),
                der.octetString(Buffer.alloc(20)),
                der.uint(5),
              ),
            ),
          ),
        ),
    ],
    ['an empty nonce', () => tbs(der.seq(der.seq(certId().der)), nonceExt(Buffer.alloc(0)))],
    [
      'a nonce over 32 octets (RFC 8954)',
      () => tbs(der.seq(der.seq(certId().der)), nonceExt(Buffer.alloc(33, 1))),
    ],
    ['version v2', () => tbs(der.ctx(0, der.uint(1)), der.seq(der.seq(certId().der)))],
    [
      'an unknown critical extension',
      () =>
        tbs(
          der.seq(der.seq(certId().der)),
          der.ctx(2, der.seq(der.seq(der.oid('1.2.3.4'), der.boolean(true), der.octetString(der.NULL)))),
        ),
    ],
    [
      'more than 64 certificates at once',
      () => tbs(der.seq(...Array.from({ length: 65 }, () => der.seq(certId().der)))),
    ],
    ['an oversize body', () => der.seq(Buffer.alloc(20_000))],
    ['a certificate instead of a request', () => dev.der],
  ];

  it.each(cases)('%s', (_name, make) => {
    expect(codeOf(() => parseOcspRequest(make()))).toBe('OCSP_MALFORMED' satisfies PkiErrorCode);
  });

  it('accepts the hand-built equivalent of a valid request (control for the table above)', () => {
    const parsed = parseOcspRequest(tbs(der.seq(der.seq(certId().der)), nonceExt(Buffer.alloc(32, 7))));
    expect(parsed.certIds[0]!.serial).toBe('abcd');
    expect(parsed.nonce).toEqual(Buffer.alloc(32, 7));
  });

  it.each([['not base64 %%%'], ['%E0%A4%A']])('refuses the GET path %s', (segment) => {
    expect(codeOf(() => ocspRequestFromGetPath(segment))).toBe('OCSP_MALFORMED');
  });
});

describe('OCSP responses verified by openssl', () => {
  async function check(
    status: OcspCertStatus,
    opts: { sha256?: boolean; includeCert?: boolean; text?: boolean } = {},
  ) {
    const digest = opts.sha256 ? ['-sha256'] : [];
    const { der: req } = await opensslRequest([
      '-issuer',
      t.files.deviceCa,
      ...digest,
      '-cert',
      devPath,
      '-no_nonce',
    ]);
    const [certId] = parseOcspRequest(req).certIds;
    const now = new Date();
    const resp = buildOcspResponse({
      issuer: findIssuerForCertId(certId!, Object.values(t.ca.issuers))!,
      responses: [{ certId: certId!, status, thisUpdate: now, nextUpdate: new Date(now.getTime() + hour) }],
      includeIssuerCertificate: opts.includeCert,
    });
    const path = await writeResponse(resp);
    return opensslOcspStatus({
      text: opts.text,
      response: path,
      issuer: t.files.deviceCa,
      sha256: opts.sha256,
      certs: [devPath],
      root: t.files.root,
    });
  }

  it('answers good, and openssl verifies the signature', async () => {
    const r = await check('good');
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`${devPath}: good`);
  });

  it('answers revoked with its reason and time', async () => {
    const r = await check({
      revoked: { at: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)), reason: 'keyCompromise' },
    });
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`${devPath}: revoked`);
    expect(r.stdout).toContain('Reason: keyCompromise');
    expect(r.stdout).toContain('Revocation Time: Jan  2 03:04:05 2026 GMT');
  });

  // openssl names reasons up to removeFromCRL (8); privilegeWithdrawn (9) shows by number only.
  it.each([
    ['affiliationChanged', 3],
    ['superseded', 4],
    ['cessationOfOperation', 5],
    ['certificateHold', 6],
    ['privilegeWithdrawn', 9],
  ] as const)('reports the reason %s (%i)', async (reason, code) => {
    const r = await check({ revoked: { at: new Date(), reason } }, { text: true });
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`Revocation Reason: ${reason === 'privilegeWithdrawn' ? '' : reason}`);
    expect(r.stdout).toContain(`(0x${code})`);
  });

  it('answers revoked without a reason when none is given', async () => {
    const r = await check({ revoked: { at: new Date() } });
    expect(r.stdout).toContain(`${devPath}: revoked`);
    expect(r.stdout).not.toContain('Reason:');
  });

  it('answers unknown (a serial the registry does not know)', async () => {
    const r = await check('unknown');
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`${devPath}: unknown`);
  });

  it('answers a SHA-256 CertID with the same CertID', async () => {
    const r = await check('good', { sha256: true });
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`${devPath}: good`);
  });

  it('verifies with the issuer certificate included too', async () => {
    const r = await check('good', { includeCert: true });
    expect(r.stderr).toContain('Response verify OK');
  });

  // `openssl ocsp -issuer X` trusts X as a signer outright (OCSP_TRUSTOTHER), so the chain check is
  // exercised with -reqin and -verify_other instead.
  it.each([
    ['verifies through the chain to our root', () => t.files.root, true],
    ['does not verify against a different root', () => foreign.files.root, false],
  ])('%s', async (_n, root, ok) => {
    const { der: req, path: reqPath } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath]);
    const parsed = parseOcspRequest(req);
    const path = await writeResponse(answer(parsed.certIds[0]!, 'good', parsed.nonce));
    const r = await opensslOcspAgainstRequest({
      request: reqPath,
      response: path,
      root: root(),
      verifyOther: t.files.deviceCa,
    });
    expect(r.stderr.includes('Response verify OK')).toBe(ok);
  });

  it('a response signed by another CA for our certificate fails verification', async () => {
    const { der: req } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath, '-no_nonce']);
    const path = await writeResponse(answer(parseOcspRequest(req).certIds[0]!, 'good', undefined, foreign));
    const r = await opensslOcspStatus({
      response: path,
      issuer: t.files.deviceCa,
      certs: [devPath],
      root: t.files.root,
      verifyOther: foreign.files.chain,
    });
    expect(r.stderr).not.toContain('Response verify OK');
  });

  it.each([
    [
      'echoes the nonce, and openssl checks it against its request',
      (asked: Buffer | undefined) => asked,
      (r: OpensslResult) => {
        expect(r.stderr).toContain('Response verify OK');
        expect(r.stderr).not.toContain('Nonce Verify error');
      },
    ],
    [
      'a different nonce is caught by openssl',
      () => Buffer.alloc(16, 9),
      (r: OpensslResult) => {
        expect(r.stderr).toContain('Nonce Verify error');
      },
    ],
  ])('%s', async (_name, nonceOf, expected) => {
    const { der: req, path: reqPath } = await opensslRequest(['-issuer', t.files.deviceCa, '-cert', devPath]);
    const parsed = parseOcspRequest(req);
    const path = await writeResponse(answer(parsed.certIds[0]!, 'good', nonceOf(parsed.nonce)));
    expected(
      await opensslOcspAgainstRequest({
        request: reqPath,
        response: path,
        root: t.files.root,
        issuer: t.files.deviceCa,
      }),
    );
  });

  it('answers several certificates in one response', async () => {
    const { der: req } = await opensslRequest([
      '-issuer',
      t.files.deviceCa,
      '-cert',
      devPath,
      '-cert',
      dev2Path,
      '-no_nonce',
    ]);
    const ids = parseOcspRequest(req).certIds;
    const now = new Date();
    const resp = buildOcspResponse({
      issuer: t.ca.issuers.device,
      responses: [
        { certId: ids[0]!, status: 'good', thisUpdate: now, nextUpdate: new Date(now.getTime() + hour) },
        { certId: ids[1]!, status: { revoked: { at: now, reason: 'superseded' } }, thisUpdate: now },
      ],
    });
    const path = await writeResponse(resp);
    const r = await opensslOcspStatus({
      response: path,
      issuer: t.files.deviceCa,
      certs: [devPath, dev2Path],
      root: t.files.root,
    });
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stdout).toContain(`${devPath}: good`);
    expect(r.stdout).toContain(`${dev2Path}: revoked`);
  });

  it('names the responder by key hash and signs with the CA key (openssl -resp_text)', async () => {
    const path = await writeResponse(answer(certIdFor(t.ca.issuers.device, dev.serial), 'good'));
    const r = await openssl(['ocsp', '-respin', path, '-resp_text', '-noverify']);
    const keyHash = certIdFor(t.ca.issuers.device, dev.serial).issuerKeyHash.toString('hex').toUpperCase();
    expect(r.stdout).toContain(`Responder Id: ${keyHash}`);
    expect(r.stdout).toContain('Signature Algorithm: ecdsa-with-SHA256');
  });

  it('works for a P-384 CA (ecdsa-with-SHA384)', async () => {
    const p384 = await makeTestCa({ algorithm: 'P-384' });
    try {
      const c = issue(p384, 'dev-384');
      const cPath = await p384.write('d.pem', certToPem(c.der));
      const reqPath = join(p384.dir, 'req.der');
      await openssl(['ocsp', '-issuer', p384.files.deviceCa, '-cert', cPath, '-reqout', reqPath]);
      const parsed = parseOcspRequest(await readFile(reqPath));
      const respPath = await p384.write('resp.der', answer(parsed.certIds[0]!, 'good', parsed.nonce, p384));
      const r = await opensslOcspAgainstRequest({
        request: reqPath,
        response: respPath,
        root: p384.files.root,
        issuer: p384.files.deviceCa,
        text: true,
      });
      expect(r.stderr).toContain('Response verify OK');
      expect(r.stdout).toContain('ecdsa-with-SHA384');
    } finally {
      await p384.cleanup();
    }
  });
});

describe('OCSP error responses', () => {
  it.each([
    ['malformedRequest', 1],
    ['internalError', 2],
    ['tryLater', 3],
    ['unauthorized', 6],
  ] as [OcspErrorStatus, number][])(
    '%s is status %i with no response bytes, read by openssl',
    async (status, code) => {
      const d = buildOcspError(status);
      expect(d.equals(Buffer.from([0x30, 0x03, 0x0a, 0x01, code]))).toBe(true);
      const r = await openssl(['ocsp', '-respin', await writeResponse(d), '-resp_text', '-noverify']);
      expect(r.stdout + r.stderr).toContain(`(${code})`);
      expect((r.stdout + r.stderr).toLowerCase()).toContain(status.toLowerCase());
    },
  );

  it('refuses a status that is not an error', () => {
    expect(codeOf(() => buildOcspError('successful' as OcspErrorStatus))).toBe('OCSP_INVALID');
    expect(codeOf(() => buildOcspError('toString' as OcspErrorStatus))).toBe('OCSP_INVALID');
  });

  it('refuses to build a response with no answers or a bad reason', () => {
    const certId = certIdFor(t.ca.issuers.device, dev.serial);
    expect(codeOf(() => buildOcspResponse({ issuer: t.ca.issuers.device, responses: [] }))).toBe(
      'OCSP_INVALID',
    );
    expect(
      codeOf(() =>
        buildOcspResponse({
          issuer: t.ca.issuers.device,
          responses: [
            {
              certId,
              status: { revoked: { at: new Date(), reason: 'toString' as never } },
              thisUpdate: new Date(),
            },
          ],
        }),
      ),
    ).toBe('OCSP_INVALID');
  });
});

// ------------------------------------------------------------------ PKCS#7

describe('PKCS#7 certs-only (EST)', () => {
  it('is read by openssl pkcs7 -print_certs, in the given order', async () => {
    const p7 = certsOnly([dev.der, t.ca.issuers.device.certificate]);
    const path = await t.write('certs.p7b', p7);
    const r = await openssl(['pkcs7', '-inform', 'DER', '-in', path, '-print_certs', '-noout']);
    expect(r.code).toBe(0);
    const subjects = r.stdout.split('\n').filter((l) => l.startsWith('subject='));
    expect(subjects).toEqual([
      'subject=O = Fleet Test, CN = dev-ocsp-1',
      'subject=O = Fleet Test, CN = Fleet Test Device CA',
    ]);
  });

  it('is byte-identical to openssl crl2pkcs7 -nocrl', async () => {
    const out = join(t.dir, 'openssl.p7b');
    const r = await openssl([
      'crl2pkcs7',
      '-nocrl',
      '-certfile',
      devPath,
      '-certfile',
      t.files.deviceCa,
      '-outform',
      'DER',
      '-out',
      out,
    ]);
    expect(r.code).toBe(0);
    expect((await readFile(out)).equals(certsOnly([dev.der, t.ca.issuers.device.certificate]))).toBe(true);
  });

  it('round-trips through certsFromPkcs7', () => {
    const certs = [dev.der, dev2.der, t.ca.root];
    expect(certsFromPkcs7(certsOnly(certs))).toEqual(certs);
  });

  it('the base64 body (RFC 7030) decodes with openssl base64 -d and back', async () => {
    const p7 = certsOnly([t.ca.issuers.device.certificate, t.ca.root]);
    const body = toBase64Body(p7);
    expect(body.split('\r\n').every((l) => l.length <= 64)).toBe(true);
    expect(fromBase64Body(body)!.equals(p7)).toBe(true);
    const path = await t.write('body.b64', body.replace(/\r\n/g, '\n'));
    const r = await openssl(['base64', '-d', '-in', path, '-out', join(t.dir, 'body.der')]);
    expect(r.code).toBe(0);
    const p = await openssl([
      'pkcs7',
      '-inform',
      'DER',
      '-in',
      join(t.dir, 'body.der'),
      '-print_certs',
      '-noout',
    ]);
    expect(p.stdout).toContain('CN = Fleet Test Root CA');
  });

  it.each([['not base64!'], [''], ['abc']])('fromBase64Body refuses %j', (s) => {
    expect(fromBase64Body(s)).toBeUndefined();
  });

  it.each([
    ['no certificates', () => certsOnly([])],
    ['a certificate that is not DER', () => certsOnly([Buffer.from('nope')])],
    ['a certificate with trailing bytes', () => certsOnly([Buffer.concat([dev.der, Buffer.from([0])])])],
    ['parsing garbage', () => certsFromPkcs7(Buffer.from('garbage'))],
    ['parsing a certificate as PKCS#7', () => certsFromPkcs7(dev.der)],
  ])('refuses %s with PKCS7_INVALID', (_n, fn) => {
    expect(codeOf(fn)).toBe('PKCS7_INVALID');
  });
});

// ------------------------------------------------------------------ the whole exchange

describe('answerOcspRequest (parse, pick the CA, look up, sign)', () => {
  const issuers = () => Object.values(t.ca.issuers);

  it('answers good, revoked and unknown from the lookup, echoes the nonce, and openssl verifies it', async () => {
    const third = issue(t, 'dev-ocsp-3');
    const thirdPath = await t.write('dev3.pem', certToPem(third.der));
    const { der: req, path: reqPath } = await opensslRequest([
      '-issuer',
      t.files.deviceCa,
      '-cert',
      devPath,
      '-cert',
      dev2Path,
      '-cert',
      thirdPath,
    ]);
    const asked: string[][] = [];
    const a = await answerOcspRequest({
      request: req,
      issuers: issuers(),
      lookup: (issuer, serials) => {
        expect(issuer).toBe(t.ca.issuers.device);
        asked.push([...serials]);
        return new Map<string, OcspCertStatus>([
          [dev.serial, 'good'],
          [dev2.serial, { revoked: { at: new Date(), reason: 'cessationOfOperation' } }],
        ]);
      },
    });
    expect(a.outcome).toBe('successful');
    expect(asked).toEqual([[dev.serial, dev2.serial, third.serial]]);
    const path = await writeResponse(a.der);
    const withNonce = await opensslOcspAgainstRequest({
      request: reqPath,
      response: path,
      root: t.files.root,
      issuer: t.files.deviceCa,
    });
    expect(withNonce.stderr).toContain('Response verify OK');
    expect(withNonce.stderr).not.toContain('Nonce Verify error');
    const r = await opensslOcspStatus({
      response: path,
      issuer: t.files.deviceCa,
      certs: [devPath, dev2Path, thirdPath],
      root: t.files.root,
    });
    expect(r.stdout).toContain(`${devPath}: good`);
    expect(r.stdout).toContain(`${dev2Path}: revoked`);
    expect(r.stdout).toContain('Reason: cessationOfOperation');
    expect(r.stdout).toContain(`${thirdPath}: unknown`);
  });

  it('answers unauthorized when no CA of ours issued the certificate', async () => {
    const other = issue(foreign, 'dev-foreign-2');
    const otherPath = await foreign.write('other2.pem', certToPem(other.der));
    const { der: req } = await opensslRequest(['-issuer', foreign.files.deviceCa, '-cert', otherPath]);
    const a = await answerOcspRequest({ request: req, issuers: issuers(), lookup: () => new Map() });
    expect(a.outcome).toBe('unauthorized');
    const r = await openssl(['ocsp', '-respin', await writeResponse(a.der), '-resp_text', '-noverify']);
    expect(r.stdout + r.stderr).toContain('unauthorized (6)');
  });

  it('answers a foreign CertID beside ours as unknown, in a response signed by our CA', async () => {
    const other = issue(foreign, 'dev-foreign-3');
    const foreignId = certIdFor(foreign.ca.issuers.device, other.serial);
    const ours = certIdFor(t.ca.issuers.device, dev.serial);
    const req = der.seq(der.seq(der.seq(der.seq(ours.der), der.seq(foreignId.der))));
    const a = await answerOcspRequest({
      request: req,
      issuers: issuers(),
      lookup: () => new Map([[dev.serial, 'good' as const]]),
    });
    expect(a.outcome).toBe('successful');
    const r = await openssl(['ocsp', '-respin', await writeResponse(a.der), '-resp_text', '-noverify']);
    expect(r.stdout.match(/Cert Status: good/g)).toHaveLength(1);
    expect(r.stdout.match(/Cert Status: unknown/g)).toHaveLength(1);
  });

  it.each([
    ['garbage', () => Buffer.from('nonsense'), () => new Map(), 'malformedRequest'],
    [
      'a failing lookup',
      () => certIdRequest(),
      () => {
        throw new Error('database down');
      },
      'internalError',
    ],
    [
      'a lookup that makes up a reason',
      () => certIdRequest(),
      () => new Map([[dev.serial, { revoked: { at: new Date(), reason: 'bogus' } }]]),
      'internalError',
    ],
  ] as [string, () => Buffer, () => Map<string, OcspCertStatus>, string][])(
    'answers %s with %s, keeping the cause for the log',
    async (_n, request, lookup, outcome) => {
      const a = await answerOcspRequest({ request: request(), issuers: issuers(), lookup });
      expect(a.outcome).toBe(outcome);
      expect(a.error).toBeDefined();
      expect(a.der.equals(buildOcspError(outcome as OcspErrorStatus))).toBe(true);
    },
  );

  function certIdRequest(): Buffer {
    return der.seq(der.seq(der.seq(der.seq(certIdFor(t.ca.issuers.device, dev.serial).der))));
  }
});
