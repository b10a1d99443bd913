/**
 * The typed DER readers (pki/asn1/) for what comes from outside: strict by construction, agreeing with
 * @peculiar/asn1-csr and @peculiar/asn1-ocsp on every value they read, and never crashing on hostile
 * bytes. The fuzz part is a bounded, fixed-seed loop here; a longer run is the same test with
 * FLEET_FUZZ_COUNT (mutants per seed input) and FLEET_FUZZ_SEED set, e.g.
 *   FLEET_FUZZ_COUNT=20000 FLEET_FUZZ_SEED=7 npx vitest run test/pki-asn1.test.ts
 */
import { type KeyObject, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CertificationRequest as PeculiarCsr } from '@peculiar/asn1-csr';
import { OCSPRequest as PeculiarOcspRequest } from '@peculiar/asn1-ocsp';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as pkcs10 from '../pki/asn1/rfc2986.ts';
import * as asn1 from '../pki/asn1/schema.ts';
import { checkCsr } from '../pki/csr.ts';
import * as der from '../pki/der.ts';
import { FleetError, PKI_ERRORS } from '../pki/errors.ts';
import { answerOcspRequest, certIdFor, OCSP_MAX_CERT_IDS, parseOcspRequest } from '../pki/ocsp.ts';
import { OID } from '../pki/oids.ts';
import { certToPem } from '../pki/x509.ts';
import { generateKey, makeTestCa, nodeCsr, openssl, opensslCsr, type TestCa } from './helpers/pki.ts';

const ENV_COUNT = Number(process.env['FLEET_FUZZ_COUNT'] ?? 0);
const FUZZ_SEED = Number(process.env['FLEET_FUZZ_SEED'] ?? 20261202);

let t: TestCa;
const csrs: { name: string; der: Buffer }[] = [];
/** The node:crypto requests' keys, to sign mutated request infos (so mutants reach past the signature). */
const keys: { name: string; key: KeyObject; seed: Buffer }[] = [];
const ocspRequests: { name: string; der: Buffer }[] = [];
let devSerial: string;

beforeAll(async () => {
  t = await makeTestCa();
  for (const type of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
    const key = generateKey(type);
    const d = nodeCsr(key, 'dev-asn1');
    csrs.push({ name: `node:crypto ${type}`, der: d });
    keys.push({ name: type, key, seed: d });
  }
  const fromOpenssl = async (name: string, subject: string, extra: string[] = []) => {
    const { csrPath, keyPath } = await opensslCsr(t.dir, subject);
    const outPath = `${csrPath}.der`;
    const args = extra.length
      ? ['req', '-new', '-key', keyPath, '-subj', subject, ...extra]
      : ['req', '-in', csrPath];
    const r = await openssl([...args, '-outform', 'DER', '-out', outPath]);
    expect(r.code, r.stderr).toBe(0);
    csrs.push({ name, der: await readFile(outPath) });
  };
  await fromOpenssl('openssl, O/OU/CN subject', '/O=Acme Devices/OU=Line 1/CN=dev-asn1');
  await fromOpenssl('openssl, with an extensionRequest attribute', '/CN=dev-asn1', [
    '-addext',
    'subjectAltName=URI:urn:fleet:device:dev-asn1',
  ]);

  const dev = t.ca.issue({ profile: 'device', id: 'dev-asn1', spki: checkCsr(csrs[0]!.der).spki });
  devSerial = dev.serial;
  const devPath = await t.write('dev-asn1.pem', certToPem(dev.der));
  let k = 0;
  const req = async (name: string, args: string[]) => {
    const p = join(t.dir, `asn1-req-${k++}.der`);
    const r = await openssl(['ocsp', '-issuer', t.files.deviceCa, ...args, '-reqout', p]);
    expect(r.code, r.stderr).toBe(0);
    ocspRequests.push({ name, der: await readFile(p) });
  };
  await req('openssl, SHA-1, nonce', ['-cert', devPath]);
  await req('openssl, SHA-256, no nonce', ['-sha256', '-cert', devPath, '-no_nonce']);
  await req('openssl, two certificates', ['-cert', devPath, '-cert', devPath]);
});
afterAll(async () => {
  await t?.cleanup();
});

// ------------------------------------------------------------------ the reader's own rules

