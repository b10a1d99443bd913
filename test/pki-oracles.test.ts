/**
 * Independent oracles: every kind of object Fleet writes (each certificate profile and the CAs, CRLs,
 * OCSP responses, PKCS#7 certs-only) must parse and verify with @peculiar/x509 (and its @peculiar/asn1-*
 * schemas), with PKI.js and with the openssl CLI. Three implementations that share no code with Fleet's
 * DER writer, each checking the signature, the chain or the status, not only that the bytes parse.
 */
import { createPublicKey, verify, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BasicOCSPResponse, OCSPResponse, OCSPResponseStatus } from '@peculiar/asn1-ocsp';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as px509 from '@peculiar/x509';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCrl, type RevokedEntry } from '../pki/crl.ts';
import { checkCsr } from '../pki/csr.ts';
import { buildOcspResponse, certIdFor, type OcspCertStatus, parseOcspRequest } from '../pki/ocsp.ts';
import { OID } from '../pki/oids.ts';
import { certsOnly } from '../pki/pkcs7.ts';
import { certToPem, type IssuedCertificate, type ProfileName } from '../pki/x509.ts';
import { generateKey, makeTestCa, nodeCsr, openssl, type TestCa } from './helpers/pki.ts';

// Node's webcrypto is the Web Crypto both libraries expect (the DOM's `Crypto` type is not in this lib).
type WebCrypto = Parameters<typeof px509.cryptoProvider.set>[0];
px509.cryptoProvider.set(webcrypto as unknown as WebCrypto);
pkijs.setEngine('node', new pkijs.CryptoEngine({ name: 'node', crypto: webcrypto as unknown as WebCrypto }));

const ab = (b: Buffer): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
const hexOf = (b: ArrayBuffer | Uint8Array) => Buffer.from(b as ArrayBuffer).toString('hex');
const pkijsCert = (d: Buffer) => pkijs.Certificate.fromBER(ab(d));

let t: TestCa;
const issued = new Map<ProfileName, IssuedCertificate>();
const paths = new Map<string, string>();
let n = 0;
const write = async (name: string, data: Buffer | string) => t.write(`${n++}-${name}`, data);

const PROFILES: readonly ProfileName[] = ['device', 'service', 'station', 'operator', 'broker'];

beforeAll(async () => {
  t = await makeTestCa();
  for (const profile of PROFILES) {
    const id = `oracle-${profile}`;
    const spki = checkCsr(nodeCsr(generateKey('P-256'), id), id).spki;
    const c = t.ca.issue(
      profile === 'broker'
        ? { profile, id: 'broker.fleet.test', spki, dns: ['broker.fleet.test'], ips: ['127.0.0.1'] }
        : { profile, id, spki },
    );
    issued.set(profile, c);
    paths.set(profile, await write(`${profile}.pem`, certToPem(c.der)));
  }
});
afterAll(async () => {
  await t?.cleanup();
});

// ------------------------------------------------------------------ certificates

interface CertCase {
  der: () => Buffer;
  /** The certificate that signed it (itself for the root). */
  issuer: () => Buffer;
  /** The path to the root, leaf first, as a verifier should build it. */
  chainLength: number;
  /** openssl verify -purpose, for leaves. */
  purpose?: 'sslclient' | 'sslserver';
  /** The identity a leaf carries in its SAN. */
  san?: string;
}

const leaf = (profile: ProfileName): CertCase => ({
  der: () => issued.get(profile)!.der,
  issuer: () => t.ca.issuers[profile === 'device' ? 'device' : 'infrastructure'].certificate,
  chainLength: 3,
  purpose: profile === 'broker' ? 'sslserver' : 'sslclient',
  san: profile === 'broker' ? 'broker.fleet.test' : `urn:fleet:${profile}:oracle-${profile}`,
});

const certCases: [string, CertCase][] = [
  ['the root CA', { der: () => t.ca.root, issuer: () => t.ca.root, chainLength: 1 }],
  [
    'the device-issuing CA',
    { der: () => t.ca.issuers.device.certificate, issuer: () => t.ca.root, chainLength: 2 },
  ],
  [
    'the infrastructure CA',
    { der: () => t.ca.issuers.infrastructure.certificate, issuer: () => t.ca.root, chainLength: 2 },
  ],
  ...PROFILES.map((p): [string, CertCase] => [`a ${p} certificate`, leaf(p)]),
];
const allCas = () => [t.ca.root, t.ca.issuers.device.certificate, t.ca.issuers.infrastructure.certificate];

