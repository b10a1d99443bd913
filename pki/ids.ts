import { PkiError } from './errors.ts';

/** design.md: ids are always safe to put into a topic: no '/', '+', '#', control characters or spaces. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const IDENTITY_KINDS = ['device', 'service', 'station', 'operator'] as const;
export type IdentityKind = (typeof IDENTITY_KINDS)[number];

export const URN_PREFIX = 'urn:fleet:';

export function isValidId(id: unknown): id is string {
  return typeof id === 'string' && ID_PATTERN.test(id);
}

/** Which id rule `id` breaks (a public message and details naming the field), or undefined when it is valid. */
export function idProblem(
  id: unknown,
  what = 'id',
): { message: string; details: Record<string, unknown> } | undefined {
  if (typeof id !== 'string' || id.length === 0) {
    return { message: `${what} is missing or not a string`, details: { field: what } };
  }
  if (id.length > 64) {
    return { message: `${what} is longer than 64 characters`, details: { field: what, length: id.length } };
  }
  if (/[\u0000-\u001f\u007f]/.test(id)) {
    return { message: `${what} contains a control character`, details: { field: what } };
  }
  if (/[/+#]/.test(id)) {
    return {
      message: `${what} contains an MQTT topic character ('/', '+' or '#')`,
      details: { field: what },
    };
  }
  if (!ID_PATTERN.test(id))
    return { message: `${what} must match ${ID_PATTERN.source}`, details: { field: what } };
  return undefined;
}

/** Throws ID_INVALID naming which rule the id broke. */
export function assertValidId(id: unknown, what = 'id'): asserts id is string {
  const problem = idProblem(id, what);
  if (problem) throw new PkiError('ID_INVALID', problem.message, { details: problem.details });
}

export function identityUri(kind: IdentityKind, id: string): string {
  return `${URN_PREFIX}${kind}:${id}`;
}

/** Parses `urn:fleet:<kind>:<id>`; undefined when it is not one. */
export function parseIdentityUri(uri: string): { kind: IdentityKind; id: string } | undefined {
  if (!uri.startsWith(URN_PREFIX)) return undefined;
  const rest = uri.slice(URN_PREFIX.length);
  const colon = rest.indexOf(':');
  if (colon < 0) return undefined;
  const kind = rest.slice(0, colon) as IdentityKind;
  const id = rest.slice(colon + 1);
  if (!IDENTITY_KINDS.includes(kind) || !isValidId(id)) return undefined;
  return { kind, id };
}

/** The typed identity derived once from a verified peer certificate. Frozen. */
export interface Identity {
  readonly kind: IdentityKind;
  readonly id: string;
  /** Certificate serial in its canonical form (pki/serial.ts). */
  readonly serial: string;
  /** SHA-256 of the certificate DER, lowercase hex. */
  readonly fingerprint: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Common name of the issuing CA (e.g. 'Fleet Device CA'). */
  readonly issuer: string;
}