describe('the typed DER reader refuses what DER or the schema does not allow', () => {
  const Pair = asn1.sequence('Pair', { a: asn1.smallInteger(), b: asn1.optional(asn1.octetString()) });
  const List = asn1.sequenceOf('List', asn1.smallInteger(), { min: 1, max: 2 });
  const Wrapped = asn1.explicit(0, asn1.smallInteger());
  const i1 = der.uint(1);
  const cases: [string, asn1.Schema<unknown>, Buffer][] = [
    ['bytes after the value', Pair, Buffer.concat([der.seq(i1), Buffer.from([0])])],
    ['a field the schema does not name', Pair, der.seq(i1, der.octetString(Buffer.alloc(1)), i1)],
    ['a missing required field', Pair, der.seq()],
    ['a wrong tag', Pair, der.seq(der.octetString(Buffer.alloc(1)))],
    ['a SET where a SEQUENCE is due', Pair, der.set(i1)],
    ['an indefinite length (BER)', Pair, Buffer.from([0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00])],
    ['a non-minimal length (BER)', Pair, Buffer.from([0x30, 0x81, 0x03, 0x02, 0x01, 0x01])],
    ['a length past the end', Pair, Buffer.from([0x30, 0x05, 0x02, 0x01, 0x01])],
    ['a high tag number', Pair, Buffer.from([0x30, 0x04, 0x1f, 0x81, 0x01, 0x00])],
    ['a non-minimal INTEGER', Pair, der.seq(der.tlv(der.TAG.INTEGER, Buffer.from([0, 1])))],
    [
      'a negative INTEGER where a version is due',
      Pair,
      der.seq(der.tlv(der.TAG.INTEGER, Buffer.from([0xff]))),
    ],
    ['an empty INTEGER', Pair, der.seq(der.tlv(der.TAG.INTEGER, Buffer.alloc(0)))],
    ['fewer items than the minimum', List, der.seq()],
    ['more items than the maximum', List, der.seq(i1, i1, i1)],
    ['two values in one EXPLICIT tag', Wrapped, der.ctx(0, Buffer.concat([i1, i1]))],
    ['an empty EXPLICIT tag', Wrapped, der.ctx(0, Buffer.alloc(0))],
    ['a BIT STRING with more than 7 unused bits', asn1.bitString(), Buffer.from([0x03, 0x02, 0x08, 0x00])],
    ['a BOOLEAN of two octets', asn1.boolean(), Buffer.from([0x01, 0x02, 0xff, 0xff])],
    ['a non-minimal OID arc', asn1.oid(), Buffer.from([0x06, 0x03, 0x2a, 0x80, 0x01])],
    ['a truncated OID', asn1.oid(), Buffer.from([0x06, 0x02, 0x2a, 0x86])],
  ];
  it.each(cases)('%s', (_name, schema, input) => {
    expect(() => asn1.decode(input, schema)).toThrow(der.DerError);
  });

  it('reads the well-formed equivalents (control for the table above)', () => {
    expect(asn1.decode(der.seq(i1), Pair)).toMatchObject({ a: 1, b: undefined });
    expect(asn1.decode(der.seq(i1, der.octetString(Buffer.from([7]))), Pair).b).toEqual(Buffer.from([7]));
    expect(asn1.decode(der.seq(i1, i1), List)).toEqual([1, 1]);
    expect(asn1.decode(der.ctx(0, i1), Wrapped)).toBe(1);
    expect(asn1.decode(der.oid('1.2.840.113549.1.1.11'), asn1.oid())).toBe('1.2.840.113549.1.1.11');
    const pair = der.seq(i1);
    expect(asn1.decode(pair, Pair).der.equals(pair)).toBe(true);
  });
});

// ------------------------------------------------------------------ agreement with @peculiar/asn1-*

const hex = (b: ArrayBuffer | Uint8Array | Buffer) => Buffer.from(b as ArrayBuffer).toString('hex');

describe('the CSR reader agrees with @peculiar/asn1-csr', () => {
  it('on every field of real requests (node:crypto and openssl, four key types, attributes)', () => {
    expect(csrs.length).toBe(6);
    for (const { name, der: d } of csrs) {
      const ours = asn1.decode(d, pkcs10.CertificationRequest);
      const theirs = AsnConvert.parse(d, PeculiarCsr);
      const info = ours.certificationRequestInfo;
      const got = {
        version: info.version.readUIntBE(0, info.version.length),
        subject: info.subject.der.toString('hex'),
        spki: info.subjectPKInfo.der.toString('hex'),
        attributes: (info.attributes ?? []).map((a) => [a.type, a.values.map((v) => v.der.toString('hex'))]),
        info: info.der.toString('hex'),
        signatureAlgorithm: ours.signatureAlgorithm.algorithm,
        signature: ours.signature.bytes.toString('hex'),
      };
      const ti = theirs.certificationRequestInfo;
      const want = {
        version: ti.version,
        subject: hex(AsnConvert.serialize(ti.subject)),
        spki: hex(AsnConvert.serialize(ti.subjectPKInfo)),
        attributes: ti.attributes.map((a) => [a.type, a.values.map((v) => hex(v))]),
        info: hex(theirs.certificationRequestInfoRaw!),
        signatureAlgorithm: theirs.signatureAlgorithm.algorithm,
        signature: hex(theirs.signature),
      };
      expect(got, name).toEqual(want);
    }
  });
});

