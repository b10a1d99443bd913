/**
 * The one way every part declares its errors, as fastify's `createError(code, message, status)`: each code
 * once, with its part, its HTTP status (or its MQTT CONNACK return code where it refuses a connection) and
 * its public message. A part's errors.ts calls `defineErrors(part, { CODE: { status, message } })` and its
 * error class hands the declaration to FleetError, which takes status, return code and part from it, so a
 * throw names only the code and, where it helps, a more specific public message.
 *
 * The public codes are the ones clients have always seen (no part prefix forced into them); the part is
 * recorded in the declaration. `npm run errors:catalogue` writes every declaration to docs/errors.md, and
 * test/errors.test.ts checks that no code is declared twice with different meanings and that every code a
 * source throws is declared.
 *
 * A leaf module (no imports): the lowest part, pki/, holds it, and every part may import it.
 */

/** What a part says about one of its codes. */
export interface ErrorSpec {
  /** HTTP status of an API answer carrying this code. */
  readonly status?: number;
  /** MQTT 3.1.1 CONNACK return code [MQTT-3.2.2.3], where the code refuses an MQTT connection. */
  readonly connack?: number;
  /** The public meaning, safe to show a client; the message of a throw that names nothing more specific. */
  readonly message: string;
}

/** One declared code, as the catalogue lists it. */
export interface ErrorDeclaration {
  readonly code: string;
  readonly part: string;
  readonly status: number | undefined;
  readonly connack: number | undefined;
  readonly message: string;
}

/** A part's declarations: `get(code)` for its class, `declarations` for the catalogue. */
export interface ErrorTable<C extends string> {
  readonly part: string;
  readonly codes: readonly C[];
  readonly declarations: readonly ErrorDeclaration[];
  get(code: C): ErrorDeclaration;
  has(code: string): code is C;
}

/** The codes of a table, as a type: `type PkiErrorCode = ErrorCode<typeof PKI_ERRORS>`. */
export type ErrorCode<T> = T extends ErrorTable<infer C> ? C : never;

const CODE = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/;
const PART = /^[a-z][a-z0-9-]*$/;

/**
 * Declares a part's codes. A malformed declaration (a code that is not UPPER_SNAKE, no status and no return
 * code, a status outside 400-599, an empty message) is a programming error: it throws when the module loads.
 */
export function defineErrors<const S extends Record<string, ErrorSpec>>(
  part: string,
  specs: S,
): ErrorTable<keyof S & string> {
  if (!PART.test(part)) throw new Error(`defineErrors: bad part name ${JSON.stringify(part)}`);
  const byCode = new Map<string, ErrorDeclaration>();
  for (const [code, spec] of Object.entries(specs)) {
    const where = `defineErrors(${part}) ${code}`;
    if (!CODE.test(code)) throw new Error(`${where}: a code is UPPER_SNAKE_CASE`);
    if (spec.status === undefined && spec.connack === undefined)
      throw new Error(`${where}: needs an HTTP status or an MQTT CONNACK return code`);
    if (
      spec.status !== undefined &&
      !(Number.isInteger(spec.status) && spec.status >= 400 && spec.status <= 599)
    )
      throw new Error(`${where}: status ${spec.status} is not an HTTP error status`);
    if (
      spec.connack !== undefined &&
      !(Number.isInteger(spec.connack) && spec.connack >= 1 && spec.connack <= 255)
    )
      throw new Error(`${where}: connack ${spec.connack} is not a refusal return code`);
    if (!spec.message.trim()) throw new Error(`${where}: needs a public message`);
    byCode.set(
      code,
      Object.freeze({ code, part, status: spec.status, connack: spec.connack, message: spec.message }),
    );
  }
  const declarations = Object.freeze([...byCode.values()]);
  return Object.freeze({
    part,
    codes: Object.freeze([...byCode.keys()]) as readonly (keyof S & string)[],
    declarations,
    get(code: keyof S & string): ErrorDeclaration {
      const d = byCode.get(code);
      // Only reachable by a cast past the code type: fail loudly rather than answer with a made-up status.
      if (!d) throw new Error(`error code ${code} is not declared by ${part}`);
      return d;
    },
    has(code: string): code is keyof S & string {
      return byCode.has(code);
    },
  });
}

export interface FleetErrorOptions {
  /** HTTP status for API answers (default 400); a declared code takes its declaration's status instead. */
  httpStatus?: number;
  /** MQTT 3.1.1 CONNACK return code; a declared code takes its declaration's instead. */
  connackCode?: number;
  /** Internal cause: logged, never shown to a client. */
  cause?: unknown;
  /** Extra public, structured detail (field names, limits). Must not contain secrets. */
  details?: Record<string, unknown>;
}

/** What a part's error class takes beside the code: the status and return code come from the declaration. */
export type DeclaredErrorOptions = Omit<FleetErrorOptions, 'httpStatus' | 'connackCode'>;

/**
 * The base of every typed error. Built from a declaration (what each part's class does), it carries the
 * declared status, return code and part; built from a bare code string, it relays a code declared elsewhere
 * (the API client relaying the service's answer).
 */
export class FleetError extends Error {
  readonly code: string;
  readonly httpStatus: number;
  readonly connackCode: number | undefined;
  readonly details: Record<string, unknown> | undefined;
  /** The part that declared the code; undefined for a relayed code. */
  readonly part: string | undefined;

  constructor(code: string | ErrorDeclaration, publicMessage?: string, opts: FleetErrorOptions = {}) {
    const d = typeof code === 'string' ? undefined : code;
    super(
      publicMessage ?? d?.message ?? (code as string),
      opts.cause === undefined ? undefined : { cause: opts.cause },
    );
    this.name = 'FleetError';
    this.code = d ? d.code : (code as string);
    this.httpStatus = (d ? d.status : opts.httpStatus) ?? 400;
    this.connackCode = d ? d.connack : opts.connackCode;
    this.details = opts.details;
    this.part = d?.part;
  }

  /** What a client may see. */
  toPublic(): { code: string; message: string; details?: Record<string, unknown> } {
    return this.details
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }
}

export function isFleetError(e: unknown, code?: string): e is FleetError {
  return e instanceof FleetError && (code === undefined || e.code === code);
}