describe.each(certCases)('%s', (_name, c) => {
  it('parses and verifies with @peculiar/x509: signature, chain to the root, SAN', async () => {
    const cert = new px509.X509Certificate(ab(c.der()));
    const issuer = new px509.X509Certificate(ab(c.issuer()));
    expect(await cert.verify({ publicKey: issuer, signatureOnly: true })).toBe(true);
    const chain = await new px509.X509ChainBuilder({
      certificates: allCas().map((d) => new px509.X509Certificate(ab(d))),
    }).build(cert);
    expect(chain).toHaveLength(c.chainLength);
    expect(Buffer.from(chain[chain.length - 1]!.rawData).equals(t.ca.root)).toBe(true);
    if (c.san) {
      const san = cert.getExtension(px509.SubjectAlternativeNameExtension);
      expect(san?.names.items.map((i) => i.value)).toContain(c.san);
    }
  });

  it('parses and verifies with PKI.js: signature and chain validation to the root', async () => {
    const cert = pkijsCert(c.der());
    expect(await cert.verify(pkijsCert(c.issuer()))).toBe(true);
    const [root, ...intermediates] = allCas();
    const engine = new pkijs.CertificateChainValidationEngine({
      trustedCerts: [pkijsCert(root!)],
      certs: [...intermediates.map(pkijsCert), cert],
    });
    const r = await engine.verify();
    expect(r.resultMessage).toBe('');
    expect(r.result).toBe(true);
    const path = r.certificatePath ?? [];
    expect(hexOf(path[path.length - 1]!.toSchema().toBER())).toBe(t.ca.root.toString('hex'));
    // PKI.js lists a self-signed root twice (as the certificate and as the anchor).
    if (c.chainLength > 1) expect(path).toHaveLength(c.chainLength);
  });

  it('verifies with openssl (with the purpose its profile serves)', async () => {
    const p = await write('cert.pem', certToPem(c.der()));
    const purpose = c.purpose ? ['-purpose', c.purpose] : [];
    const r = await openssl(['verify', ...purpose, '-CAfile', t.files.root, '-untrusted', t.files.chain, p]);
    expect(r.stdout + r.stderr).toContain(': OK');
  });
});

// ------------------------------------------------------------------ CRLs

interface CrlCase {
  entries: () => RevokedEntry[];
  ca: 'device' | 'infrastructure';
}

const at = new Date(Date.UTC(2026, 5, 1, 12, 0, 0));
const crlCases: [string, CrlCase][] = [
  ['an empty CRL', { entries: () => [], ca: 'device' }],
  [
    'a CRL with entries and reasons',
    {
      entries: () => [
        { serial: issued.get('device')!.serial, revokedAt: at, reason: 'keyCompromise' },
        { serial: '0badc0de', revokedAt: at, reason: 'unspecified' },
        { serial: '00ff01', revokedAt: at, reason: 'superseded' },
      ],
      ca: 'device',
    },
  ],
  [
    'a CRL with certificateHold (suspension)',
    {
      entries: () => [{ serial: issued.get('station')!.serial, revokedAt: at, reason: 'certificateHold' }],
      ca: 'infrastructure',
    },
  ],
];

/** RFC 5280 §5.3.1 reason codes, as the oracles report them. */
const REASON_CODE: Record<string, number | undefined> = {
  unspecified: undefined,
  keyCompromise: 1,
  superseded: 4,
  certificateHold: 6,
};
const canon = (hex: string) => hex.toLowerCase().replace(/^(00)+(?=.)/, '');

