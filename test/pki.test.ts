/**
 * PKI core against the real openssl: issuing profiles, CSR refusals, identity, key store, CRL.
 * Every certificate here is made at test time by the project's own CA code.
 */
import { createPublicKey, sign, X509Certificate } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, loadCa, openCa } from '../pki/ca.ts';
import { buildCrl } from '../pki/crl.ts';
import { CSR_MAX_BYTES, checkCsr } from '../pki/csr.ts';
import * as der from '../pki/der.ts';
import { isFleetError, type PkiErrorCode } from '../pki/errors.ts';
import { identityFromCertificate } from '../pki/identity.ts';
import { FileKeyStore } from '../pki/keystore.ts';
import { OID } from '../pki/oids.ts';
import { certToPem, type IssuedCertificate, type ProfileName } from '../pki/x509.ts';
import {
  compressedSpki,
  csrPem,
  generateKey,
  makeTestCa,
  type NodeKeyType,
  nodeCsr,
  type OpensslKeySpec,
  openssl,
  opensslCsr,
  opensslVerify,
  type TestCa,
  VERIFY,
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

async function codeOfAsync(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    if (isFleetError(e)) return e.code;
    throw e;
  }
  return undefined;
}

let t: TestCa;
beforeAll(async () => {
  t = await makeTestCa();
});
afterAll(async () => {
  await t?.cleanup();
});

const issueFromKey = (
  profile: ProfileName,
  id: string,
  extra: Partial<Parameters<TestCa['ca']['issue']>[0]> = {},
) => t.ca.issue({ profile, id, spki: checkCsr(nodeCsr(generateKey('P-256'), id), id).spki, ...extra });

async function writeCert(name: string, c: IssuedCertificate | Buffer): Promise<string> {
  return t.write(name, certToPem(Buffer.isBuffer(c) ? c : c.der));
}

