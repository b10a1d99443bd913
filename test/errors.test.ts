/**
 * The error scheme (pki/error-scheme.ts) and its catalogue (docs/errors.md): one declaration per code, the
 * committed catalogue current, no code declared twice with different meanings, every code a source throws
 * declared.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConnectRefused } from '../broker/errors.ts';
import { allDeclarations, CATALOGUE_PATH, ERROR_TABLES, renderCatalogue } from '../cli/error-catalogue.ts';
import { UsageError } from '../cli/errors.ts';
import { DerError } from '../pki/der.ts';
import { defineErrors, FleetError } from '../pki/error-scheme.ts';
import { PkiError } from '../pki/errors.ts';
import { ProvisioningError } from '../provisioning/errors.ts';
import { RegistryError } from '../registry/errors.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Folders that hold sources (not tests, not dependencies). */
const SOURCE_DIRS = [
  'pki',
  'config',
  'registry',
  'broker',
  'provisioning',
  'console',
  'device-sim',
  'runtime',
  'cli',
];

async function sourceFiles(): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string) {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.ts')) out.push(p);
    }
  }
  for (const d of SOURCE_DIRS) await walk(join(ROOT, d)).catch(() => undefined);
  return out;
}

describe('declaring errors', () => {
  it('a declared error takes its status, return code, part and default message from its declaration', () => {
    const e = new ProvisioningError('DEVICE_KEY_CONFLICT');
    expect(e).toBeInstanceOf(ProvisioningError);
    expect(e).toBeInstanceOf(FleetError);
    expect(e).toMatchObject({ code: 'DEVICE_KEY_CONFLICT', httpStatus: 409, part: 'provisioning' });
    expect(e.message).toBe('the device id is enrolled with another key than the one sent');
    const r = new RegistryError('SUBJECT_NOT_FOUND', 'no device d1', { details: { id: 'd1' } });
    expect(r.toPublic()).toEqual({
      code: 'SUBJECT_NOT_FOUND',
      message: 'no device d1',
      details: { id: 'd1' },
    });
    expect(r.httpStatus).toBe(404);
  });

  it('the errors that stood outside the scheme are in it, each instanceof its part', () => {
    const refused = new ConnectRefused('keepalive_out_of_bounds');
    expect(refused).toMatchObject({
      code: 'BROKER_CONNECT_KEEPALIVE_OUT_OF_BOUNDS',
      connackCode: 2,
      part: 'broker',
    });
    expect(new ConnectRefused('registry_unavailable').connackCode).toBe(3);
    expect(new ConnectRefused('revoked').connackCode).toBe(5);
    const der = new DerError('truncated');
    expect(der).toBeInstanceOf(PkiError);
    expect(der).toMatchObject({ code: 'DER_INVALID', httpStatus: 400, message: 'truncated' });
    expect(new UsageError('bad flag')).toMatchObject({ code: 'USAGE_INVALID', part: 'cli' });
  });

  it.each([
    ['a code that is not UPPER_SNAKE', { bad_code: { status: 400, message: 'm' } }],
    ['neither a status nor a return code', { NO_STATUS: { message: 'm' } }],
    ['a status that is not an error', { OK_STATUS: { status: 200, message: 'm' } }],
    ['a return code of 0 (accepted)', { ACCEPTED: { connack: 0, message: 'm' } }],
    ['an empty message', { EMPTY: { status: 400, message: ' ' } }],
  ])('a declaration with %s is refused when the module loads', (_name, specs) => {
    expect(() => defineErrors('part', specs)).toThrow(/defineErrors/);
  });
});

