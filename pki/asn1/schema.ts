/**
 * Typed, strict DER reader: an ASN.1 type is declared once as a schema (per standard, in the files beside
 * this one), and input is decoded against it into a typed value that keeps the original DER
 * of every SEQUENCE beside its fields (as PKI.js and @peculiar/asn1-schema keep `…Raw`).
 *
 * Why not @peculiar/asn1-schema or pkijs at run time (measured here, CPU µs per parse of a P-256 CSR):
 * asn1js `fromBER` alone 55, @peculiar/asn1-csr 119, pkijs 375, this reader 1.1, against ≈ 170–220 for a
 * whole `checkCsr` (a 5 % budget); an OCSP request with one CertID: @peculiar/asn1-ocsp 272, this reader
 * 3.1; with 64 CertIDs 6,300 against 111, on a public, unauthenticated endpoint. Both libraries are BER
 * readers besides: they accept trailing bytes, extra fields and non-minimal lengths, so they would need
 * a strict pass of their own. They stay in the tests as oracles that must agree with every value this
 * reader returns (test/pki-asn1.test.ts, test/pki-oracles.test.ts).
 *
 * Strictness, by construction: DER lengths only (no indefinite or non-minimal form, `der.read`), low tag
 * numbers only, exact tags, every required field present, no field the schema does not name, no bytes
 * after the top-level value, count limits on SEQUENCE OF checked before each item is decoded. A refusal is
 * a `DerError` naming the path (`CertificationRequest.certificationRequestInfo.version`); callers map it to
 * their part's error code.
 *
 * Cost: decoding runs for every CSR on the issuing path and for every distinct client certificate a
 * broker meets, so nothing is built that a caller may not read: the DER of a SEQUENCE, an ANY or a
 * deferred field is a view made when asked for, and an error's path is assembled only when one is thrown.
 */
import { DerError, decodeOid, type Node, read, TAG } from '../der.ts';

export interface Schema<T> {
  /** For messages: the ASN.1 type name. */
  readonly name: string;
  /** Tags a value of this type can start with; `undefined` for ANY. OPTIONAL fields are matched by them. */
  readonly tags: readonly number[] | undefined;
  /** Decodes the value at `n`; a refusal is a DerError (its path is filled in on the way out). */
  decode(buf: Buffer, n: Node): T;
}

/** The decoded type of a schema. */
export type Decoded<S> = S extends Schema<infer T> ? T : never;

const hex = (t: number) => `0x${t.toString(16).padStart(2, '0')}`;

/** A refusal on its way out of nested types, collecting the field names and indexes it passes. */
type Located = DerError & { path?: (string | number)[] };
function within(e: unknown, step: string | number): unknown {
  if (e instanceof DerError) {
    const located = e as Located;
    located.path = [step, ...(located.path ?? [])];
  }
  return e;
}

function expectTag(n: Node, tag: number, name: string): void {
  if (n.tag !== tag) throw new DerError(`expected ${name} (${hex(tag)}), got ${hex(n.tag)}`);
}

const accepts = (s: Schema<unknown>, tag: number) => s.tags === undefined || s.tags.includes(tag);

/** A primitive universal type; `decode` gets the contents' bounds in `buf`, so no view is made for nothing. */
function primitive<T>(
  name: string,
  tag: number,
  decode: (b: Buffer, start: number, end: number) => T,
): Schema<T> {
  return {
    name,
    tags: [tag],
    decode(buf, n) {
      expectTag(n, tag, name);
      return decode(buf, n.contentStart, n.end);
    },
  };
}

// ------------------------------------------------------------------ universal types

/** INTEGER as its two's-complement content bytes (serials are up to 20 octets, RFC 5280 §4.1.2.2). */
export const integer = (): Schema<Buffer> =>
  primitive('INTEGER', TAG.INTEGER, (b, s, e) => {
    if (e === s) throw new DerError('empty INTEGER');
    return b.subarray(s, e);
  });

/** A small non-negative INTEGER (versions), minimally encoded (X.690 §8.3.2), as a number. */
export const smallInteger = (): Schema<number> =>
  primitive('INTEGER', TAG.INTEGER, (b, s, e) => {
    const len = e - s;
    if (len === 0 || len > 4 || b[s]! & 0x80 || (len > 1 && b[s] === 0 && !(b[s + 1]! & 0x80)))
      throw new DerError('not a minimally encoded small non-negative INTEGER');
    return b.readUIntBE(s, len);
  });

export const oid = (): Schema<string> => primitive('OBJECT IDENTIFIER', TAG.OID, decodeOid);

export const octetString = (): Schema<Buffer> =>
  primitive('OCTET STRING', TAG.OCTET_STRING, (b, s, e) => b.subarray(s, e));

export interface BitString {
  readonly unusedBits: number;
  readonly bytes: Buffer;
}
export const bitString = (): Schema<BitString> =>
  primitive('BIT STRING', TAG.BIT_STRING, (b, s, e) => {
    if (e === s || b[s]! > 7 || (e - s === 1 && b[s] !== 0)) throw new DerError('bad BIT STRING');
    return { unusedBits: b[s]!, bytes: b.subarray(s + 1, e) };
  });