describe('a device certificate issued from an openssl CSR', () => {
  let cert: IssuedCertificate;
  let path: string;
  let text: string;
  const id = 'sensor-0001.a_b';

  beforeAll(async () => {
    const { csrPem: pem } = await opensslCsr(t.dir, `/CN=${id}`);
    cert = t.ca.issue({ profile: 'device', id, spki: checkCsr(pem, id).spki });
    path = await writeCert('device.pem', cert);
    text = (await openssl(['x509', '-in', path, '-noout', '-text'])).stdout;
  });

  it.each([
    [
      'passes openssl verify -purpose sslclient against the root with the chain',
      { purpose: 'sslclient', withChain: true },
      VERIFY.okAndExit0,
    ],
    [
      'fails openssl verify -purpose sslserver (clientAuth only)',
      { purpose: 'sslserver', withChain: true },
      VERIFY.fails,
    ],
    [
      'fails openssl verify without the intermediate (servers must send the chain)',
      { withChain: false },
      VERIFY.fails,
    ],
  ] as const)('%s', async (_name, o, expected) => {
    expected(
      await opensslVerify(path, { ...o, root: t.files.root, chain: o.withChain ? t.files.chain : undefined }),
    );
  });

  it.each([
    [
      'EKU is clientAuth only',
      (x: X509Certificate, s: string) => {
        expect(x.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
        expect(s).not.toContain('TLS Web Server Authentication');
      },
    ],
    [
      'key usage is critical digitalSignature only',
      (_: X509Certificate, s: string) => {
        expect(s).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
      },
    ],
    [
      'basicConstraints is critical CA:FALSE',
      (x: X509Certificate, s: string) => {
        expect(x.ca).toBe(false);
        expect(s).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
      },
    ],
    [
      'SAN is exactly the URI urn:fleet:device:<id>',
      (x: X509Certificate) => {
        expect(x.subjectAltName).toBe(`URI:urn:fleet:device:${id}`);
      },
    ],
    [
      'subject CN is the id',
      (x: X509Certificate) => {
        expect(x.subject.split('\n')).toContain(`CN=${id}`);
      },
    ],
    [
      'serial is 128 random bits, lowercase hex in the canonical form',
      (x: X509Certificate) => {
        expect(cert.serial).toMatch(/^[0-9a-f]{32}$/);
        expect(cert.serial.startsWith('00')).toBe(false);
        expect(x.serialNumber.toLowerCase().replace(/^00/, '')).toBe(cert.serial);
      },
    ],
    [
      'SKI and AKI are both present and differ',
      (_: X509Certificate, s: string) => {
        const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(s)?.[1];
        const aki = /Authority Key Identifier:\s+(?:keyid:)?([0-9A-F:]+)/.exec(s)?.[1];
        expect(ski).toBeTruthy();
        expect(aki).toBeTruthy();
        expect(aki).not.toBe(ski);
      },
    ],
    [
      'CRL distribution point is the device CA CRL URL',
      (_: X509Certificate, s: string) => {
        expect(s).toMatch(
          /CRL Distribution Points:\s+Full Name:\s+URI:http:\/\/localhost:8080\/crl\/device\.crl/,
        );
      },
    ],
    [
      'OCSP URL is in the authority information access',
      (x: X509Certificate) => {
        expect(x.infoAccess).toContain('OCSP - URI:http://localhost:8080/ocsp');
      },
    ],
    [
      'validity is 20 years',
      (x: X509Certificate) => {
        const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000;
        expect(days).toBeGreaterThanOrEqual(20 * 365);
        expect(days).toBeLessThan(20 * 365 + 10);
      },
    ],
    [
      'it is signed by the device CA',
      (x: X509Certificate) => {
        expect(x.verify(new X509Certificate(t.ca.issuers.device.certificate).publicKey)).toBe(true);
        expect(x.checkIssued(new X509Certificate(t.ca.issuers.device.certificate))).toBe(true);
      },
    ],
  ] as const)('%s', (_name, check) => {
    check(new X509Certificate(cert.der), text);
  });

  it('AKI equals the device CA SKI', async () => {
    const caPath = t.files.deviceCa;
    const caText = (await openssl(['x509', '-in', caPath, '-noout', '-text'])).stdout;
    const caSki = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(caText)?.[1];
    const aki = /Authority Key Identifier:\s+(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
    expect(caSki).toBeTruthy();
    expect(aki).toBe(caSki);
  });

  it('serials differ between certificates for the same key', () => {
    const spki = checkCsr(nodeCsr(generateKey('P-256'))).spki;
    const serials = new Set(
      Array.from({ length: 200 }, () => t.ca.issue({ profile: 'device', id: 'x', spki }).serial),
    );
    expect(serials.size).toBe(200);
  });
});

describe('a broker certificate', () => {
  let path: string;
  beforeAll(async () => {
    const spki = checkCsr(nodeCsr(generateKey('P-256'))).spki;
    const c = t.ca.issue({
      profile: 'broker',
      id: 'broker-1',
      spki,
      dns: ['localhost', 'mqtt.example.com'],
      ips: ['127.0.0.1', '::1'],
    });
    path = await writeCert('broker.pem', c);
  });

  it.each([
    [
      'passes openssl verify -purpose sslserver with the dialled name',
      { purpose: 'sslserver', hostname: 'mqtt.example.com' },
      VERIFY.ok,
    ],
    ['passes with the loopback IP', { purpose: 'sslserver', ip: '127.0.0.1' }, VERIFY.exit0],
    [
      'fails for a name it does not carry',
      { purpose: 'sslserver', hostname: 'evil.example.com' },
      VERIFY.fails,
    ],
    ['fails -purpose sslclient (serverAuth only)', { purpose: 'sslclient' }, VERIFY.fails],
  ] as const)('%s', async (_name, o, expected) => {
    expected(await opensslVerify(path, { ...o, root: t.files.root, chain: t.files.chain }));
  });

  it('is issued by the infrastructure CA, not the device CA', async () => {
    const x = new X509Certificate(await readFile(path));
    expect(x.checkIssued(new X509Certificate(t.ca.issuers.infrastructure.certificate))).toBe(true);
  });

  it.each([
    ['no names at all', { dns: [] }],
    ['a DNS name with a space', { dns: ['bad name'] }],
    ['an IPv4 address out of range', { ips: ['300.1.1.1'] }],
  ])('refuses %s with PROFILE_INVALID', (_n, names) => {
    const spki = checkCsr(nodeCsr(generateKey('P-256'))).spki;
    expect(codeOf(() => t.ca.issue({ profile: 'broker', id: 'b', spki, ...names }))).toBe('PROFILE_INVALID');
  });
});

describe('the CRL', () => {
  let devPath: string;
  let other: IssuedCertificate;
  let crlPath: string;
  let crlPem: string;

  beforeAll(async () => {
    const dev = issueFromKey('device', 'stolen-1');
    other = issueFromKey('device', 'fine-1');
    devPath = await writeCert('stolen.pem', dev);
    const crl = buildCrl({
      issuer: t.ca.issuers.device,
      crlNumber: 7,
      entries: [
        { serial: dev.serial, revokedAt: new Date(Date.now() - 60_000), reason: 'keyCompromise' },
        { serial: 'aa', revokedAt: new Date(Date.now() - 60_000), reason: 'unspecified' },
      ],
    });
    crlPem = crl.pem;
    crlPath = await t.write('device.crl.pem', crl.pem);
    await t.write('device.crl', crl.der);
  });

  it('makes openssl verify -crl_check fail with "certificate revoked"', async () => {
    const r = await opensslVerify(devPath, { crl: crlPath, root: t.files.root, chain: t.files.chain });
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain('certificate revoked');
  });

  it('still lets a certificate that is not on it verify', async () => {
    const p = await writeCert('fine.pem', other);
    const r = await opensslVerify(p, { crl: crlPath, root: t.files.root, chain: t.files.chain });
    expect(r.stdout).toContain(': OK');
  });

  it('is PEM labelled X509 CRL', () => {
    expect(crlPem.startsWith('-----BEGIN X509 CRL-----\n')).toBe(true);
    expect(crlPem.trimEnd().endsWith('-----END X509 CRL-----')).toBe(true);
  });

  it('is read by openssl crl with its number, reason and a valid signature', async () => {
    const r = await openssl(['crl', '-in', crlPath, '-noout', '-text', '-CAfile', t.files.deviceCa]);
    expect(r.stderr + r.stdout).toContain('verify OK');
    expect(r.stdout).toMatch(/X509v3 CRL Number:\s+7/);
    expect(r.stdout).toContain('Key Compromise');
    expect(r.stdout).toContain('Next Update');
  });

  it('DER form is read by openssl crl -inform DER', async () => {
    const r = await openssl([
      'crl',
      '-inform',
      'DER',
      '-in',
      join(t.dir, 'device.crl'),
      '-noout',
      '-crlnumber',
    ]);
    expect(r.stdout.trim()).toBe('crlNumber=0x07');
  });

  it('refuses an unknown reason with CRL_INVALID', () => {
    expect(
      codeOf(() =>
        buildCrl({
          issuer: t.ca.issuers.device,
          crlNumber: 1,
          entries: [{ serial: 'ab', revokedAt: new Date(), reason: 'toString' as never }],
        }),
      ),
    ).toBe('CRL_INVALID');
  });
});

// ------------------------------------------------------------------ CSR refusals

describe('CSR checks', () => {
  let good: Buffer;
  beforeAll(() => {
    good = nodeCsr(generateKey('P-256'), 'dev-1');
  });

  /** A P-256 request, properly signed, whose subject is one CN with exactly the given encoded value. */
  function csrWithCn(value: Buffer): Buffer {
    const key = generateKey('P-256');
    const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
    const subject = der.seq(der.set(der.seq(der.oid(OID.commonName), value)));
    const info = der.seq(der.uint(0), subject, spki, der.ctx(0, Buffer.alloc(0)));
    return der.seq(info, der.seq(der.oid(OID.ecdsaWithSHA256)), der.bitString(sign('sha256', info, key)));
  }

  function flipAt(buf: Buffer, offset: number): Buffer {
    const b = Buffer.from(buf);
    b[offset]! ^= 0x01;
    return b;
  }

  const bad: [string, () => Buffer | string, string | undefined, PkiErrorCode][] = [
    ['garbage text', () => 'hello, this is not a CSR', 'dev-1', 'CSR_MALFORMED'],
    [
      'garbage bytes starting like DER',
      () => Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]),
      'dev-1',
      'CSR_MALFORMED',
    ],
    ['an empty input', () => Buffer.alloc(0), 'dev-1', 'CSR_MALFORMED'],
    ['a truncated request', () => good.subarray(0, good.length - 10), 'dev-1', 'CSR_MALFORMED'],
    [
      'trailing bytes after the request',
      () => Buffer.concat([good, Buffer.from([0])]),
      'dev-1',
      'CSR_MALFORMED',
    ],
    ['a tampered signature', () => flipAt(good, good.length - 2), 'dev-1', 'CSR_SIGNATURE_INVALID'],
    [
      'a tampered request info (CN byte flipped)',
      () => flipAt(good, good.indexOf(Buffer.from('dev-1')) + 4),
      'dev-0',
      'CSR_SIGNATURE_INVALID',
    ],
    [
      'a public key that is not a point on its curve',
      () => flipAt(good, good.indexOf(Buffer.from('dev-1')) + 40),
      'dev-1',
      'CSR_MALFORMED',
    ],
    ['an id with /', () => good, 'dev/1', 'ID_INVALID'],
    ['an id with +', () => good, 'dev+1', 'ID_INVALID'],
    ['an id with #', () => good, 'dev#1', 'ID_INVALID'],
    ['an id with a control character', () => good, 'dev\u00011', 'ID_INVALID'],
    ['an id with a space', () => good, 'dev 1', 'ID_INVALID'],
    ['an id starting with a dot', () => good, '.dev', 'ID_INVALID'],
    ['an empty id', () => good, '', 'ID_INVALID'],
    ['an id of 65 characters', () => good, 'a'.repeat(65), 'ID_INVALID'],
    ['a CN that disagrees with the id', () => good, 'dev-2', 'CSR_SUBJECT_MISMATCH'],
    // Found by the fuzzer (test/pki-asn1.test.ts): these three were accepted (the CNs read as U+FFFD, the
    // key copied into the certificate with its unused-bits count).
    [
      'a UTF8String CN that is not valid UTF-8',
      () => csrWithCn(der.tlv(der.TAG.UTF8_STRING, Buffer.from([0x64, 0xe5, 0x76]))),
      undefined,
      'CSR_SUBJECT_INVALID',
    ],
    [
      'an Ed25519 key whose BIT STRING claims unused bits',
      () => {
        const key = generateKey('Ed25519');
        const spki = Buffer.from(createPublicKey(key).export({ type: 'spki', format: 'der' }));
        spki[spki.length - 33] = 1; // the unused-bits octet before the 32-octet key
        return nodeCsr(key, 'dev-1', { spki });
      },
      'dev-1',
      'CSR_MALFORMED',
    ],
    [
      'an IA5String CN with a non-ASCII byte',
      () => csrWithCn(der.tlv(der.TAG.IA5_STRING, Buffer.from('dev-\xf1', 'latin1'))),
      undefined,
      'CSR_SUBJECT_INVALID',
    ],
    ['an oversize DER request', () => der.seq(Buffer.alloc(CSR_MAX_BYTES + 1)), 'dev-1', 'CSR_TOO_LARGE'],
    [
      'an oversize PEM request',
      () => csrPem(der.seq(Buffer.alloc(CSR_MAX_BYTES * 2))),
      'dev-1',
      'CSR_TOO_LARGE',
    ],
    ['PEM with two CSR blocks', () => csrPem(good) + csrPem(good), 'dev-1', 'CSR_MALFORMED'],
    [
      'PEM with a certificate instead of a CSR',
      () => der.toPem(good, 'CERTIFICATE'),
      'dev-1',
      'CSR_MALFORMED',
    ],
  ];

  it.each(bad)('refuses %s', (_name, input, id, code) => {
    expect(codeOf(() => checkCsr(input(), id))).toBe(code);
  });

  it('accepts an id of exactly 64 characters', () => {
    const id = `a${'b'.repeat(63)}`;
    expect(checkCsr(nodeCsr(generateKey('P-256'), id), id).commonName).toBe(id);
  });

  it.each(['P-256', 'P-384'] as const)(
    'accepts a %s key with a compressed point, and openssl verifies the certificate',
    async (type) => {
      const key = generateKey(type);
      const spki = compressedSpki(key);
      const checked = checkCsr(nodeCsr(key, 'dev-c', { spki }), 'dev-c');
      expect(checked.spki.equals(spki)).toBe(true);
      expect(checked.keyType).toBe(type);
      const p = await writeCert(
        `compressed-${type}.pem`,
        t.ca.issue({ profile: 'device', id: 'dev-c', spki: checked.spki }),
      );
      const r = await opensslVerify(p, { purpose: 'sslclient', root: t.files.root, chain: t.files.chain });
      expect(r.stdout).toContain(': OK');
    },
  );

  it('refuses a CSR whose key is not the one that signed it', () => {
    const csr = nodeCsr(generateKey('P-256'), 'dev-1', { spki: compressedSpki(generateKey('P-256')) });
    expect(codeOf(() => checkCsr(csr, 'dev-1'))).toBe('CSR_SIGNATURE_INVALID');
  });

  it('accepts a CSR without a CN (the certificate CN comes from the id)', () => {
    expect(checkCsr(nodeCsr(generateKey('P-256')), 'dev-1').commonName).toBeUndefined();
  });

  it('accepts PEM, DER and bare base64 (EST) forms alike', () => {
    const a = checkCsr(good, 'dev-1');
    expect(checkCsr(csrPem(good), 'dev-1').spkiSha256).toBe(a.spkiSha256);
    expect(checkCsr(good.toString('base64'), 'dev-1').spkiSha256).toBe(a.spkiSha256);
  });

  const opensslKeys: [string, OpensslKeySpec, PkiErrorCode | { keyType: string; keyBits: number }][] = [
    ['P-256', { ec: 'P-256' }, { keyType: 'P-256', keyBits: 256 }],
    ['P-384', { ec: 'P-384' }, { keyType: 'P-384', keyBits: 384 }],
    ['Ed25519', { ed25519: true }, { keyType: 'Ed25519', keyBits: 256 }],
    ['RSA 2048', { rsa: 2048 }, { keyType: 'RSA', keyBits: 2048 }],
    ['RSA 1024', { rsa: 1024 }, 'CSR_KEY_TOO_WEAK'],
    ['secp256k1', { ec: 'secp256k1' }, 'CSR_CURVE_UNSUPPORTED'],
    ['P-521', { ec: 'P-521' }, 'CSR_CURVE_UNSUPPORTED'],
    ['Ed448', { ed448: true }, 'CSR_KEY_UNSUPPORTED'],
  ];

  it.each(opensslKeys)('an openssl %s CSR: %j', async (_name, key, want) => {
    const { csrPem: pem } = await opensslCsr(t.dir, '/CN=dev-k', key);
    if (typeof want === 'string') {
      expect(codeOf(() => checkCsr(pem, 'dev-k'))).toBe(want);
    } else {
      expect(checkCsr(pem, 'dev-k')).toMatchObject(want);
    }
  });

  const nodeKeys: [NodeKeyType, PkiErrorCode | 'ok'][] = [
    ['P-256', 'ok'],
    ['P-384', 'ok'],
    ['Ed25519', 'ok'],
    ['RSA-2048', 'ok'],
    ['RSA-1024', 'CSR_KEY_TOO_WEAK'],
    ['secp256k1', 'CSR_CURVE_UNSUPPORTED'],
    ['P-521', 'CSR_CURVE_UNSUPPORTED'],
  ];

  it.each(nodeKeys)('a node:crypto %s CSR: %s', (type, want) => {
    const csr = nodeCsr(generateKey(type), 'dev-n');
    expect(codeOf(() => checkCsr(csr, 'dev-n')) ?? 'ok').toBe(want);
  });

  it('an accepted Ed25519 and RSA key are issued into certificates that verify', async () => {
    for (const key of [{ ed25519: true }, { rsa: 2048 }] as OpensslKeySpec[]) {
      const { csrPem: pem } = await opensslCsr(t.dir, '/CN=dev-x', key);
      const c = t.ca.issue({ profile: 'device', id: 'dev-x', spki: checkCsr(pem, 'dev-x').spki });
      const p = await writeCert('x.pem', c);
      const r = await opensslVerify(p, { purpose: 'sslclient', root: t.files.root, chain: t.files.chain });
      expect(r.code).toBe(0);
    }
  });
});

