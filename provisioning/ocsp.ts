/**
 * The OCSP responder (RFC 6960): answers from the registry, signed by the issuing CA itself.
 *
 * - A request naming certificates of two issuing CAs is answered by the CA of the first; the others are
 *   'unknown' to it (one response has one signer).
 * - A CertID of an issuer that is not ours gets `unauthorized` (§2.3), an unparsable request
 *   `malformedRequest`; both are unsigned, as §2.3 prescribes, and sent with HTTP 200 (RFC 5019 §5).
 * - A serial the registry does not know is 'unknown'. A superseded certificate is 'good' during its grace
 *   period and 'revoked' (reason superseded, RFC 5280 §5.3.1, 4) once retired: its successor connected, its
 *   grace ended, or an operator reset the device (registry/rotation.ts; certificateStatus applies the rule).
 * - A suspended subject's certificates are 'revoked' with reason certificateHold and the time of the
 *   suspension, like the CRL; after reinstatement they are 'good' again.
 */
import type { CertificateAuthority } from '../pki/ca.ts';
import {
  buildOcspError,
  buildOcspResponse,
  findIssuerForCertId,
  type OcspCertStatus,
  type OcspSingleResponse,
  parseOcspRequest,
} from '../pki/ocsp.ts';
import type { Registry, RegistryLogger } from '../registry/index.ts';

/** How long a client may cache an answer (nextUpdate). Short: revocation should be seen quickly. */
export const OCSP_VALIDITY_MS = 10 * 60_000;

export class OcspResponder {
  constructor(
    private readonly ca: CertificateAuthority,
    private readonly registry: Registry,
    private readonly log: RegistryLogger,
  ) {}

  async respond(request: Buffer): Promise<Buffer> {
    let parsed: ReturnType<typeof parseOcspRequest>;
    try {
      parsed = parseOcspRequest(request);
    } catch (err) {
      this.log.info({ event: 'ocsp_malformed', err }, 'refused a malformed OCSP request');
      return buildOcspError('malformedRequest');
    }
    const issuers = Object.values(this.ca.issuers);
    const issuer = findIssuerForCertId(parsed.certIds[0]!, issuers);
    if (!issuer) return buildOcspError('unauthorized');
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const nextUpdate = new Date(now.getTime() + OCSP_VALIDITY_MS);
    let responses: OcspSingleResponse[];
    try {
      responses = await Promise.all(
        parsed.certIds.map(async (certId) => ({
          certId,
          status:
            findIssuerForCertId(certId, [issuer]) === issuer
              ? await this.status(certId.serial, issuer.role)
              : ('unknown' as const),
          thisUpdate: now,
          nextUpdate,
        })),
      );
    } catch (err) {
      // RFC 6960 §2.3: a responder that cannot answer says internalError, as an OCSP response; never an
      // HTTP error page an OCSP client cannot read.
      this.log.error({ event: 'ocsp_lookup_failed', err }, 'OCSP status lookup failed');
      return buildOcspError('internalError');
    }
    return buildOcspResponse({
      issuer,
      responses,
      ...(parsed.nonce ? { nonce: parsed.nonce } : {}),
      producedAt: now,
    });
  }

  private async status(serial: string, issuerCa: string): Promise<OcspCertStatus> {
    const s = await this.registry.certificateStatus(serial);
    if (!s || s.issuerCa !== issuerCa) return 'unknown';
    if (s.status === 'revoked')
      return { revoked: { at: s.revokedAt ?? s.notBefore, reason: s.reason ?? 'unspecified' } };
    if (s.subjectStatus === 'suspended') {
      const at =
        s.subjectKind === 'device'
          ? (await this.registry.getDevice(s.subjectId))?.statusChangedAt
          : (await this.registry.getPrincipal(s.subjectKind, s.subjectId))?.statusChangedAt;
      return { revoked: { at: at ?? new Date(), reason: 'certificateHold' } };
    }
    return 'good';
  }
}
