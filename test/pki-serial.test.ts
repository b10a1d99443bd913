/**
 * The one canonical serial form (pki/serial.ts): what the registry stores and looks up, what identity,
 * the CRL and OCSP compare. Certificates are issued at test time by the project's own CA.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import * as px509 from '@peculiar/x509';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCrl } from '../pki/crl.ts';
import * as der from '../pki/der.ts';
import { identityFromCertificate } from '../pki/identity.ts';
import { certIdFor, parseOcspRequest } from '../pki/ocsp.ts';
import { canonicalSerial } from '../pki/serial.ts';
import { randomSerial, readCertificate } from '../pki/x509.ts';
import { makeTestCa, type TestCa } from './helpers/pki.ts';

describe('canonicalSerial', () => {
  const accepted: { name: string; input: string; canonical: string }[] = [
    { name: 'lowercase hex stays as it is', input: '7f3a9c', canonical: '7f3a9c' },
    { name: 'upper case becomes lowercase', input: '7F3A9C', canonical: '7f3a9c' },
    { name: 'mixed case becomes lowercase', input: 'aBcD', canonical: 'abcd' },
    { name: 'a DER sign octet 00 is dropped', input: '00ff01', canonical: 'ff01' },
    { name: 'several leading zero octets are dropped', input: '000000ab', canonical: 'ab' },
    { name: 'an odd number of digits is padded to whole octets', input: 'abc', canonical: '0abc' },
    { name: 'one digit is one octet', input: 'f', canonical: '0f' },
    { name: 'a leading zero digit of a whole octet stays', input: '0f12', canonical: '0f12' },
    { name: 'odd leading zeros collapse to one octet', input: '000abc', canonical: '0abc' },
    { name: 'zero is one zero octet', input: '0', canonical: '00' },
    { name: 'zero octets are one zero octet', input: '0000', canonical: '00' },
    { name: '20 octets (the RFC 5280 maximum) stay', input: 'f'.repeat(40), canonical: 'f'.repeat(40) },
    {
      name: '20 octets after a DER sign octet lose the sign octet',
      input: `00${'9'.repeat(40)}`,
      canonical: '9'.repeat(40),
    },
    {
      name: 'a Fleet 128-bit serial in Node upper case',
      input: '5A0C3F1E2D4B6A7988776655443322FF',
      canonical: '5a0c3f1e2d4b6a7988776655443322ff',
    },
  ];
  it.each(accepted)('$name: $input -> $canonical', ({ input, canonical }) => {
    expect(canonicalSerial(input)).toBe(canonical);
    expect(canonicalSerial(canonical), 'canonical is a fixed point').toBe(canonical);
  });

  const refused: { name: string; input: unknown }[] = [
    { name: 'an empty string', input: '' },
    { name: 'colon-separated octets (openssl -text form)', input: 'ab:cd:ef' },
    { name: 'a 0x prefix', input: '0xabcd' },
    { name: 'a leading space', input: ' abcd' },
    { name: 'a trailing newline', input: 'abcd\n' },
    { name: 'a minus sign', input: '-1' },
    { name: 'a non-hex letter', input: 'abcg' },
    { name: 'a non-ASCII digit', input: 'ab١٢' },
    { name: 'a number instead of a string', input: 0xabcd },
    { name: 'undefined', input: undefined },
    { name: 'null', input: null },
  ];
  it.each(refused)('refuses $name', ({ input }) => {
    expect(canonicalSerial(input)).toBeUndefined();
  });

  it('leaves every serial Fleet issues as it is (no stored serial changes form)', () => {
    const bad: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const hex = randomSerial().toString('hex');
      if (hex.length !== 32 || canonicalSerial(hex) !== hex) bad.push(hex);
    }
    expect(bad).toEqual([]);
  });
});

describe('one serial from issue to identity, CRL and OCSP', () => {
  let t: TestCa;
  beforeAll(async () => {
    t = await makeTestCa();
  });
  afterAll(() => t.cleanup());

  /** The serialNumber INTEGER's content octets as written in the certificate (a DER sign octet kept). */
  const derSerialContent = (cert: Buffer): Buffer => readCertificate(cert).tbsCertificate.serialNumber;

  it('agrees for serials with a DER sign octet and with a leading zero digit', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const seen = { signOctet: false, zeroDigit: false, plain: false };
    const checked: { serial: string; content: Buffer }[] = [];
    for (let i = 0; i < 2000 && !(seen.signOctet && seen.zeroDigit && seen.plain); i++) {
      const c = t.ca.issue({ profile: 'device', id: `serial-${i}`, spki });
      const content = derSerialContent(c.der);
      const kind = content[0] === 0 ? 'signOctet' : c.serial.startsWith('0') ? 'zeroDigit' : 'plain';
      if (seen[kind]) continue;
      seen[kind] = true;
      // Stored form (the issuer's), Node's upper-case form, the DER octets and the identity all agree.
      expect(canonicalSerial(c.serial)).toBe(c.serial);
      expect(canonicalSerial(new X509Certificate(c.der).serialNumber)).toBe(c.serial);
      expect(canonicalSerial(content.toString('hex'))).toBe(c.serial);
      expect(identityFromCertificate(c.der).serial).toBe(c.serial);
      // @peculiar/x509 (no code shared with Fleet) gives the value without a sign octet: the same serial.
      expect(canonicalSerial(new px509.X509Certificate(new Uint8Array(c.der)).serialNumber)).toBe(c.serial);
      // OCSP: a client's CertID carries the DER INTEGER; the responder reads back the stored form.
      const certId = certIdFor(t.ca.issuers.device, c.serial.toUpperCase());
      const request = der.seq(der.seq(der.seq(der.seq(certId.der))));
      expect(parseOcspRequest(request).certIds[0]!.serial).toBe(c.serial);
      checked.push({ serial: c.serial, content });
    }
    expect(seen).toEqual({ signOctet: true, zeroDigit: true, plain: true });

    // CRL: each stored serial is written as the same INTEGER octets the certificate carries, as PKI.js
    // (no code shared with Fleet) reads them back.
    const crl = buildCrl({
      issuer: t.ca.issuers.device,
      crlNumber: 1,
      entries: checked.map((c) => ({ serial: c.serial, revokedAt: new Date(), reason: 'keyCompromise' })),
    });
    const revoked =
      pkijs.CertificateRevocationList.fromBER(new Uint8Array(crl.der)).revokedCertificates ?? [];
    expect(
      revoked.map((r) => Buffer.from(r.userCertificate.valueBlock.valueHexView).toString('hex')),
    ).toEqual(checked.map((c) => c.content.toString('hex')));
  });
});