// ------------------------------------------------------------------ identity

describe('identityFromCertificate', () => {
  it.each(['device', 'service', 'station', 'operator'] as const)('reads a %s identity', (kind) => {
    const c = issueFromKey(kind, `${kind}-7`);
    const idn = identityFromCertificate(c.der);
    expect(idn).toMatchObject({ kind, id: `${kind}-7`, serial: c.serial, fingerprint: c.fingerprint });
    expect(idn.notAfter.getTime()).toBe(c.notAfter.getTime());
    expect(idn.notBefore.getTime()).toBe(c.notBefore.getTime());
    expect(idn.issuer).toBe(kind === 'device' ? 'Fleet Test Device CA' : 'Fleet Test Infrastructure CA');
  });

  it('returns a frozen value', () => {
    const idn = identityFromCertificate(issueFromKey('device', 'd-frozen').der);
    expect(Object.isFrozen(idn)).toBe(true);
    expect(() => {
      (idn as { id: string }).id = 'other';
    }).toThrow();
  });

  it('gives the serial as 32 lowercase hex characters equal to the issued serial', () => {
    for (let i = 0; i < 50; i++) {
      const c = issueFromKey('device', `d-${i}`);
      const s = identityFromCertificate(c.der).serial;
      expect(s).toMatch(/^[0-9a-f]{32}$/);
      expect(s).toBe(c.serial);
    }
  });

  it('accepts PEM and an X509Certificate as well as DER', () => {
    const c = issueFromKey('device', 'd-forms');
    expect(identityFromCertificate(certToPem(c.der)).id).toBe('d-forms');
    expect(identityFromCertificate(new X509Certificate(c.der)).id).toBe('d-forms');
  });

  const day = 86_400_000;
  const refusals: [string, () => Buffer | string, object, PkiErrorCode][] = [
    ['a root CA certificate', () => t.ca.root, {}, 'CERT_IS_CA'],
    ['an issuing CA certificate', () => t.ca.issuers.device.certificate, {}, 'CERT_IS_CA'],
    [
      'a serverAuth-only broker certificate',
      () =>
        t.ca.issue({
          profile: 'broker',
          id: 'b1',
          spki: checkCsr(nodeCsr(generateKey('P-256'))).spki,
          dns: ['localhost'],
        }).der,
      {},
      'CERT_NOT_FLEET_IDENTITY',
    ],
    [
      'an expired certificate',
      () =>
        issueFromKey('device', 'old', {
          notBefore: new Date(Date.now() - 400 * day),
          notAfter: new Date(Date.now() - day),
        }).der,
      {},
      'CERT_EXPIRED',
    ],
    [
      'a not-yet-valid certificate',
      () =>
        issueFromKey('device', 'future', {
          notBefore: new Date(Date.now() + day),
          notAfter: new Date(Date.now() + 400 * day),
        }).der,
      {},
      'CERT_NOT_YET_VALID',
    ],
    [
      'a device where only operators are accepted',
      () => issueFromKey('device', 'd-op').der,
      { kinds: ['operator'] },
      'CERT_WRONG_USAGE',
    ],
    ['garbage', () => Buffer.from('not a certificate'), {}, 'CERT_MALFORMED'],
  ];

  it.each(refusals)('refuses %s', (_name, input, opts, code) => {
    expect(codeOf(() => identityFromCertificate(input(), opts))).toBe(code);
  });

  it('skips the time check when told the TLS layer did it', () => {
    const c = issueFromKey('device', 'old2', {
      notBefore: new Date(Date.now() - 400 * day),
      notAfter: new Date(Date.now() - day),
    });
    expect(identityFromCertificate(c.der, { now: false }).id).toBe('old2');
  });

  it('refuses an id that breaks the id rules at issue time', () => {
    const spki = checkCsr(nodeCsr(generateKey('P-256'))).spki;
    for (const id of ['a/b', 'a+b', 'a#b', 'a\nb', 'x'.repeat(65)]) {
      expect(codeOf(() => t.ca.issue({ profile: 'device', id, spki }))).toBe('ID_INVALID');
    }
  });

  it('refuses notAfter before notBefore at issue time', () => {
    expect(
      codeOf(() =>
        issueFromKey('device', 'neg', { notBefore: new Date(), notAfter: new Date(Date.now() - day) }),
      ),
    ).toBe('PROFILE_INVALID');
  });

  it('refuses a profile the CA does not issue', () => {
    const spki = checkCsr(nodeCsr(generateKey('P-256'))).spki;
    expect(codeOf(() => t.ca.issuers.device.issue({ profile: 'operator', id: 'op', spki }))).toBe(
      'PROFILE_INVALID',
    );
  });
});