/** BOOLEAN: one octet; any non-zero octet is TRUE (X.690 §8.2.2). */
export const boolean = (): Schema<boolean> =>
  primitive('BOOLEAN', TAG.BOOLEAN, (b, s, e) => {
    if (e - s !== 1) throw new DerError('a BOOLEAN is one octet');
    return b[s] !== 0;
  });

export const nul = (): Schema<null> =>
  primitive('NULL', TAG.NULL, (_b, s, e) => {
    if (e !== s) throw new DerError('NULL with contents');
    return null;
  });

/** A value kept as it came (ANY, or a CHOICE of universal types): its tag, and views made when asked for. */
export class AnyValue {
  readonly tag: number;
  readonly #buf: Buffer;
  readonly #node: Node;
  constructor(buf: Buffer, node: Node) {
    this.tag = node.tag;
    this.#buf = buf;
    this.#node = node;
  }
  /** The whole TLV. */
  get der(): Buffer {
    return this.#buf.subarray(this.#node.start, this.#node.end);
  }
  get contents(): Buffer {
    return this.#buf.subarray(this.#node.contentStart, this.#node.end);
  }
}

/** One of a few universal types (a CHOICE of string or time types), kept as it came. */
export function oneOf(name: string, tags: readonly number[]): Schema<AnyValue> {
  return {
    name,
    tags,
    decode(buf, n) {
      if (!tags.includes(n.tag)) throw new DerError(`expected ${name}, got tag ${hex(n.tag)}`);
      return new AnyValue(buf, n);
    },
  };
}

/**
 * The contents of a constructed value are TLVs all the way down (X.690 §8.1.1): checked for values the
 * schema does not interpret (ANY), without recursion so nesting depth cannot exhaust the stack.
 */
function checkFraming(buf: Buffer, n: Node): void {
  const pending: Node[] = [n];
  for (let node = pending.pop(); node; node = pending.pop()) {
    if (!(node.tag & 0x20)) continue;
    for (let p = node.contentStart; p < node.end; ) {
      const c = read(buf, p, node.end);
      pending.push(c);
      p = c.end;
    }
  }
}

/** ANY: one whole TLV of any tag, kept as it came (a constructed one must be well framed inside). */
export const any = (): Schema<AnyValue> => ({
  name: 'ANY',
  tags: undefined,
  decode(buf, n) {
    checkFraming(buf, n);
    return new AnyValue(buf, n);
  },
});

// ------------------------------------------------------------------ constructed types

export interface Optional<T> {
  readonly optional: Schema<T>;
}
/** An OPTIONAL (or DEFAULT) field: absent when the next element's tag is not one this type starts with. */
export const optional = <T>(s: Schema<T>): Optional<T> => ({ optional: s });

type FieldSpec = Schema<unknown> | Optional<unknown>;
type FieldValue<F> = F extends Optional<infer T> ? T | undefined : F extends Schema<infer T> ? T : never;
export type SequenceValue<F extends Record<string, FieldSpec>> = {
  readonly [K in keyof F]: FieldValue<F[K]>;
} & {
  /** The SEQUENCE's whole TLV, as it came (signatures are over these bytes; CertIDs are echoed). */
  readonly der: Buffer;
};

/** A decoded SEQUENCE: its fields as own properties, its DER a view made when asked for. */
class SequenceView {
  readonly #buf: Buffer;
  readonly #start: number;
  readonly #end: number;
  constructor(buf: Buffer, n: Node) {
    this.#buf = buf;
    this.#start = n.start;
    this.#end = n.end;
  }
  get der(): Buffer {
    return this.#buf.subarray(this.#start, this.#end);
  }
}

/** SEQUENCE { fields in order }; fields are named as in the standard. */
export function sequence<F extends Record<string, FieldSpec>>(
  name: string,
  fields: F,
): Schema<SequenceValue<F>> {
  const list = Object.entries(fields).map(([key, spec]) =>
    'optional' in spec
      ? { key, schema: spec.optional, optional: true }
      : { key, schema: spec as Schema<unknown>, optional: false },
  );
  return {
    name,
    tags: [TAG.SEQUENCE],
    decode(buf, n) {
      expectTag(n, TAG.SEQUENCE, `${name} (SEQUENCE)`);
      const out = new SequenceView(buf, n) as unknown as Record<string, unknown>;
      let next = n.contentStart < n.end ? read(buf, n.contentStart, n.end) : undefined;
      for (const f of list) {
        if (next && accepts(f.schema, next.tag)) {
          try {
            out[f.key] = f.schema.decode(buf, next);
            next = next.end < n.end ? read(buf, next.end, n.end) : undefined;
          } catch (e) {
            throw within(e, f.key);
          }
        } else if (f.optional) {
          out[f.key] = undefined;
        } else {
          throw within(
            new DerError(next ? `expected ${f.schema.name}, got tag ${hex(next.tag)}` : 'missing'),
            f.key,
          );
        }
      }
      if (next) throw new DerError(`unexpected field (tag ${hex(next.tag)}) after the last one`);
      return out as SequenceValue<F>;
    },
  };
}

