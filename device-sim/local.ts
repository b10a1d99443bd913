/**
 * In-process enrollment and revocation, on the CA and the registry directly through provisioning's one
 * issuing path. For tests, and for the embedded default when no provisioning service runs (the registry's
 * data directory then belongs to this process; with PostgreSQL a running broker hears the revocations
 * through the change feed).
 */
import type { CertificateAuthority } from '../pki/ca.ts';
import { FleetError } from '../pki/errors.ts';
import { certToPem } from '../pki/x509.ts';
import { Issuance } from '../provisioning/issuance.ts';
import type { Registry, RevocationReason } from '../registry/index.ts';
import { SimError } from './errors.ts';
import type { Enroller, EnrollOutcome, EnrollRequest } from './identities.ts';
import type { Operator } from './operator.ts';

const pemOf = (r: { der: Buffer; chain: Buffer[] }) => certToPem(r.der) + r.chain.map(certToPem).join('');

export class LocalEnroller implements Enroller {
  private readonly issuance: Issuance;
  constructor(
    readonly ca: CertificateAuthority,
    readonly registry: Registry,
    /** The station the devices are recorded as enrolled by (audit actor `station:<id>`). */
    readonly station = 'sim',
  ) {
    this.issuance = new Issuance(ca, registry);
  }

  async rootPem(): Promise<string> {
    return this.ca.rootPem;
  }

  async enrollDevices(reqs: readonly EnrollRequest[]): Promise<EnrollOutcome[]> {
    const out: EnrollOutcome[] = [];
    // Each request is answered on its own, like the batch API's lines: idempotent per id and key.
    for (const r of reqs) {
      try {
        const res = await this.issuance.issueDevice({
          id: r.id,
          product: r.product,
          csr: r.csr,
          actor: `station:${this.station}`,
        });
        out.push({ id: r.id, ok: true, certPem: pemOf(res) });
      } catch (e) {
        if (!(e instanceof FleetError)) throw e;
        out.push({ id: r.id, ok: false, code: e.code, message: e.message });
      }
    }
    return out;
  }

  async enrollService(id: string, csr: Buffer): Promise<string> {
    const res = await this.issuance.issuePrincipal(
      { kind: 'service', id, role: null },
      { csr },
      'operator:sim',
    );
    return pemOf(res);
  }
}

export class LocalOperator implements Operator {
  constructor(readonly registry: Registry) {}

  async revokeDevice(id: string, reason: string): Promise<void> {
    try {
      await this.registry.setStatus({
        kind: 'device',
        id,
        status: 'revoked',
        reason: reason as RevocationReason,
        actor: 'operator:sim',
      });
    } catch (cause) {
      throw new SimError('SIM_REVOKE_FAILED', `revoking ${id} failed`, { cause });
    }
  }
}