describe.each(crlCases)('%s', (_name, c) => {
  const build = () => buildCrl({ issuer: t.ca.issuers[c.ca], entries: c.entries(), crlNumber: 7 });
  const expected = () => c.entries().map((e) => ({ serial: canon(e.serial), reason: REASON_CODE[e.reason] }));

  it('parses and verifies with @peculiar/x509: signature, entries, reasons', async () => {
    const crl = new px509.X509Crl(ab(build().der));
    const issuer = new px509.X509Certificate(ab(t.ca.issuers[c.ca].certificate));
    expect(await crl.verify({ publicKey: issuer })).toBe(true);
    expect(crl.entries.map((e) => ({ serial: canon(e.serialNumber), reason: e.reason }))).toEqual(expected());
  });

  it('parses and verifies with PKI.js: signature, entries, CRL number', async () => {
    const crl = pkijs.CertificateRevocationList.fromBER(ab(build().der));
    expect(await crl.verify({ issuerCertificate: pkijsCert(t.ca.issuers[c.ca].certificate) })).toBe(true);
    const got = (crl.revokedCertificates ?? []).map((r) => ({
      serial: canon(hexOf(r.userCertificate.valueBlock.valueHexView)),
      reason: r.crlEntryExtensions?.extensions.find((x) => x.extnID === OID.cRLReason)?.parsedValue
        ?.valueBlock.valueDec as number | undefined,
    }));
    expect(got).toEqual(expected());
    const number = crl.crlExtensions?.extensions.find((x) => x.extnID === OID.cRLNumber);
    expect(number?.parsedValue?.valueBlock.valueDec).toBe(7);
  });

  it('verifies with openssl crl against its CA', async () => {
    const p = await write('crl.pem', build().pem);
    const caFile = c.ca === 'device' ? t.files.deviceCa : t.files.infrastructureCa;
    const r = await openssl(['crl', '-in', p, '-noout', '-text', '-CAfile', caFile]);
    expect(r.stderr).toContain('verify OK');
    expect(r.stdout).toContain('CRL Number:');
    for (const e of expected()) expect(r.stdout.toLowerCase()).toContain(`serial number: ${e.serial}`);
  });
});

// ------------------------------------------------------------------ OCSP responses

interface OcspCase {
  status: OcspCertStatus;
  /** Expected status code: 0 good, 1 revoked, 2 unknown (RFC 6960 §4.2.1 CertStatus). */
  code: 0 | 1 | 2;
  opensslWord: 'good' | 'revoked' | 'unknown';
  /** Answer a real openssl request with its nonce echoed. */
  nonce?: boolean;
  /** Include the issuing CA's certificate in `certs`. */
  includeIssuer?: boolean;
}

const ocspCases: [string, OcspCase][] = [
  ['a good answer', { status: 'good', code: 0, opensslWord: 'good' }],
  [
    'a revoked answer with its reason',
    { status: { revoked: { at, reason: 'keyCompromise' } }, code: 1, opensslWord: 'revoked' },
  ],
  ['an unknown answer', { status: 'unknown', code: 2, opensslWord: 'unknown' }],
  ['a good answer echoing the nonce', { status: 'good', code: 0, opensslWord: 'good', nonce: true }],
  [
    'a good answer carrying the CA certificate',
    { status: 'good', code: 0, opensslWord: 'good', includeIssuer: true },
  ],
];

