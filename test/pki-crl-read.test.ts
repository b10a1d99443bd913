/**
 * readCrl(): what `fleet crl` trusts a CRL fetched over plain HTTP for is its signature by the issuing CA,
 * never where it came from. It reads back what buildCrl() wrote, and refuses anything else.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CertificateAuthority } from '../pki/ca.ts';
import { buildCrl, readCrl } from '../pki/crl.ts';
import { makeCa, tempDir } from './helpers/broker.ts';

let tmp: ReturnType<typeof tempDir>;
let ca: CertificateAuthority;
let other: CertificateAuthority;

beforeAll(async () => {
  tmp = tempDir('fleet-crl-read-');
  ca = await makeCa(`${tmp.dir}/a`);
  other = await makeCa(`${tmp.dir}/b`);
});
afterAll(() => tmp.remove());

const issuerCert = (c: CertificateAuthority) => new X509Certificate(c.issuers.device.certificate);

describe('readCrl', () => {
  it('reads back the number, the dates and the entries buildCrl wrote', () => {
    const thisUpdate = new Date('2026-06-01T12:00:00Z');
    const built = buildCrl({
      issuer: ca.issuers.device,
      crlNumber: 4711n,
      thisUpdate,
      entries: [
        { serial: '0a1b', revokedAt: new Date('2026-05-01T00:00:00Z'), reason: 'keyCompromise' },
        { serial: '0c2d', revokedAt: new Date('2026-05-02T00:00:00Z'), reason: 'unspecified' },
      ],
    });
    expect(readCrl(built.der, issuerCert(ca))).toEqual({
      crlNumber: 4711n,
      thisUpdate,
      nextUpdate: built.nextUpdate,
      entries: 2,
    });
  });

  const empty = () => buildCrl({ issuer: ca.issuers.device, crlNumber: 1, entries: [] }).der;
  it.each([
    ['signed by another CA', () => empty(), () => issuerCert(other)],
    [
      'one byte of its body changed',
      () => {
        const d = Buffer.from(empty());
        d[40] = d[40]! ^ 0x01;
        return d;
      },
      () => issuerCert(ca),
    ],
    ['not DER at all', () => Buffer.from('<html>not found</html>'), () => issuerCert(ca)],
    ['a certificate, not a CRL', () => ca.issuers.device.certificate, () => issuerCert(ca)],
    ['trailing bytes', () => Buffer.concat([empty(), Buffer.from([0])]), () => issuerCert(ca)],
  ])('refuses a CRL %s with CRL_INVALID', (_name, crl, issuer) => {
    expect(() => readCrl(crl(), issuer())).toThrow(expect.objectContaining({ code: 'CRL_INVALID' }));
  });
});
