/**
 * Client certificates verified once per distinct certificate in JS (broker/client-verify.ts): the verdicts
 * match OpenSSL's on every case of the refusal matrix, a certificate from a look-alike CA (same names,
 * other keys) is refused, validity is checked on every call although the verdict is cached, and the
 * CertificateRequest still names the fleet's CAs.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientCertVerifier } from '../broker/client-verify.ts';
import type { CertificateAuthority } from '../pki/ca.ts';
import {
  type BrokerFixture,
  brokerFixture,
  type Credentials,
  caCertificateAsClient,
  issue,
  type StartedBroker,
} from './helpers/broker.ts';

const DAY = 86_400_000;
let f: BrokerFixture;
let ca: CertificateAuthority;
const brokers: Record<'cached' | 'openssl', StartedBroker> = {} as never;
const creds: Record<string, Credentials> = {};

beforeAll(async () => {
  f = await brokerFixture();
  ca = f.ca;
  const lookalike = await f.makeCa('lookalike'); // the same names as `ca`, other keys
  const other = await f.makeCa('other', 'Other');
  const now = Date.now();
  creds.device = await f.enroll('device', 'cv-dev');
  creds.service = await f.enroll('service', 'cv-svc');
  creds.station = await f.enroll('station', 'cv-line');
  creds.expired = await f.enroll('device', 'cv-expired', {
    notBefore: new Date(now - 3 * DAY),
    notAfter: new Date(now - DAY),
  });
  creds.future = await f.enroll('device', 'cv-future', {
    notBefore: new Date(now + DAY),
    notAfter: new Date(now + 3 * DAY),
  });
  creds.lookalike = issue(lookalike, 'device', 'cv-dev');
  creds.otherCa = issue(other, 'device', 'cv-dev');
  creds.serverOnly = f.issue('broker', 'cv-dev', { dns: ['cv-dev.example'] });
  creds.caCert = caCertificateAsClient(ca);
  brokers.cached = await f.start({ nodeId: 'cv-cached' });
  brokers.openssl = await f.start({ nodeId: 'cv-openssl', tls: { clientVerification: 'openssl' } });
});

afterAll(async () => {
  await f?.cleanup();
});

const x509 = (c: Credentials) => new X509Certificate(c.cert);

describe('ClientCertVerifier', () => {
  it.each([
    ['a device certificate is accepted with its identity', 'device', { ok: true }],
    ['a certificate from another CA is unknown_ca', 'otherCa', { ok: false, refused: 'unknown_ca' }],
    [
      'a certificate from a CA with the same names but another key is unknown_ca',
      'lookalike',
      { ok: false, refused: 'unknown_ca' },
    ],
    [
      'an expired certificate is certificate_expired',
      'expired',
      { ok: false, refused: 'certificate_expired' },
    ],
    [
      'a not yet valid certificate is certificate_not_yet_valid',
      'future',
      { ok: false, refused: 'certificate_not_yet_valid' },
    ],
    [
      'a serverAuth-only certificate is bad_certificate',
      'serverOnly',
      { ok: false, refused: 'bad_certificate' },
    ],
  ] as const)('%s', (_name, who, expected) => {
    const v = new ClientCertVerifier(ca.trustPem);
    expect(v.check(x509(creds[who]!), Date.now())).toMatchObject(expected);
  });

  it('no certificate is no_certificate', () => {
    expect(new ClientCertVerifier(ca.trustPem).check(undefined, Date.now())).toEqual({
      ok: false,
      refused: 'no_certificate',
    });
  });

  it('a CA certificate passes the TLS checks, as with OpenSSL, and carries no identity (CONNACK 5 later)', () => {
    const r = new ClientCertVerifier(ca.trustPem).check(x509(creds.caCert!), Date.now());
    expect(r).toMatchObject({ ok: true, identity: undefined, identityError: { code: 'CERT_IS_CA' } });
  });

  it('decides each distinct certificate once, and checks validity against the clock on every call', () => {
    const v = new ClientCertVerifier(ca.trustPem);
    const cert = x509(creds.device!);
    const first = v.check(cert, Date.now());
    expect(first.ok && first.identity?.id).toBe('cv-dev');
    expect(v.check(x509(creds.device!), Date.now())).toEqual(first);
    expect(v.size).toBe(1);
    const after = new Date(cert.validTo).getTime() + 1000;
    expect(v.check(cert, after)).toEqual({ ok: false, refused: 'certificate_expired' });
    const before = new Date(cert.validFrom).getTime() - 1000;
    expect(v.check(cert, before)).toEqual({ ok: false, refused: 'certificate_not_yet_valid' });
  });

  it('holds name-only stand-ins of the fleet CAs: the same subject names, none of their keys', () => {
    const v = new ClientCertVerifier(ca.trustPem);
    const blocks = (pem: string) =>
      (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(
        (b) => new X509Certificate(b),
      );
    const real = blocks(ca.trustPem);
    const standIns = blocks(v.caListPem);
    expect(standIns.map((c) => c.subject)).toEqual(real.map((c) => c.subject));
    for (const [i, s] of standIns.entries()) {
      expect(s.publicKey.equals(real[i]!.publicKey)).toBe(false);
      expect(x509(creds.device!).checkIssued(s)).toBe(false);
    }
  });

  it('refuses a trust list that is not a CA hierarchy', () => {
    expect(() => new ClientCertVerifier(creds.device!.cert)).toThrow(/not a CA/);
  });
});

describe('the broker with cached verification refuses and admits exactly as with OpenSSL verification', () => {
  it.each([
    ['device', undefined],
    ['service', undefined],
    [undefined, 'cv-dev'],
    ['otherCa', undefined],
    ['lookalike', undefined],
    ['expired', undefined],
    ['future', undefined],
    ['serverOnly', 'cv-dev'],
    ['caCert', 'rogue'],
    ['station', undefined],
  ] as const)('%s', async (who, clientId) => {
    const outcomes: unknown[] = [];
    for (const mode of ['cached', 'openssl'] as const) {
      const c = who ? creds[who] : undefined;
      const r = await brokers[mode].tryConnect(c, clientId === undefined ? {} : { clientId });
      if (r.outcome === 'connected') await r.client.endAsync();
      outcomes.push(r.outcome === 'closed' ? 'closed' : r.outcome === 'connack' ? r.code : r.outcome);
    }
    expect(outcomes[0]).toEqual(outcomes[1]);
  });

  it('counts TLS-level refusals by outcome', async () => {
    const text = await brokers.cached.broker.metrics.registry.metrics();
    for (const outcome of ['no_certificate', 'unknown_ca', 'certificate_expired', 'bad_certificate']) {
      expect(text).toMatch(new RegExp(`fleet_tls_handshakes_total\\{outcome="${outcome}"\\} [1-9]`));
    }
  });
});

describe('the CertificateRequest', () => {
  const acceptableCaNames = (port: number) =>
    new Promise<string>((resolve) => {
      const child = execFile(
        'openssl',
        ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-tls1_3'],
        { timeout: 10_000 },
        (_err, stdout) => {
          const m =
            /Acceptable client certificate CA names\n([\s\S]*?)\n(?:Requested|Client Certificate Types|Shared)/.exec(
              stdout,
            );
          resolve(m?.[1] ?? '');
        },
      );
      child.stdin?.end();
    });

  it('names the same CAs with cached verification as with OpenSSL verification', async () => {
    const cached = await acceptableCaNames(brokers.cached.port);
    const openssl = await acceptableCaNames(brokers.openssl.port);
    expect(cached).toContain('Fleet Device CA');
    expect(cached).toContain('Fleet Root CA');
    expect(cached).toBe(openssl);
  });
});
