/**
 * Minimal DER (ITU-T X.690) writer, and the TLV framing the typed reader (asn1/schema.ts) stands on.
 * Certificates are assembled from pre-encoded parts: the
 * ASN.1 encoding, not the signature, is what makes general-purpose libraries slow (≈ 500 certs/s), so
 * everything constant per CA and profile is encoded once and concatenated per certificate.
 */
import { PkiError } from './errors.ts';

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function headerSize(len: number): number {
  return len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : len < 0x1000000 ? 5 : 6;
}

/** Writes tag and length at `out[0…]`; returns the header size. */
function writeHeader(out: Buffer, tag: number, len: number): number {
  out[0] = tag;
  if (len < 0x80) {
    out[1] = len;
    return 2;
  }
  const n = len < 0x100 ? 1 : len < 0x10000 ? 2 : len < 0x1000000 ? 3 : 4;
  out[1] = 0x80 | n;
  for (let i = 0; i < n; i++) out[1 + n - i] = (len >>> (8 * i)) & 0xff;
  return 2 + n;
}

/**
 * Encodes one TLV from a tag and already-encoded contents: one allocation, each part copied once (this
 * is on the issuing hot path; three allocations and a concat per TLV cost more than the signature).
 */
export function tlv(tag: number, ...contents: Buffer[]): Buffer {
  let len = 0;
  for (const c of contents) len += c.length;
  const out = Buffer.allocUnsafe(headerSize(len) + len);
  let p = writeHeader(out, tag, len);
  for (const c of contents) {
    c.copy(out, p);
    p += c.length;
  }
  return out;
}

export const seq = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...items);
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, ...items);
export const octetString = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer, unusedBits = 0): Buffer =>
  tlv(TAG.BIT_STRING, Buffer.from([unusedBits]), b);
export const NULL = Buffer.from([0x05, 0x00]);
export const boolean = (v: boolean): Buffer => Buffer.from([0x01, 0x01, v ? 0xff : 0x00]);
/** Context-specific tag [n]; constructed unless `primitive`. */
export const ctx = (n: number, content: Buffer, primitive = false): Buffer =>
  tlv((primitive ? 0x80 : 0xa0) | n, content);
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
export const ia5 = (s: string): Buffer => tlv(TAG.IA5_STRING, Buffer.from(s, 'ascii'));
export const printable = (s: string): Buffer => tlv(TAG.PRINTABLE_STRING, Buffer.from(s, 'ascii'));

/** A non-negative INTEGER from big-endian magnitude bytes (minimal, with a 0x00 pad when the top bit is set). */
export function uintFromBytes(mag: Buffer): Buffer {
  let i = 0;
  while (i < mag.length - 1 && mag[i] === 0) i++;
  let m = mag.subarray(i);
  if (m.length === 0) m = Buffer.from([0]);
  if (m[0]! & 0x80) m = Buffer.concat([Buffer.from([0]), m]);
  return tlv(TAG.INTEGER, m);
}

export function uint(n: number | bigint): Buffer {
  let hex = BigInt(n).toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return uintFromBytes(Buffer.from(hex, 'hex'));
}

const oidCache = new Map<string, Buffer>();

/** An OBJECT IDENTIFIER; encodings are memoised (a handful of constants), so callers must not mutate. */
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const enc = encodeOid(dotted);
  if (oidCache.size < 1024) oidCache.set(dotted, enc);
  return enc;
}

function encodeOid(dotted: string): Buffer {
  const parts = dotted.split('.').map((p) => BigInt(p));
  if (parts.length < 2) throw new Error(`bad OID ${dotted}`);
  const bytes: number[] = [];
  const push = (v: bigint) => {
    const stack: number[] = [Number(v & 0x7fn)];
    v >>= 7n;
    while (v > 0n) {
      stack.unshift(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(...stack);
  };
  push(parts[0]! * 40n + parts[1]!);
  for (const p of parts.slice(2)) push(p);
  return tlv(TAG.OID, Buffer.from(bytes));
}

const pad2 = (n: number) => (n < 10 ? `0${n}` : `${n}`);

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. Seconds precision, always Z. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${pad2(y % 100)}${rest}`, 'ascii'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${y}${rest}`, 'ascii'));
}

export function generalizedTime(d: Date): Buffer {
  const s = `${d.getUTCFullYear()}${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(s, 'ascii'));
}

// ---------------------------------------------------------------- reader

/**
 * A DER value that breaks the DER rules. Readers map it to their own code (CSR_MALFORMED, OCSP_MALFORMED, …);
 * one that slipped through unmapped is still a typed 400 (DER_INVALID), never an untyped 500.
 */
export class DerError extends PkiError {
  constructor(problem: string) {
    super('DER_INVALID', problem);
    this.name = 'DerError';
  }
}

export interface Node {
  tag: number;
  /** Offset of the tag byte in the source. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the contents. */
  end: number;
}

/** Reads one TLV at `pos`, refusing indefinite and non-minimal lengths (DER, not BER). */
export function read(buf: Buffer, pos = 0, limit = buf.length): Node {
  if (pos + 2 > limit) throw new DerError('truncated');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('high tag numbers are not supported');
  // X.690 §8.1.5: [UNIVERSAL 0] is end-of-contents, which only BER's indefinite form has.
  if (tag === 0) throw new DerError('end-of-contents is not DER');
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError('indefinite length is not DER');
    if (n > 4) throw new DerError('length too large');
    if (p + n > limit) throw new DerError('truncated');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || (n > 1 && buf[p] === 0)) throw new DerError('non-minimal length');
    p += n;
  }
  const end = p + len;
  if (end > limit) throw new DerError('truncated');
  return { tag, start: pos, contentStart: p, end };
}

/**
 * Dotted form of an OBJECT IDENTIFIER's contents. Arcs are summed in plain numbers while they stay below
 * 2^46 (every OID Fleet meets), in BigInt past that: this runs for every OID of every CSR.
 */
export function decodeOid(b: Buffer, start = 0, end = b.length): string {
  if (end <= start) throw new DerError('empty OID');
  const out: (number | bigint)[] = [];
  let v: number | bigint = 0;
  let started = false;
  for (let i = start; i < end; i++) {
    const byte = b[i]!;
    if (!started && byte === 0x80) throw new DerError('non-minimal OID');
    started = true;
    if (typeof v === 'number' && v >= 2 ** 46) v = BigInt(v);
    v = typeof v === 'number' ? v * 128 + (byte & 0x7f) : (v << 7n) | BigInt(byte & 0x7f);
    if (!(byte & 0x80)) {
      out.push(v);
      v = 0;
      started = false;
    } else if (i === end - 1) throw new DerError('truncated OID');
  }
  const first = out[0]!;
  const a = first < 40 ? 0 : first < 80 ? 1 : 2;
  const second = typeof first === 'number' ? first - a * 40 : first - BigInt(a * 40);
  let s = `${a}.${second}`;
  for (let i = 1; i < out.length; i++) s += `.${out[i]}`;
  return s;
}

/** PEM helpers. */
export function toPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** All PEM blocks with the given label (or any label when omitted). */
export function fromPemAll(pem: string, label?: string): Buffer[] {
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  const out: Buffer[] = [];
  for (const m of pem.matchAll(re)) {
    if (label && m[1] !== label) continue;
    out.push(Buffer.from(m[2]!.replace(/[\r\n\t ]/g, ''), 'base64'));
  }
  return out;
}
