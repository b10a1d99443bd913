/**
 * Batch enrollment: NDJSON in, NDJSON out, streamed. Lines are read as they arrive and grouped into chunks
 * (default 200); each chunk is checked line by line (a bad line fails alone, before any I/O), then the good
 * lines are issued and recorded in one transaction, and the results are written in input order. Reading
 * pauses while the client is not reading the answers (the answer is a pull stream), so a production run of
 * 100,000 devices is never held in memory.
 */
import { FleetError } from '../pki/errors.ts';
import type { Identity } from '../pki/ids.ts';
import { certToPem } from '../pki/x509.ts';
import { ref } from '../registry/index.ts';
import type { Enrollment, EnrollmentInput } from './enroll.ts';
import { ProvisioningError, toFleetError } from './errors.ts';
import type { IssueResult } from './issuance.ts';

export const BATCH_CHUNK_LINES = 200;
/** A line holds one CSR (at most 16 KiB DER, so about 22 KiB as PEM) and a few ids. */
export const BATCH_LINE_MAX_BYTES = 64 * 1024;

export interface RawLine {
  /** 1-based line number in the request. */
  n: number;
  text?: string;
  tooLarge?: boolean;
}

/** Splits a byte stream into lines (LF or CRLF), refusing overlong lines without buffering them. */
export async function* ndjsonLines(
  source: AsyncIterable<Buffer | string>,
  maxBytes = BATCH_LINE_MAX_BYTES,
): AsyncGenerator<RawLine> {
  let parts: Buffer[] = [];
  let size = 0;
  let skipping = false;
  let n = 0;
  const finish = (): RawLine | undefined => {
    n++;
    if (skipping) {
      skipping = false;
      return { n, tooLarge: true };
    }
    const text = Buffer.concat(parts, size).toString('utf8');
    parts = [];
    size = 0;
    return { n, text: text.endsWith('\r') ? text.slice(0, -1) : text };
  };
  for await (const c of source) {
    let chunk = typeof c === 'string' ? Buffer.from(c) : c;
    for (;;) {
      const nl = chunk.indexOf(0x0a);
      const piece = nl < 0 ? chunk : chunk.subarray(0, nl);
      if (!skipping) {
        if (size + piece.length > maxBytes) {
          skipping = true;
          parts = [];
          size = 0;
        } else {
          parts.push(piece);
          size += piece.length;
        }
      }
      if (nl < 0) break;
      const line = finish();
      if (line) yield line;
      chunk = chunk.subarray(nl + 1);
    }
  }
  if (size > 0 || skipping) {
    const line = finish();
    if (line) yield line;
  }
}

/** Reads one line's JSON into an enrollment input, naming what is wrong. */
export function parseEnrollmentLine(text: string): EnrollmentInput {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (cause) {
    throw new ProvisioningError('BODY_MALFORMED_JSON', 'the line is not valid JSON', { cause });
  }
  return checkEnrollmentBody(v);
}

const FIELDS = new Set(['deviceId', 'product', 'fleet', 'csr']);

/** The same rules as the JSON schema of POST /v1/enrollments, for batch lines. */
export function checkEnrollmentBody(v: unknown): EnrollmentInput {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new ProvisioningError('BODY_INVALID', 'the enrollment must be a JSON object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!FIELDS.has(k))
      throw new ProvisioningError('BODY_INVALID', `unknown field ${JSON.stringify(k)}`, {
        details: { field: k },
      });
  }
  for (const f of ['deviceId', 'product', 'csr'] as const) {
    if (typeof o[f] !== 'string' || o[f] === '')
      throw new ProvisioningError('BODY_INVALID', `${f} is missing or not a string`, {
        details: { field: f },
      });
  }
  if (o['fleet'] !== undefined && typeof o['fleet'] !== 'string')
    throw new ProvisioningError('BODY_INVALID', 'fleet is not a string', { details: { field: 'fleet' } });
  return {
    deviceId: o['deviceId'] as string,
    product: o['product'] as string,
    csr: o['csr'] as string,
    ...(o['fleet'] !== undefined ? { fleet: o['fleet'] as string } : {}),
  };
}