// ------------------------------------------------------------------ key store and CA lifecycle

describe('the key store and CA lifecycle', () => {
  it('keeps every key file at mode 0600', async () => {
    const files = (await readdir(t.keyDir)).filter((f) => f.endsWith('.key.pem'));
    expect(files.sort()).toEqual(['device-ca.key.pem', 'infrastructure-ca.key.pem', 'root.key.pem']);
    for (const f of files) expect((await stat(join(t.keyDir, f))).mode & 0o777).toBe(0o600);
  });

  it('encrypts every key (PEM says ENCRYPTED PRIVATE KEY)', async () => {
    for (const f of await readdir(t.keyDir)) {
      const pem = await readFile(join(t.keyDir, f), 'utf8');
      expect(pem.startsWith('-----BEGIN ENCRYPTED PRIVATE KEY-----')).toBe(true);
      expect(pem).not.toContain('BEGIN PRIVATE KEY');
      expect(pem).not.toContain('BEGIN EC PRIVATE KEY');
    }
  });

  it('openssl cannot read a key without the passphrase and can with it', async () => {
    const key = join(t.keyDir, 'device-ca.key.pem');
    expect(
      (await openssl(['pkey', '-in', key, '-noout', '-passin', 'pass:wrong-passphrase-123'])).code,
    ).not.toBe(0);
    expect((await openssl(['pkey', '-in', key, '-noout', '-passin', `pass:${t.passphrase}`])).code).toBe(0);
  });

  it('refuses a wrong passphrase with KEY_DECRYPT_FAILED', async () => {
    const wrong = new FileKeyStore(t.keyDir, 'x'.repeat(32));
    expect(await codeOfAsync(wrong.load('device-ca'))).toBe('KEY_DECRYPT_FAILED');
    expect(await codeOfAsync(loadCa(t.caDir, wrong, t.config))).toBe('KEY_DECRYPT_FAILED');
  });

  it('refuses a passphrase under 16 characters with PASSPHRASE_WEAK', () => {
    expect(codeOf(() => new FileKeyStore(t.keyDir, 'short'))).toBe('PASSPHRASE_WEAK');
  });

  it('refuses a missing key with KEY_MISSING and a bad key name with KEY_NAME_INVALID', async () => {
    const ks = new FileKeyStore(t.keyDir, t.passphrase);
    expect(await codeOfAsync(ks.load('nope'))).toBe('KEY_MISSING');
    expect(await codeOfAsync(ks.load('../root'))).toBe('KEY_NAME_INVALID');
  });

  it('never overwrites: createCa twice is CA_EXISTS, and the key files are unchanged', async () => {
    const before = await readFile(join(t.keyDir, 'root.key.pem'), 'utf8');
    expect(await codeOfAsync(createCa(t.caDir, new FileKeyStore(t.keyDir, t.passphrase), t.config))).toBe(
      'CA_EXISTS',
    );
    expect(await readFile(join(t.keyDir, 'root.key.pem'), 'utf8')).toBe(before);
  });

  it('refuses createCa over leftover keys with CA_EXISTS', async () => {
    const other = join(t.dir, 'other-ca');
    expect(await codeOfAsync(createCa(other, new FileKeyStore(t.keyDir, t.passphrase), t.config))).toBe(
      'CA_EXISTS',
    );
  });

  it('loadCa on an empty directory is CA_MISSING', async () => {
    expect(
      await codeOfAsync(loadCa(join(t.dir, 'empty'), new FileKeyStore(t.keyDir, t.passphrase), t.config)),
    ).toBe('CA_MISSING');
  });

  it('loadCa round-trips and issues certificates that verify', async () => {
    const loaded = await loadCa(t.caDir, new FileKeyStore(t.keyDir, t.passphrase), t.config);
    expect(loaded.root.equals(t.ca.root)).toBe(true);
    expect(loaded.issuers.device.certificate.equals(t.ca.issuers.device.certificate)).toBe(true);
    expect(loaded.issuers.infrastructure.certificate.equals(t.ca.issuers.infrastructure.certificate)).toBe(
      true,
    );
    expect(loaded.rootSigner?.spki.equals(t.ca.rootSigner!.spki)).toBe(true);
    const c = loaded.issue({
      profile: 'device',
      id: 'reloaded',
      spki: checkCsr(nodeCsr(generateKey('P-256'))).spki,
    });
    const p = await writeCert('reloaded.pem', c);
    const r = await opensslVerify(p, { purpose: 'sslclient', root: t.files.root, chain: t.files.chain });
    expect(r.stdout).toContain(': OK');
  });

  it('openCa is idempotent: the second open loads what the first created', async () => {
    const dir = join(t.dir, 'open');
    const ks = new FileKeyStore(join(dir, 'keys'), t.passphrase);
    const first = await openCa(join(dir, 'ca'), ks, t.config);
    const second = await openCa(join(dir, 'ca'), ks, t.config);
    expect([first.created, second.created]).toEqual([true, false]);
    expect(second.ca.root.equals(first.ca.root)).toBe(true);
  });

  it('CA certificates: root self-signed, issuing CAs pathLen 0 with keyCertSign and cRLSign', async () => {
    const r = await openssl(['x509', '-in', t.files.deviceCa, '-noout', '-text']);
    expect(r.stdout).toMatch(/CA:TRUE, pathlen:0/);
    expect(r.stdout).toMatch(/Certificate Sign, CRL Sign/);
    expect(r.stdout).toContain('O = Fleet Test');
    const v = await opensslVerify([t.files.deviceCa, t.files.infrastructureCa], { root: t.files.root });
    expect(v.code).toBe(0);
  });
});