describe('the OCSP request reader agrees with @peculiar/asn1-ocsp', () => {
  it('on every CertID and the nonce of real openssl requests', () => {
    expect(ocspRequests.length).toBe(3);
    for (const { name, der: d } of ocspRequests) {
      const ours = parseOcspRequest(d);
      const theirs = AsnConvert.parse(d, PeculiarOcspRequest);
      const tbs = theirs.tbsRequest;
      const nonce = tbs.requestExtensions?.find((e) => e.extnID === OID.ocspNonce);
      expect(
        {
          certIds: ours.certIds.map((c) => [
            c.issuerNameHash.toString('hex'),
            c.issuerKeyHash.toString('hex'),
            c.serial,
            c.der.toString('hex'),
          ]),
          nonce: ours.nonce?.toString('hex'),
        },
        name,
      ).toEqual({
        certIds: tbs.requestList.map((r) => [
          hex(r.reqCert.issuerNameHash.buffer),
          hex(r.reqCert.issuerKeyHash.buffer),
          hex(r.reqCert.serialNumber).replace(/^(00)+(?=.)/, ''),
          hex(AsnConvert.serialize(r.reqCert)),
        ]),
        // The nonce extension's value is itself a DER OCTET STRING (RFC 6960 §4.4.1).
        nonce: nonce ? hex(AsnConvert.parse(nonce.extnValue.buffer, OctetString).buffer) : undefined,
      });
      expect(ours.certIds.every((c) => c.serial === devSerial)).toBe(true);
    }
  });
});

// ------------------------------------------------------------------ fuzzing

/** mulberry32: a small, seeded PRNG, so every run of this test sees the same mutants. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING = [
  0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x1f, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xa0,
  0xa2, 0xff,
];

/** One to three byte-level mutations: flips, interesting bytes (tags, length forms), cuts, splices. */
function mutate(input: Buffer, rnd: () => number): Buffer {
  let b = Buffer.from(input);
  const at = () => Math.floor(rnd() * Math.max(1, b.length));
  const rounds = 1 + Math.floor(rnd() * 3);
  for (let r = 0; r < rounds; r++) {
    const op = Math.floor(rnd() * 7);
    if (op === 0 && b.length) b[at()]! ^= 1 << Math.floor(rnd() * 8);
    else if (op === 1 && b.length) b[at()] = INTERESTING[Math.floor(rnd() * INTERESTING.length)]!;
    else if (op === 2 && b.length) b[at()] = Math.floor(rnd() * 256);
    else if (op === 3) b = Buffer.concat([b.subarray(0, at()), b.subarray(at() + 1)]);
    else if (op === 4) {
      const p = at();
      b = Buffer.concat([b.subarray(0, p), Buffer.from([Math.floor(rnd() * 256)]), b.subarray(p)]);
    } else if (op === 5) b = b.subarray(0, at());
    else {
      const p = at();
      const q = Math.min(b.length, p + 1 + Math.floor(rnd() * 16));
      b = Buffer.concat([b.subarray(0, q), b.subarray(p, q), b.subarray(q)]);
    }
  }
  return b;
}