export interface Bounds {
  /** At least this many items (default 0). */
  min?: number;
  /** At most this many: refused before the next item is decoded, so a long list costs nothing. */
  max?: number;
}

function listOf<T>(kind: 'SEQUENCE' | 'SET', tag: number, name: string, item: Schema<T>, b: Bounds) {
  const max = b.max ?? Number.POSITIVE_INFINITY;
  const min = b.min ?? 0;
  return {
    name,
    tags: [tag],
    decode(buf: Buffer, n: Node): readonly T[] {
      expectTag(n, tag, `${name} (${kind} OF)`);
      const out: T[] = [];
      for (let p = n.contentStart; p < n.end; ) {
        if (out.length >= max) throw new DerError(`more than ${max} items`);
        try {
          const c = read(buf, p, n.end);
          out.push(item.decode(buf, c));
          p = c.end;
        } catch (e) {
          throw within(e, out.length);
        }
      }
      if (out.length < min) throw new DerError(`fewer than ${min} items`);
      return out;
    },
  } satisfies Schema<readonly T[]>;
}
export const sequenceOf = <T>(name: string, item: Schema<T>, b: Bounds = {}): Schema<readonly T[]> =>
  listOf('SEQUENCE', TAG.SEQUENCE, name, item, b);
export const setOf = <T>(name: string, item: Schema<T>, b: Bounds = {}): Schema<readonly T[]> =>
  listOf('SET', TAG.SET, name, item, b);

/** [n] EXPLICIT: a constructed context tag holding exactly one value of the inner type. */
export function explicit<T>(n: number, inner: Schema<T>): Schema<T> {
  const tag = 0xa0 | n;
  return {
    name: `[${n}] ${inner.name}`,
    tags: [tag],
    decode(buf, node) {
      expectTag(node, tag, `[${n}]`);
      if (node.contentStart === node.end) throw new DerError(`empty [${n}] EXPLICIT`);
      const c = read(buf, node.contentStart, node.end);
      if (c.end !== node.end) throw new DerError(`more than one value in [${n}] EXPLICIT`);
      return inner.decode(buf, c);
    },
  };
}

/** [n] IMPLICIT: the inner type's own tag replaced by the context tag (constructed if the inner is). */
export function implicit<T>(n: number, inner: Schema<T>): Schema<T> {
  const innerTag = inner.tags?.length === 1 ? inner.tags[0]! : undefined;
  if (innerTag === undefined) throw new Error(`[${n}] IMPLICIT needs a type with one tag`);
  const tag = 0x80 | (innerTag & 0x20) | n;
  return {
    name: `[${n}] IMPLICIT ${inner.name}`,
    tags: [tag],
    decode(buf, node) {
      expectTag(node, tag, `[${n}]`);
      return inner.decode(buf, { ...node, tag: innerTag });
    },
  };
}

/** A field read later, when and if the caller needs it: its tag is checked now, its contents on `read()`. */
export class Deferred<T> {
  readonly #buf: Buffer;
  readonly #node: Node;
  readonly #inner: Schema<T>;
  constructor(buf: Buffer, node: Node, inner: Schema<T>) {
    this.#buf = buf;
    this.#node = node;
    this.#inner = inner;
  }
  get der(): Buffer {
    return this.#buf.subarray(this.#node.start, this.#node.end);
  }
  read(): T {
    try {
      return this.#inner.decode(this.#buf, this.#node);
    } catch (e) {
      throw located(e, this.#inner.name);
    }
  }
}
export function deferred<T>(inner: Schema<T>): Schema<Deferred<T>> {
  return {
    name: inner.name,
    tags: inner.tags,
    decode(buf, n) {
      if (inner.tags && !inner.tags.includes(n.tag))
        throw new DerError(`expected ${inner.name}, got tag ${hex(n.tag)}`);
      return new Deferred(buf, n, inner);
    },
  };
}

/** Writes the collected path into the message: `CertificationRequest.certificationRequestInfo.version: …`. */
function located(e: unknown, root: string): unknown {
  if (!(e instanceof DerError)) return e;
  const path = (e as Located).path ?? [];
  e.message = `${root}${path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('')}: ${e.message}`;
  (e as Located).path = undefined;
  return e;
}

/** Decodes one DER value of type `schema` filling all of `buf` (bytes after it are refused). */
export function decode<T>(buf: Buffer, schema: Schema<T>): T {
  try {
    const top = read(buf);
    if (top.end !== buf.length) throw new DerError('trailing bytes after the value');
    return schema.decode(buf, top);
  } catch (e) {
    throw located(e, schema.name);
  }
}