describe.each(ocspCases)('%s', (_name, c) => {
  let resp: Buffer;
  let reqPath: string | undefined;
  let nonce: Buffer | undefined;

  beforeAll(async () => {
    const issuer = t.ca.issuers.device;
    let certId = certIdFor(issuer, issued.get('device')!.serial);
    if (c.nonce) {
      reqPath = join(t.dir, `ocsp-req-${n++}.der`);
      const r = await openssl([
        'ocsp',
        '-issuer',
        t.files.deviceCa,
        '-cert',
        paths.get('device')!,
        '-reqout',
        reqPath,
      ]);
      expect(r.code, r.stderr).toBe(0);
      const parsed = parseOcspRequest(await readFile(reqPath));
      certId = parsed.certIds[0]!;
      nonce = parsed.nonce;
      expect(nonce).toBeDefined();
    }
    const now = new Date();
    resp = buildOcspResponse({
      issuer,
      responses: [
        { certId, status: c.status, thisUpdate: now, nextUpdate: new Date(now.getTime() + 3_600_000) },
      ],
      nonce,
      producedAt: now,
      includeIssuerCertificate: c.includeIssuer,
    });
  });

  it('parses with @peculiar/asn1-ocsp and its signature verifies with the CA key from @peculiar/x509', () => {
    const top = AsnConvert.parse(resp, OCSPResponse);
    expect(top.responseStatus).toBe(OCSPResponseStatus.successful);
    expect(top.responseBytes?.responseType).toBe(OID.ocspBasic);
    const basic = AsnConvert.parse(top.responseBytes!.response.buffer, BasicOCSPResponse);
    const ca = new px509.X509Certificate(ab(t.ca.issuers.device.certificate));
    const key = createPublicKey({ key: Buffer.from(ca.publicKey.rawData), format: 'der', type: 'spki' });
    const tbs = Buffer.from(basic.tbsResponseDataRaw!);
    expect(verify('sha256', tbs, key, Buffer.from(basic.signature))).toBe(true);
    const [single] = basic.tbsResponseData.responses;
    expect(canon(hexOf(single!.certID.serialNumber))).toBe(issued.get('device')!.serial);
    const st = single!.certStatus;
    expect(st.good !== undefined ? 0 : st.revoked ? 1 : st.unknown !== undefined ? 2 : -1).toBe(c.code);
    const nonceExt = basic.tbsResponseData.responseExtensions?.find((e) => e.extnID === OID.ocspNonce);
    if (nonce) expect(Buffer.from(nonceExt!.extnValue.buffer).subarray(2).equals(nonce)).toBe(true);
    else expect(nonceExt).toBeUndefined();
  });

  it('parses and verifies with PKI.js: responder signature and the certificate status', async () => {
    const top = pkijs.OCSPResponse.fromBER(ab(resp));
    expect(top.responseStatus.valueBlock.valueDec).toBe(0);
    const basic = pkijs.BasicOCSPResponse.fromBER(top.responseBytes!.response.getValue());
    const ca = pkijsCert(t.ca.issuers.device.certificate);
    // The CA signs its own responses and leaves its certificate out (RFC 6960 §4.2.2.2: the client holds
    // it already). PKI.js looks for the signer only among the response's certificates, so the client's
    // copy goes there; the signature does not cover that field, and the ResponderID must still match.
    if (!c.includeIssuer) {
      expect(basic.certs ?? []).toHaveLength(0);
      basic.certs = [ca];
    }
    expect(await basic.verify({ trustedCerts: [pkijsCert(t.ca.root)], issuerCerts: [ca] })).toBe(true);
    const status = await basic.getCertificateStatus(pkijsCert(issued.get('device')!.der), ca);
    expect(status).toMatchObject({ isForCertificate: true, status: c.code });
  });

  it('verifies with openssl ocsp (and openssl checks the nonce against its request)', async () => {
    const p = await write('resp.der', resp);
    // With -reqin, openssl checks the answer against that request (and its nonce); -cert would make a
    // new request instead, and it takes the -issuer given before it.
    const req = reqPath ? ['-reqin', reqPath] : ['-no_nonce', '-cert', paths.get('device')!];
    const r = await openssl([
      'ocsp',
      '-respin',
      p,
      '-issuer',
      t.files.deviceCa,
      ...req,
      '-CAfile',
      t.files.root,
    ]);
    expect(r.stderr).toContain('Response verify OK');
    expect(r.stderr).not.toContain('Nonce Verify error');
    if (!reqPath) expect(r.stdout).toContain(`: ${c.opensslWord}`);
  });
});

// ------------------------------------------------------------------ PKCS#7 certs-only

const pkcs7Cases: [string, () => Buffer[]][] = [
  [
    'an EST enrollment answer (leaf, then its CA)',
    () => [issued.get('device')!.der, t.ca.issuers.device.certificate],
  ],
  ['an EST cacerts answer (both issuing CAs and the root)', () => allCas().slice(1).concat([t.ca.root])],
];

describe.each(pkcs7Cases)('PKCS#7 certs-only: %s', (_name, certs) => {
  it('parses with @peculiar/x509, in order, and each certificate chains to the root', async () => {
    const got = new px509.X509Certificates(ab(certsOnly(certs())));
    expect(got.map((c) => Buffer.from(c.rawData).toString('hex'))).toEqual(
      certs().map((c) => c.toString('hex')),
    );
    const builder = new px509.X509ChainBuilder({
      certificates: [...got, new px509.X509Certificate(ab(t.ca.root))],
    });
    for (const c of got) {
      const chain = await builder.build(c);
      expect(Buffer.from(chain[chain.length - 1]!.rawData).equals(t.ca.root)).toBe(true);
    }
  });

  it('parses with PKI.js as SignedData with no signers, in order', () => {
    const ci = pkijs.ContentInfo.fromBER(ab(certsOnly(certs())));
    expect(ci.contentType).toBe(OID.pkcs7SignedData);
    const sd = new pkijs.SignedData({ schema: ci.content });
    expect(sd.signerInfos).toHaveLength(0);
    const got = (sd.certificates ?? []).map((c) => hexOf((c as pkijs.Certificate).toSchema().toBER()));
    expect(got).toEqual(certs().map((c) => c.toString('hex')));
  });

  it('is printed by openssl pkcs7 -print_certs, in order', async () => {
    const p = await write('certs.p7b', certsOnly(certs()));
    const r = await openssl(['pkcs7', '-inform', 'DER', '-in', p, '-print_certs']);
    expect(r.code, r.stderr).toBe(0);
    const pems = r.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/g) ?? [];
    expect(pems).toEqual(certs().map((c) => certToPem(c)));
  });
});