/** Runs `f`; anything but a return or a pki FleetError with a known code is a failure. */
function outcome(f: () => unknown): 'accepted' | string {
  try {
    f();
    return 'accepted';
  } catch (e) {
    // A DerError is pki's too, but one that escapes a reader unmapped is a failure here.
    if (e instanceof FleetError && PKI_ERRORS.has(e.code) && !(e instanceof der.DerError)) return e.code;
    throw new Error(`not a pki refusal: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, {
      cause: e,
    });
  }
}

const theirsParses = (f: () => unknown) => {
  try {
    f();
    return true;
  } catch {
    return false;
  }
};

describe('fuzzing the readers with mutated inputs (fixed seed, bounded)', () => {
  it('a mutated CSR is checked or refused with a pki code, never with anything else', () => {
    const perInput = ENV_COUNT || 400;
    const rnd = prng(FUZZ_SEED);
    const codes = new Map<string, number>();
    for (const { name, der: seed } of csrs) {
      for (let i = 0; i < perInput; i++) {
        const m = mutate(seed, rnd);
        let code: string;
        try {
          code = outcome(() => checkCsr(m));
        } catch (e) {
          throw new Error(`${name}, mutant ${i} (${m.toString('hex')}): ${(e as Error).message}`);
        }
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    }
    // The mutants reach past the framing: the schema, the key checks and the signature all refuse some.
    expect(codes.get('CSR_MALFORMED')).toBeGreaterThan(0);
    expect(codes.get('CSR_SIGNATURE_INVALID')).toBeGreaterThan(0);
    expect([...codes.values()].reduce((a, b) => a + b, 0)).toBe(perInput * csrs.length);
  });

  it('a CSR whose mutated request info is signed again is accepted only if @peculiar/asn1-csr reads it alike', () => {
    const perInput = ENV_COUNT || 250;
    const rnd = prng(FUZZ_SEED + 2);
    let accepted = 0;
    for (const { name, key, seed } of keys) {
      const req = asn1.decode(seed, pkcs10.CertificationRequest);
      const hash = name === 'Ed25519' ? null : name === 'P-384' ? 'sha384' : 'sha256';
      for (let i = 0; i < perInput; i++) {
        const info = mutate(req.certificationRequestInfo.der, rnd);
        const m = der.seq(info, req.signatureAlgorithm.der, der.bitString(sign(hash, info, key)));
        let checked: ReturnType<typeof checkCsr> | undefined;
        const code = outcome(() => {
          checked = checkCsr(m);
        });
        if (code !== 'accepted') continue;
        accepted++;
        // Fleet never accepts a request that an independent schema reader finds malformed, and both read
        // the same key and subject name out of it.
        const theirs = AsnConvert.parse(m, PeculiarCsr).certificationRequestInfo;
        expect(hex(AsnConvert.serialize(theirs.subjectPKInfo)), m.toString('hex')).toBe(
          checked!.spki.toString('hex'),
        );
        const cns = theirs.subject.flatMap((rdn) => rdn.filter((a) => a.type === OID.commonName));
        expect(cns.at(-1)?.value.toString(), m.toString('hex')).toBe(checked!.commonName);
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });

  it('a mutated OCSP request is read or refused with OCSP_MALFORMED, and the exchange always answers', async () => {
    const perInput = ENV_COUNT || 600;
    const rnd = prng(FUZZ_SEED + 1);
    const issuers = Object.values(t.ca.issuers);
    const seeds = [
      ...ocspRequests,
      {
        name: 'hand-built, a single-request extension and a requestorName',
        der: der.seq(
          der.seq(
            der.ctx(1, der.ctx(4, der.seq(der.set(der.seq(der.oid(OID.commonName), der.utf8('x')))))),
            der.seq(
              der.seq(
                certIdFor(t.ca.issuers.device, devSerial).der,
                der.ctx(0, der.seq(der.seq(der.oid('1.2.3.4'), der.octetString(der.NULL)))),
              ),
            ),
          ),
        ),
      },
    ];
    expect(parseOcspRequest(seeds[3]!.der).certIds).toHaveLength(1);
    let accepted = 0;
    for (const { name, der: seed } of seeds) {
      for (let i = 0; i < perInput; i++) {
        const m = mutate(seed, rnd);
        let code: string;
        try {
          code = outcome(() => parseOcspRequest(m));
        } catch (e) {
          throw new Error(`${name}, mutant ${i} (${m.toString('hex')}): ${(e as Error).message}`);
        }
        expect(['accepted', 'OCSP_MALFORMED']).toContain(code);
        if (code === 'accepted') {
          accepted++;
          const req = parseOcspRequest(m);
          expect(req.certIds.length).toBeLessThanOrEqual(OCSP_MAX_CERT_IDS);
          // @peculiar/asn1-ocsp 2.6.1 cannot read singleRequestExtensions (its Request lacks the [0] tag).
          if (!name.startsWith('hand-built'))
            expect(
              theirsParses(() => AsnConvert.parse(m, PeculiarOcspRequest)),
              m.toString('hex'),
            ).toBe(true);
        }
        if (i % 50 === 0) {
          const a = await answerOcspRequest({ request: m, issuers, lookup: () => new Map() });
          expect(a.outcome).toBe(code === 'accepted' ? a.outcome : 'malformedRequest');
          expect(a.der[0]).toBe(0x30);
        }
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});
