/** Builds a CA's current CRL from the registry (the source of truth). */
import type { CertificateAuthority, IssuingCa } from '../pki/ca.ts';
import { type BuiltCrl, buildCrl } from '../pki/crl.ts';
import type { Registry } from '../registry/index.ts';

export const CRL_VALIDITY_HOURS = 24;

export async function currentCrl(
  ca: CertificateAuthority,
  registry: Registry,
  issuing: IssuingCa,
  now = new Date(),
): Promise<BuiltCrl> {
  const entries = await registry.revokedCertificates(issuing);
  // RFC 5280 §5.2.3: the CRL number only ever increases for a CA. The issue time in milliseconds does that
  // across processes and restarts without a counter to keep (and two CRLs in one millisecond are the same).
  return buildCrl({
    issuer: ca.issuers[issuing],
    entries,
    crlNumber: BigInt(now.getTime()),
    thisUpdate: now,
    validityHours: CRL_VALIDITY_HOURS,
  });
}
