/**
 * Typed, strict DER reader: an ASN.1 type is declared once as a schema (per standard, in the files beside
 * this one), and input is decoded against it into a typed, frozen-shape value that keeps the original DER
 * of every SEQUENCE beside its fields (as PKI.js and @peculiar/asn1-schema keep `…Raw`).
 *
 * Why not @peculiar/asn1-schema or pkijs at run time (measured here, P-256 CSR, CPU µs per parse): the
 * positional walk this replaces 0.1, asn1js `fromBER` alone 55, @peculiar/asn1-csr 119, pkijs 375, against a
 * whole `checkCsr` of ≈ 170–220; an OCSP request with one CertID 3.7 (ours) against 272 (@peculiar/asn1-ocsp),
 * 64 CertIDs 264 against 6,300. Both are BER readers besides: they accept trailing bytes, extra fields and
 * non-minimal lengths, so they would need a strict pass of their own. They stay in the tests, as oracles
 * that must agree with every value this reader returns (test/pki-asn1.test.ts).
 *
 * Strictness, by construction: DER lengths only (no indefinite or non-minimal form, `der.read`), low tag
 * numbers only, exact tags, every required field present, no field the schema does not name, no bytes
 * after the top-level value, count limits on SEQUENCE OF checked before each item is decoded. A refusal is
 * a `DerError` naming the path (`CertificationRequest.certificationRequestInfo.version`); callers map it to
 * their part's error code.
 */
import { DerError, decodeOid, type Node, read, TAG } from '../der.ts';

export interface Schema<T> {
  /** For messages: the ASN.1 type name. */
  readonly name: string;
  /** Tags a value of this type can start with; `undefined` for ANY. OPTIONAL fields are matched by them. */
  readonly tags: readonly number[] | undefined;
  decode(buf: Buffer, n: Node, path: string): T;
}

/** The decoded type of a schema. */
export type Decoded<S> = S extends Schema<infer T> ? T : never;

const hex = (t: number) => `0x${t.toString(16).padStart(2, '0')}`;

function expectTag(n: Node, tag: number, path: string, name: string): void {
  if (n.tag !== tag) throw new DerError(`${path}: expected ${name} (${hex(tag)}), got ${hex(n.tag)}`);
}

const accepts = (s: Schema<unknown>, tag: number) => s.tags === undefined || s.tags.includes(tag);

function primitive<T>(name: string, tag: number, decode: (c: Buffer, path: string) => T): Schema<T> {
  return {
    name,
    tags: [tag],
    decode(buf, n, path) {
      expectTag(n, tag, path, name);
      return decode(buf.subarray(n.contentStart, n.end), path);
    },
  };
}

// ------------------------------------------------------------------ universal types

/** INTEGER as its two's-complement content bytes (serials are up to 20 octets, RFC 5280 §4.1.2.2). */
export const integer = (): Schema<Buffer> =>
  primitive('INTEGER', TAG.INTEGER, (c, path) => {
    if (c.length === 0) throw new DerError(`${path}: empty INTEGER`);
    return c;
  });

/** A small non-negative INTEGER (versions), minimally encoded (X.690 §8.3.2), as a number. */
export const smallInteger = (): Schema<number> =>
  primitive('INTEGER', TAG.INTEGER, (c, path) => {
    if (c.length === 0 || c.length > 4 || c[0]! & 0x80 || (c.length > 1 && c[0] === 0 && !(c[1]! & 0x80)))
      throw new DerError(`${path}: not a minimally encoded small non-negative INTEGER`);
    return c.readUIntBE(0, c.length);
  });

export const oid = (): Schema<string> =>
  primitive('OBJECT IDENTIFIER', TAG.OID, (c, path) => {
    try {
      return decodeOid(c);
    } catch (e) {
      throw new DerError(`${path}: ${(e as Error).message}`);
    }
  });

export const octetString = (): Schema<Buffer> => primitive('OCTET STRING', TAG.OCTET_STRING, (c) => c);

export interface BitString {
  readonly unusedBits: number;
  readonly bytes: Buffer;
}
export const bitString = (): Schema<BitString> =>
  primitive('BIT STRING', TAG.BIT_STRING, (c, path) => {
    if (c.length === 0 || c[0]! > 7 || (c.length === 1 && c[0] !== 0))
      throw new DerError(`${path}: bad BIT STRING`);
    return { unusedBits: c[0]!, bytes: c.subarray(1) };
  });