// ------------------------------------------------------------------ P-384

describe('a P-384 CA hierarchy', () => {
  let p384: TestCa;
  beforeAll(async () => {
    p384 = await makeTestCa({ algorithm: 'P-384' });
  });
  afterAll(async () => {
    await p384?.cleanup();
  });

  it('signs with ecdsa-with-SHA384 on a P-384 key', async () => {
    const r = await openssl(['x509', '-in', p384.files.root, '-noout', '-text']);
    expect(r.stdout).toContain('ecdsa-with-SHA384');
    expect(r.stdout).toContain('NIST CURVE: P-384');
  });

  it.each([
    ['a P-256 device key', 'P-256' as NodeKeyType],
    ['a P-384 device key', 'P-384' as NodeKeyType],
  ])('issues a device certificate for %s that passes openssl verify -purpose sslclient', async (_n, type) => {
    const c = p384.ca.issue({
      profile: 'device',
      id: 'dev-384',
      spki: checkCsr(nodeCsr(generateKey(type), 'dev-384'), 'dev-384').spki,
    });
    const p = await p384.write(`dev-${type}.pem`, certToPem(c.der));
    const r = await opensslVerify(p, {
      purpose: 'sslclient',
      root: p384.files.root,
      chain: p384.files.chain,
    });
    expect(r.stdout).toContain(': OK');
    expect(identityFromCertificate(c.der).id).toBe('dev-384');
  });

  it('revokes through a CRL that openssl honours', async () => {
    const c = p384.ca.issue({
      profile: 'device',
      id: 'dev-r',
      spki: checkCsr(nodeCsr(generateKey('P-256'))).spki,
    });
    const p = await p384.write('dev-r.pem', certToPem(c.der));
    const crl = buildCrl({
      issuer: p384.ca.issuers.device,
      crlNumber: 1,
      entries: [{ serial: c.serial, revokedAt: new Date(), reason: 'superseded' }],
    });
    const crlPath = await p384.write('crl.pem', crl.pem);
    const r = await opensslVerify(p, { crl: crlPath, root: p384.files.root, chain: p384.files.chain });
    expect(r.stdout + r.stderr).toContain('certificate revoked');
  });

  it('reloads with loadCa', async () => {
    const loaded = await loadCa(p384.caDir, new FileKeyStore(p384.keyDir, p384.passphrase), p384.config);
    expect(loaded.issuers.device.signer.algorithm).toBe('P-384');
  });
});