export interface BatchContext {
  enrollment: Enrollment;
  /** Re-checks the station before each chunk: a station revoked mid-run stops getting certificates. */
  authenticate(): Promise<Identity>;
  /** Records a refused line in the audit log. */
  auditRefusal(actor: string, deviceId: string | undefined, e: FleetError): Promise<void>;
  chunkLines?: number;
  maxLineBytes?: number;
}

type LineResult = Record<string, unknown>;

function okLine(n: number, deviceId: string, r: IssueResult): LineResult {
  return {
    line: n,
    deviceId,
    ok: true,
    serial: r.serial,
    fingerprint: r.fingerprint,
    notAfter: r.notAfter.toISOString(),
    reused: r.reused,
    certificate: certToPem(r.der),
  };
}

function errLine(n: number, deviceId: string | undefined, e: FleetError): LineResult {
  return { line: n, ...(deviceId !== undefined ? { deviceId } : {}), ok: false, error: e.toPublic() };
}

/** Runs a batch; yields one NDJSON result line per input line (blank lines are skipped), in order. */
export async function* runBatch(
  ctx: BatchContext,
  source: AsyncIterable<Buffer | string>,
): AsyncGenerator<string> {
  const chunkLines = ctx.chunkLines ?? BATCH_CHUNK_LINES;
  let chunk: RawLine[] = [];
  const lines = ndjsonLines(source, ctx.maxLineBytes);
  for (;;) {
    const next = await lines.next();
    if (!next.done) {
      if (next.value.tooLarge || next.value.text!.trim() !== '') chunk.push(next.value);
      if (chunk.length < chunkLines) continue;
    }
    if (chunk.length > 0) {
      const results = await processChunk(ctx, chunk);
      chunk = [];
      yield `${results.map((r) => JSON.stringify(r)).join('\n')}\n`;
    }
    if (next.done) return;
  }
}

async function processChunk(ctx: BatchContext, chunk: RawLine[]): Promise<LineResult[]> {
  const out: LineResult[] = new Array(chunk.length);
  let caller: Identity;
  try {
    caller = await ctx.authenticate();
  } catch (e) {
    const err = toFleetError(e);
    return chunk.map((l) => errLine(l.n, undefined, err));
  }
  const actor = ref('station', caller.id);
  const station = await ctx.enrollment.stationFor(caller);
  const good: { i: number; deviceId: string; req: Parameters<Enrollment['issueChunk']>[1][number] }[] = [];
  const refusals: Promise<void>[] = [];
  chunk.forEach((l, i) => {
    let deviceId: string | undefined;
    try {
      if (l.tooLarge)
        throw new ProvisioningError('LINE_TOO_LARGE', `the line is over ${BATCH_LINE_MAX_BYTES} bytes`, {
          details: { limit: ctx.maxLineBytes ?? BATCH_LINE_MAX_BYTES },
        });
      const input = parseEnrollmentLine(l.text!);
      deviceId = input.deviceId;
      if (station instanceof Error) throw station;
      good.push({ i, deviceId, req: ctx.enrollment.check(station, caller, input) });
    } catch (e) {
      const err = toFleetError(e);
      out[i] = errLine(l.n, deviceId, err);
      refusals.push(ctx.auditRefusal(actor, deviceId, err));
    }
  });
  if (good.length > 0 && !(station instanceof Error)) {
    const results = await ctx.enrollment.issueChunk(
      station,
      good.map((g) => g.req),
    );
    results.forEach((r, k) => {
      const g = good[k]!;
      const n = chunk[g.i]!.n;
      if (r instanceof FleetError) {
        out[g.i] = errLine(n, g.deviceId, r);
        refusals.push(ctx.auditRefusal(actor, g.deviceId, r));
      } else {
        out[g.i] = okLine(n, g.deviceId, r);
      }
    });
  }
  await Promise.all(refusals);
  return out;
}
