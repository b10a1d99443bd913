/**
 * The one issuing path: check the CSR, sign, record, and only then hand the certificate out. A certificate
 * is built in memory and returned only after its registry row is committed, so a failed insert leaves no
 * certificate behind (nothing was ever returned or written anywhere else).
 *
 * Who may ask (a station within its scope and quota, an operator, a device re-enrolling) is decided by the
 * caller; this module knows only how a certificate is made and recorded (step-ca's split).
 */
import type { CertificateAuthority } from '../pki/ca.ts';
import { type CheckedCsr, checkCsr } from '../pki/csr.ts';
import { FleetError } from '../pki/errors.ts';
import { assertValidId } from '../pki/ids.ts';
import type { IssuedCertificate, ProfileName } from '../pki/x509.ts';
import type { CertificateRow, IssueRecord, IssueSubject, Registry } from '../registry/index.ts';
import { ProvisioningError } from './errors.ts';

export interface DeviceIssueRequest {
  id: string;
  product: string;
  /** Defaults to the product. */
  fleet?: string;
  csr: Buffer | string;
  /** Station id, when a station enrolls. */
  enrolledBy?: string | null;
  /** Audit actor `<kind>:<id>`. */
  actor: string;
}

export interface IssueResult {
  /** Certificate DER. */
  der: Buffer;
  serial: string;
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  /** Issuing CA certificate(s), leaf's issuer first. */
  chain: Buffer[];
  /** True when an identical earlier request got this same certificate (idempotent retry). */
  reused: boolean;
}

export type PrincipalSubject = Exclude<IssueSubject, { kind: 'device' }>;

export function newCertificateRow(c: IssuedCertificate) {
  return {
    serial: c.serial,
    issuerCa: c.issuerCa,
    der: c.der,
    fingerprintSha256: c.fingerprint,
    spkiSha256: c.spkiSha256,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
  };
}

function fromRow(row: CertificateRow, chain: Buffer[], reused: boolean): IssueResult {
  return {
    der: Buffer.from(row.der),
    serial: row.serial,
    fingerprint: row.fingerprintSha256,
    notBefore: row.notBefore,
    notAfter: row.notAfter,
    chain,
    reused,
  };
}

function fromIssued(c: IssuedCertificate, chain: Buffer[]): IssueResult {
  return {
    der: c.der,
    serial: c.serial,
    fingerprint: c.fingerprint,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    chain,
    reused: false,
  };
}

/** Validates a device request's ids and CSR; pure, so callers refuse a bad line before any I/O. */
export function checkDeviceRequest(
  req: Pick<DeviceIssueRequest, 'id' | 'product' | 'fleet' | 'csr'>,
): CheckedCsr {
  assertValidId(req.id, 'device id');
  assertValidId(req.product, 'product');
  if (req.fleet !== undefined) assertValidId(req.fleet, 'fleet');
  return checkCsr(req.csr, req.id);
}

export class Issuance {
  constructor(
    readonly ca: CertificateAuthority,
    readonly registry: Registry,
  ) {}

  /**
   * Issues a device certificate. Idempotent: the same device id with the same public key gets its existing
   * active certificate back. A different key for an enrolled device is refused (DEVICE_KEY_CONFLICT) unless
   * an operator has reset the device.
   */
  async issueDevice(req: DeviceIssueRequest, checked = checkDeviceRequest(req)): Promise<IssueResult> {
    const chain = this.ca.chainFor('device');
    const existing = await this.registry.findCertificateForKey(
      { kind: 'device', id: req.id },
      checked.spkiSha256,
    );
    if (existing) return fromRow(existing, chain, true);
    const cert = this.ca.issue({ profile: 'device', id: req.id, spki: checked.spki });
    try {
      await this.registry.recordIssued(this.deviceRecord(req, cert));
    } catch (e) {
      if (e instanceof FleetError && e.code === 'DEVICE_EXISTS') {
        // A concurrent retry with the same key may have won the race: answer with its certificate.
        const again = await this.registry.findCertificateForKey(
          { kind: 'device', id: req.id },
          checked.spkiSha256,
        );
        if (again) return fromRow(again, chain, true);
        throw new ProvisioningError(
          'DEVICE_KEY_CONFLICT',
          `device ${req.id} is enrolled with another key; an operator must reset it first`,
          { cause: e },
        );
      }
      throw e;
    }
    return fromIssued(cert, chain);
  }

  deviceRecord(req: DeviceIssueRequest, cert: IssuedCertificate): IssueRecord {
    return {
      subject: { kind: 'device', id: req.id, product: req.product, fleet: req.fleet ?? req.product },
      certificate: newCertificateRow(cert),
      enrolledBy: req.enrolledBy ?? null,
      actor: req.actor,
      details: { serial: cert.serial, product: req.product },
    };
  }

  /**
   * Issues many device certificates recorded in one transaction (all or nothing). Requests must already be
   * checked; callers that want per-line outcomes check each line first and pass only the good ones.
   */
  async issueDeviceBatch(reqs: { req: DeviceIssueRequest; checked: CheckedCsr }[]): Promise<IssueResult[]> {
    const chain = this.ca.chainFor('device');
    const certs = reqs.map(({ req, checked }) =>
      this.ca.issue({ profile: 'device', id: req.id, spki: checked.spki }),
    );
    await this.registry.recordIssuedBatch(reqs.map(({ req }, i) => this.deviceRecord(req, certs[i]!)));
    return certs.map((c) => fromIssued(c, chain));
  }

  /** Issues a station, service or operator certificate for a key the caller holds (CSR or SPKI). */
  async issuePrincipal(
    subject: PrincipalSubject,
    key: { csr: Buffer | string } | { spki: Buffer },
    actor: string,
  ): Promise<IssueResult> {
    assertValidId(subject.id, `${subject.kind} id`);
    const spki = 'csr' in key ? checkCsr(key.csr, subject.id).spki : key.spki;
    const profile: ProfileName = subject.kind;
    const cert = this.ca.issue({ profile, id: subject.id, spki });
    await this.registry.recordIssued({
      subject,
      certificate: newCertificateRow(cert),
      actor,
      details: { serial: cert.serial },
    });
    return fromIssued(cert, this.ca.chainFor(profile));
  }
}
