/**
 * The operator's status actions, one code path for the operator API (api.ts) and the console
 * (console/): revoke (RFC 5280 reason), suspend, reinstate and reset a device; revoke, suspend and
 * reinstate a station, service or operator, a station's revocation optionally cascading over the devices
 * it enrolled in a time window. The registry writes the change, its audit entry (under `actor`) and the
 * change feed in one transaction; this process then drops its cached authentication and CRL at once.
 */
import type { IssuingCa } from '../pki/ca.ts';
import { isRevocationReason, OPERATOR_REASONS } from '../pki/crl.ts';
import { assertValidId } from '../pki/ids.ts';
import type { PrincipalKind, Registry, StatusChangeResult, SubjectStatus } from '../registry/index.ts';
import type { Authenticator } from './auth.ts';
import type { CrlPublisher } from './crl.ts';
import { ProvisioningError } from './errors.ts';

export type DeviceAction = 'revoke' | 'suspend' | 'reinstate' | 'reset';
export type PrincipalAction = 'revoke' | 'suspend' | 'reinstate';

export interface DeviceActionResult extends Partial<StatusChangeResult> {
  id: string;
  status: SubjectStatus;
  /** Set by reset. */
  reenrollAllowed?: boolean;
}

export interface PrincipalActionResult extends StatusChangeResult {
  kind: PrincipalKind;
  id: string;
  cascade?: { devicesRevoked: number; ids: string[] };
}

/** An operator reason (the RFC 5280 reasons an operator may give), default unspecified. */
export function operatorReason(r: string | undefined) {
  const reason = r ?? 'unspecified';
  if (!isRevocationReason(reason) || !OPERATOR_REASONS.includes(reason)) {
    throw new ProvisioningError('BODY_INVALID', `reason must be one of ${OPERATOR_REASONS.join(', ')}`, {
      details: { field: 'reason' },
    });
  }
  return reason;
}

const statusFor = (action: PrincipalAction): SubjectStatus =>
  action === 'revoke' ? 'revoked' : action === 'suspend' ? 'suspended' : 'active';

export class OperatorActions {
  constructor(
    private readonly registry: Registry,
    private readonly auth: Authenticator,
    private readonly crl: CrlPublisher,
  ) {}

  /** After a write: this process sees its own change at once (the change feed may arrive later). */
  private changed(which?: IssuingCa): void {
    this.auth.invalidate();
    this.crl.invalidate(which);
  }

  async device(
    actor: string,
    deviceId: string,
    action: DeviceAction,
    opts: { reason?: string; details?: Record<string, unknown> } = {},
  ): Promise<DeviceActionResult> {
    assertValidId(deviceId, 'device id');
    if (action === 'reset') {
      const row = await this.registry.allowReenroll(deviceId, actor);
      return { id: row.id, status: row.status, reenrollAllowed: row.reenrollAllowed };
    }
    const reason = operatorReason(opts.reason);
    const r = await this.registry.setStatus({
      kind: 'device',
      id: deviceId,
      status: statusFor(action),
      ...(action === 'revoke' ? { reason } : {}),
      actor,
      ...(opts.details ? { details: opts.details } : {}),
    });
    this.changed('device');
    return { id: deviceId, ...r };
  }

  async principal(
    actor: string,
    kind: PrincipalKind,
    id: string,
    action: PrincipalAction,
    opts: {
      reason?: string;
      cascade?: { from: Date; to?: Date };
      details?: Record<string, unknown>;
    } = {},
  ): Promise<PrincipalActionResult> {
    assertValidId(id, `${kind} id`);
    const reason = operatorReason(opts.reason);
    const r = await this.registry.setStatus({
      kind,
      id,
      status: statusFor(action),
      ...(action === 'revoke' ? { reason } : {}),
      actor,
      ...(opts.details ? { details: opts.details } : {}),
    });
    this.changed('infrastructure');
    if (action === 'revoke' && kind === 'station' && opts.cascade) {
      const c = await this.registry.revokeEnrolledBy({
        stationId: id,
        from: opts.cascade.from,
        to: opts.cascade.to ?? new Date(),
        reason,
        actor,
      });
      this.changed('device');
      return { kind, id, ...r, cascade: { devicesRevoked: c.ids.length, ids: c.ids } };
    }
    return { kind, id, ...r };
  }
}