/** BOOLEAN: one octet; any non-zero octet is TRUE (X.690 §8.2.2). */
export const boolean = (): Schema<boolean> =>
  primitive('BOOLEAN', TAG.BOOLEAN, (c, path) => {
    if (c.length !== 1) throw new DerError(`${path}: a BOOLEAN is one octet`);
    return c[0] !== 0;
  });

export const nul = (): Schema<null> =>
  primitive('NULL', TAG.NULL, (c, path) => {
    if (c.length !== 0) throw new DerError(`${path}: NULL with contents`);
    return null;
  });

/** One of a few universal types (a CHOICE of string or time types), kept as it came. */
export function oneOf(name: string, tags: readonly number[]): Schema<AnyValue> {
  return {
    name,
    tags,
    decode(buf, n, path) {
      if (!tags.includes(n.tag)) throw new DerError(`${path}: expected ${name}, got tag ${hex(n.tag)}`);
      return { tag: n.tag, der: buf.subarray(n.start, n.end), contents: buf.subarray(n.contentStart, n.end) };
    },
  };
}

/** ANY: one whole TLV of any tag, kept as it came. */
export interface AnyValue {
  readonly tag: number;
  /** The whole TLV. */
  readonly der: Buffer;
  readonly contents: Buffer;
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
  decode: (buf, n) => {
    checkFraming(buf, n);
    return {
      tag: n.tag,
      der: buf.subarray(n.start, n.end),
      contents: buf.subarray(n.contentStart, n.end),
    };
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
    decode(buf, n, path) {
      expectTag(n, TAG.SEQUENCE, path, `${name} (SEQUENCE)`);
      const out: Record<string, unknown> = { der: buf.subarray(n.start, n.end) };
      let next = n.contentStart < n.end ? read(buf, n.contentStart, n.end) : undefined;
      for (const f of list) {
        if (next && accepts(f.schema, next.tag)) {
          out[f.key] = f.schema.decode(buf, next, `${path}.${f.key}`);
          next = next.end < n.end ? read(buf, next.end, n.end) : undefined;
        } else if (f.optional) {
          out[f.key] = undefined;
        } else {
          throw new DerError(
            `${path}.${f.key}: ${next ? `expected ${f.schema.name}, got tag ${hex(next.tag)}` : 'missing'}`,
          );
        }
      }
      if (next) throw new DerError(`${path}: unexpected field (tag ${hex(next.tag)}) after the last one`);
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
    decode(buf: Buffer, n: Node, path: string): readonly T[] {
      expectTag(n, tag, path, `${name} (${kind} OF)`);
      const out: T[] = [];
      for (let p = n.contentStart; p < n.end; ) {
        if (out.length >= max) throw new DerError(`${path}: more than ${max} items`);
        const c = read(buf, p, n.end);
        out.push(item.decode(buf, c, `${path}[${out.length}]`));
        p = c.end;
      }
      if (out.length < min) throw new DerError(`${path}: fewer than ${min} items`);
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
    decode(buf, node, path) {
      expectTag(node, tag, path, `[${n}]`);
      if (node.contentStart === node.end) throw new DerError(`${path}: empty [${n}] EXPLICIT`);
      const c = read(buf, node.contentStart, node.end);
      if (c.end !== node.end) throw new DerError(`${path}: more than one value in [${n}] EXPLICIT`);
      return inner.decode(buf, c, path);
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
    decode(buf, node, path) {
      expectTag(node, tag, path, `[${n}]`);
      return inner.decode(buf, { ...node, tag: innerTag }, path);
    },
  };
}

/** A field read later, when and if the caller needs it: its tag is checked now, its contents on `read()`. */
export interface Deferred<T> {
  readonly der: Buffer;
  read(): T;
}
export function deferred<T>(inner: Schema<T>): Schema<Deferred<T>> {
  return {
    name: inner.name,
    tags: inner.tags,
    decode(buf, n, path) {
      if (inner.tags && !inner.tags.includes(n.tag))
        throw new DerError(`${path}: expected ${inner.name}, got tag ${hex(n.tag)}`);
      return { der: buf.subarray(n.start, n.end), read: () => inner.decode(buf, n, path) };
    },
  };
}

/** Decodes one DER value of type `schema` filling all of `buf` (bytes after it are refused). */
export function decode<T>(buf: Buffer, schema: Schema<T>): T {
  const top = read(buf);
  if (top.end !== buf.length) throw new DerError(`${schema.name}: trailing bytes after the value`);
  return schema.decode(buf, top, schema.name);
}
