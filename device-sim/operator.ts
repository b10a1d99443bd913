/** Who revokes devices during a revoke-under-load phase: the operator API, or the registry in process. */
export interface Operator {
  /** Revokes a device with an RFC 5280 reason; resolves when the service has recorded it. */
  revokeDevice(id: string, reason: string): Promise<void>;
}
