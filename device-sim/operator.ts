/** Who revokes devices during a revoke-under-load phase: the operator API, or the registry in process. */
export interface Operator {
  /** Revokes a device with an RFC 5280 reason; resolves when the service has recorded it. */
  revokeDevice(id: string, reason: string): Promise<void>;
}

/** Passes revocations on and remembers which devices ended up revoked (so later runs leave them out). */
export class RecordingOperator implements Operator {
  readonly revoked: string[] = [];
  constructor(private readonly inner: Operator) {}

  async revokeDevice(id: string, reason: string): Promise<void> {
    try {
      await this.inner.revokeDevice(id, reason);
    } catch (e) {
      const err = e as { code?: string; details?: { code?: string } };
      if ((err.details?.code ?? err.code) === 'ALREADY_REVOKED') this.revoked.push(id);
      throw e;
    }
    this.revoked.push(id);
  }
}
