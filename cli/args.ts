/**
 * Flag parsing and checks shared by the commands. Subcommand flags are parsed strictly: an unknown flag
 * is a usage error.
 */
import { parseArgs } from 'node:util';
import { isRevocationReason, OPERATOR_REASONS } from '../pki/crl.ts';
import { assertValidId } from '../pki/ids.ts';
import { UsageError } from './command.ts';

/** Parses a command's string flags strictly (besides --data and --json). */
export function flags(
  argv: string[],
  names: string[],
): { values: Record<string, string | undefined>; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    data: { type: 'string' },
    json: { type: 'boolean' },
  };
  for (const n of names) options[n] = { type: 'string' };
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    const out: Record<string, string | undefined> = {};
    for (const n of names) out[n] = values[n] as string | undefined;
    return { values: out, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export type Values = Record<string, string | boolean | undefined>;

/** Parses the flags of a command that goes through the API (cli/api.ts): --local and --remote too. */
export function apiFlags(argv: string[], strings: string[], booleans: string[] = []) {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    data: { type: 'string' },
    json: { type: 'boolean' },
    local: { type: 'boolean' },
    remote: { type: 'boolean' },
  };
  for (const n of strings) options[n] = { type: 'string' };
  for (const n of booleans) options[n] = { type: 'boolean' };
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Values, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export const num = (v: unknown, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a non-negative number`);
  return n;
};

export const reasonOf = (v: unknown): string => {
  const reason = (v as string | undefined) ?? 'unspecified';
  if (!isRevocationReason(reason) || !OPERATOR_REASONS.includes(reason))
    throw new UsageError(`--reason must be one of ${OPERATOR_REASONS.join(', ')}`);
  return reason;
};

/** The query string for the flags in `map` (flag -> query parameter) that were given. */
export function query(values: Values, map: Record<string, string>): string {
  const q = new URLSearchParams();
  for (const [flag, param] of Object.entries(map)) {
    const v = values[flag];
    if (typeof v === 'string') q.set(param, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function idArg(positionals: string[], what: string, usage: string): string {
  const id = positionals[0];
  if (!id) throw new UsageError(`${usage} needs the ${what} id`);
  assertValidId(id, `${what} id`);
  return id;
}

export const splitList = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export function quotaOf(v: unknown): number | null {
  if (v === 'none' || v === 'unlimited') return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError('--quota must be a non-negative integer or "none"');
  return n;
}

export function isoOf(v: string, name: string): string {
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new UsageError(`${name} must be a date/time (ISO 8601)`);
  return new Date(t).toISOString();
}