describe('the catalogue (docs/errors.md)', () => {
  it('the committed file is what `npm run errors:catalogue` writes', async () => {
    const committed = await readFile(CATALOGUE_PATH, 'utf8');
    expect(committed, 'run npm run errors:catalogue and commit docs/errors.md').toBe(renderCatalogue());
  });

  it("lists every part's table: every errors.ts exports its table, and the catalogue holds it", async () => {
    const files = (await sourceFiles()).filter(
      (f) => f.endsWith('/errors.ts') && !f.endsWith('pki/error-scheme.ts'),
    );
    expect(files.length).toBeGreaterThanOrEqual(8);
    for (const f of files) {
      const mod = (await import(pathToFileURL(f).href)) as Record<string, unknown>;
      const tables = Object.values(mod).filter(
        (v): v is (typeof ERROR_TABLES)[number] =>
          typeof v === 'object' && v !== null && 'declarations' in v && 'part' in v,
      );
      expect(tables.length, `${relative(ROOT, f)} declares its codes with defineErrors`).toBeGreaterThan(0);
      for (const t of tables) expect(ERROR_TABLES, `${t.part} is in cli/error-catalogue.ts`).toContain(t);
    }
  });

  it('no code is declared twice with different meanings', () => {
    const seen = new Map<string, { part: string; status?: number; connack?: number; message: string }>();
    const clashes: string[] = [];
    for (const d of allDeclarations()) {
      const first = seen.get(d.code);
      if (!first) {
        seen.set(d.code, d as never);
        continue;
      }
      if (first.part === d.part) clashes.push(`${d.code} twice in ${d.part}`);
      else if (first.status !== d.status || first.connack !== d.connack || first.message !== d.message)
        clashes.push(`${d.code}: ${first.part} and ${d.part} differ`);
    }
    expect(clashes).toEqual([]);
    expect(seen.size).toBeGreaterThan(100);
  });
});

/** Node's own error codes, which sources compare `.code` against (ENOENT, ERR_TLS_…). */
const NODE_CODE = /^(E[A-Z]+|ERR_[A-Z0-9_]+)$/;

/** The codes a source names where it throws or checks an error. */
function codesNamed(text: string): string[] {
  const found: string[] = [];
  const patterns = [
    // new ProvisioningError('QUERY_INVALID', …), new CliError('CSR_UNREADABLE', …), super('…', …)
    /new\s+\w*(?:Error|Refused)\(\s*'([A-Z][A-Z0-9_]*)'/g,
    /\bsuper\(\s*'([A-Z][A-Z0-9_]*)'/g,
    // e.code === 'DEVICE_EXISTS', isFleetError(e, 'CSR_MALFORMED'), { code: 'ROUTE_NOT_FOUND', … }
    /\.code\s*[!=]==?\s*'([A-Z][A-Z0-9_]*)'/g,
    /isFleetError\([^,()]+,\s*'([A-Z][A-Z0-9_]*)'\)/g,
    /\bcode:\s*'([A-Z][A-Z0-9_]*)'/g,
    // e?.code ?? 'API_ERROR'
    /code\s*\?\?\s*'([A-Z][A-Z0-9_]*)'/g,
  ];
  for (const re of patterns) for (const m of text.matchAll(re)) found.push(m[1]!);
  return found.filter((c) => !NODE_CODE.test(c));
}

describe('every code a source throws is declared', () => {
  it('the codes named in throws, checks and answers are all in the catalogue', async () => {
    const declared = new Set(allDeclarations().map((d) => d.code));
    const undeclared: string[] = [];
    let named = 0;
    for (const f of await sourceFiles()) {
      const text = await readFile(f, 'utf8');
      for (const code of codesNamed(text)) {
        named++;
        if (!declared.has(code)) undeclared.push(`${relative(ROOT, f)}: ${code}`);
      }
    }
    expect(undeclared).toEqual([]);
    // The scan finds what it must: a test that found nothing would pass for the wrong reason.
    expect(named).toBeGreaterThan(100);
  });

  it('no source builds a FleetError from a bare code: each part throws its own declared class', async () => {
    const bare: string[] = [];
    for (const f of await sourceFiles()) {
      const text = await readFile(f, 'utf8');
      if (/new\s+FleetError\(/.test(text)) bare.push(relative(ROOT, f));
    }
    expect(bare).toEqual([]);
  });

  it('the scan sees the forms it looks for', () => {
    const sample = [
      "throw new ProvisioningError('QUERY_INVALID', 'x');",
      "if (e.code === 'DEVICE_EXISTS') {}",
      "if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;",
      "isFleetError(err, 'CSR_MALFORMED')",
      "error: { code: 'ROUTE_NOT_FOUND', message: 'm' }",
      "new FleetError(e?.code ?? 'API_ERROR', m)",
      "throw new FleetError('NOT_DECLARED_ANYWHERE', 'm')",
    ].join('\n');
    expect(codesNamed(sample).sort()).toEqual(
      [
        'API_ERROR',
        'CSR_MALFORMED',
        'DEVICE_EXISTS',
        'NOT_DECLARED_ANYWHERE',
        'QUERY_INVALID',
        'ROUTE_NOT_FOUND',
      ].sort(),
    );
  });
});
