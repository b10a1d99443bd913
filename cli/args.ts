/**
 * Command lines as data: each command and subcommand declares its flags and arguments once (a `Spec`),
 * and that one declaration both parses strictly and writes the command's `--help`.
 *
 * The rules, the same for every command:
 * - an unknown flag is an error, never ignored, with the nearest known flag suggested (`--devcies` →
 *   `--devices`); so is an argument the command does not take, and a flag given twice;
 * - `--flag value` and `--flag=value`; a value may start with `-` (so `--days -5` reaches the number
 *   check and is refused as negative, instead of being read as a flag);
 * - typed values are checked here with messages that name the flag, the rule and the value given:
 *   whole numbers with their bounds, enums listing every allowed value, dates (ISO 8601);
 * - `-h`/`--help` anywhere shows the help and runs nothing.
 */
import { isRevocationReason, OPERATOR_REASONS } from '../pki/crl.ts';
import { assertValidId } from '../pki/ids.ts';
import { UsageError } from './errors.ts';

export interface FlagSpec {
  readonly type: 'string' | 'boolean' | 'int' | 'enum' | 'time';
  /** The value's placeholder in the help (`FILE`, `N`); enums show their values. */
  readonly arg?: string;
  readonly help: string;
  /** For `enum`: every allowed value. */
  readonly values?: readonly string[];
  /** For `int`: inclusive bounds. */
  readonly min?: number;
  readonly max?: number;
  readonly required?: boolean;
  /** The default, as the help shows it. */
  readonly default?: string;
}

export interface ArgSpec {
  readonly name: string;
  readonly help: string;
  readonly required?: boolean;
}

export interface Spec {
  /** `device issue`: the words after `fleet`. */
  readonly name: string;
  /** One line, for the command lists. */
  readonly summary: string;
  /** Paragraphs for the help, after the usage line. */
  readonly description?: string;
  readonly args?: readonly ArgSpec[];
  readonly flags?: Readonly<Record<string, FlagSpec>>;
  /** A command that goes through the provisioning API (cli/api.ts): --local and --remote too. */
  readonly api?: boolean;
  readonly examples: readonly string[];
}

export type Value = string | number | boolean | undefined;
export type Values = Record<string, Value>;

export interface Parsed {
  readonly values: Values;
  readonly args: string[];
  readonly help: boolean;
}

/** Flags every command takes. */
export const COMMON_FLAGS: Readonly<Record<string, FlagSpec>> = {
  data: { type: 'string', arg: 'DIR', help: 'the data directory', default: './data, or FLEET_DATA_DIR' },
  json: { type: 'boolean', help: 'answer in JSON on stdout (errors too)' },
  help: { type: 'boolean', help: 'this help' },
};

/** Flags of the commands that go through the provisioning API. */
export const API_FLAGS: Readonly<Record<string, FlagSpec>> = {
  local: {
    type: 'boolean',
    help: 'run the provisioning service in-process for this one command (only while none runs)',
  },
  remote: {
    type: 'boolean',
    help: 'only the running service (FLEET_API_URL or the local one): never start one in-process',
  },
};

function allFlags(spec: Spec): Record<string, FlagSpec> {
  return { ...spec.flags, ...(spec.api ? API_FLAGS : {}), ...COMMON_FLAGS };
}

/**
 * The candidate nearest to `word`, when one is close: within an edit distance of about a third of its
 * length (adjacent swaps count once), or the only candidate that starts with it.
 */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  if (best !== undefined && bestD <= Math.max(1, Math.floor(w.length / 3))) return best;
  const prefixed = w.length >= 2 ? candidates.filter((c) => c.toLowerCase().startsWith(w)) : [];
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** Optimal string alignment distance (Levenshtein with adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

const didYouMean = (s: string | undefined) => (s ? `; did you mean ${s}?` : '');

function convert(spec: Spec, name: string, f: FlagSpec, raw: string): Value {
  const flag = `--${name}`;
  const bad = (rule: string) =>
    new UsageError(`${flag} ${rule}, got ${JSON.stringify(raw)}`, {
      code: 'USAGE_FLAG_VALUE',
      details: { flag, value: raw },
      helpFor: spec.name,
      usage: usageLine(spec),
    });
  switch (f.type) {
    case 'int': {
      if (!/^[+-]?\d+$/.test(raw.trim())) throw bad('must be a whole number');
      const n = Number(raw);
      if (f.min !== undefined && n < f.min)
        throw bad(f.min === 0 ? 'must not be negative' : `must be at least ${f.min}`);
      if (f.max !== undefined && n > f.max) throw bad(`must be at most ${f.max}`);
      return n;
    }
    case 'enum':
      if (!f.values!.includes(raw)) throw bad(`must be one of: ${f.values!.join(', ')}`);
      return raw;
    case 'time': {
      const t = Date.parse(raw);
      if (Number.isNaN(t)) throw bad('must be a date and time (ISO 8601, e.g. 2026-01-31T12:00:00Z)');
      return new Date(t).toISOString();
    }
    default:
      if (raw === '') throw bad('needs a value');
      return raw;
  }
}

/** Parses `argv` (the words after the command's name) by `spec`. */
export function parse(spec: Spec, argv: readonly string[]): Parsed {
  const known = allFlags(spec);
  if (argv.some((a) => a === '-h' || a === '--help')) return { values: {}, args: [], help: true };
  const values: Values = {};
  const args: string[] = [];
  const unknown = (given: string) => {
    const near = nearest(given.replace(/^-+/, ''), Object.keys(known));
    return new UsageError(`fleet ${spec.name} has no flag ${given}${didYouMean(near && `--${near}`)}`, {
      code: 'USAGE_UNKNOWN_FLAG',
      details: { flag: given, nearest: near && `--${near}` },
      helpFor: spec.name,
      usage: usageLine(spec),
    });
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const f = Object.hasOwn(known, name) ? known[name] : undefined;
      if (!f) throw unknown(eq < 0 ? a : a.slice(0, eq));
      if (values[name] !== undefined)
        throw new UsageError(`--${name} is given twice`, {
          code: 'USAGE_FLAG_VALUE',
          details: { flag: `--${name}` },
          helpFor: spec.name,
          usage: usageLine(spec),
        });
      if (f.type === 'boolean') {
        if (eq >= 0)
          throw new UsageError(`--${name} takes no value`, {
            code: 'USAGE_FLAG_VALUE',
            details: { flag: `--${name}` },
            helpFor: spec.name,
            usage: usageLine(spec),
          });
        values[name] = true;
        continue;
      }
      let raw: string | undefined;
      if (eq >= 0) raw = a.slice(eq + 1);
      else {
        raw = argv[i + 1];
        // The next word is this flag's value unless it is another flag (`--csr --out x`: --csr has none).
        if (raw === undefined || raw.startsWith('--')) raw = undefined;
        else i++;
      }
      if (raw === undefined)
        throw new UsageError(`--${name} needs a value (${flagArg(f)})`, {
          code: 'USAGE_FLAG_VALUE',
          details: { flag: `--${name}` },
          helpFor: spec.name,
          usage: usageLine(spec),
        });
      values[name] = convert(spec, name, f, raw);
      continue;
    }
    // A single dash followed by a letter is a flag Fleet does not have (only -h); `-5` is an argument.
    if (/^-[A-Za-z]/.test(a)) throw unknown(a);
    args.push(a);
  }
  const max = spec.args?.length ?? 0;
  if (args.length > max) {
    const extra = args[max]!;
    throw new UsageError(
      max === 0
        ? `fleet ${spec.name} takes no argument, got ${JSON.stringify(extra)}`
        : `fleet ${spec.name} takes ${spec.args!.map((x) => x.name).join(' ')}, then flags; got an extra ${JSON.stringify(extra)}`,
      {
        code: 'USAGE_UNEXPECTED_ARGUMENT',
        details: { argument: extra },
        helpFor: spec.name,
        usage: usageLine(spec),
      },
    );
  }
  const missing = [
    ...(spec.args ?? []).filter((x, k) => x.required && args[k] === undefined).map((x) => x.name),
    ...Object.entries(spec.flags ?? {})
      .filter(([n, f]) => f.required && values[n] === undefined)
      .map(([n, f]) => `--${n} ${flagArg(f)}`),
  ];
  if (missing.length)
    throw new UsageError(`fleet ${spec.name} needs ${missing.join(', ')}`, {
      code: 'USAGE_MISSING',
      details: { missing },
      helpFor: spec.name,
      usage: usageLine(spec),
    });
  return { values, args, help: false };
}

function flagArg(f: FlagSpec): string {
  if (f.type === 'enum') return f.values!.join('|');
  return f.arg ?? (f.type === 'int' ? 'N' : f.type === 'time' ? 'TIME' : 'VALUE');
}

function flagLines(flags: Record<string, FlagSpec>): string[] {
  const heads = Object.entries(flags).map(([n, f]) => [
    n === 'help' ? '-h, --help' : f.type === 'boolean' ? `--${n}` : `--${n} ${flagArg(f)}`,
    f,
  ]);
  const width = Math.min(34, Math.max(...heads.map(([h]) => (h as string).length)));
  return heads.map(([h, f]) => {
    const fs = f as FlagSpec;
    const notes = [fs.required ? 'required' : '', fs.default ? `default ${fs.default}` : '']
      .filter(Boolean)
      .join('; ');
    const text = `${fs.help}${notes ? ` (${notes})` : ''}`;
    const head = h as string;
    return head.length > width
      ? `  ${head}\n  ${' '.repeat(width)}  ${text}`
      : `  ${head.padEnd(width)}  ${text}`;
  });
}

/** A usage line: the command, its arguments and its required flags, then [flags]. */
export function usageLine(spec: Spec): string {
  const args = (spec.args ?? []).map((a) => (a.required ? a.name : `[${a.name}]`));
  const required = Object.entries(spec.flags ?? {})
    .filter(([, f]) => f.required)
    .map(([n, f]) => `--${n} ${flagArg(f)}`);
  return ['usage: fleet', spec.name, ...args, ...required, '[flags]'].join(' ');
}

/** The command's `--help`: usage, what it does, arguments, every flag, examples. */
export function helpText(spec: Spec): string {
  const lines = [usageLine(spec), '', spec.summary.replace(/^./, (c) => c.toUpperCase())];
  if (spec.description) lines.push('', spec.description);
  if (spec.args?.length) {
    const w = Math.max(...spec.args.map((a) => a.name.length));
    lines.push('', 'arguments', ...spec.args.map((a) => `  ${a.name.padEnd(w)}  ${a.help}`));
  }
  if (spec.flags && Object.keys(spec.flags).length) lines.push('', 'flags', ...flagLines({ ...spec.flags }));
  lines.push('', 'common flags', ...flagLines({ ...(spec.api ? API_FLAGS : {}), ...COMMON_FLAGS }));
  lines.push('', spec.examples.length > 1 ? 'examples' : 'example', ...spec.examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}

// ------------------------------------------------------------------------------------- shared values

/**
 * The registry's SUBJECT_STATUSES (registry/schema.ts), repeated here so that `fleet device list` does not
 * load the ORM to list three words; test/cli-args.test.ts checks the two agree.
 */
export const SUBJECT_STATUSES = ['active', 'suspended', 'revoked'] as const;

export const reasonOf = (v: Value): string => {
  const reason = (v as string | undefined) ?? 'unspecified';
  if (!isRevocationReason(reason) || !OPERATOR_REASONS.includes(reason))
    throw new UsageError(
      `--reason must be one of: ${OPERATOR_REASONS.join(', ')}; got ${JSON.stringify(reason)}`,
      {
        code: 'USAGE_FLAG_VALUE',
        details: { flag: '--reason', value: reason },
      },
    );
  return reason;
};

/** The query string for the flags in `map` (flag -> query parameter) that were given. */
export function query(values: Values, map: Record<string, string>): string {
  const q = new URLSearchParams();
  for (const [flag, param] of Object.entries(map)) {
    const v = values[flag];
    if (v !== undefined && v !== false) q.set(param, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The id argument, checked by the id rules (ID_INVALID names what is wrong). */
export function idOf(args: string[], what: string): string {
  const id = args[0]!;
  assertValidId(id, `${what} id`);
  return id;
}

export const splitList = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export function quotaOf(v: Value): number | null {
  if (v === 'none' || v === 'unlimited') return null;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isSafeInteger(n))
    throw new UsageError(
      `--quota must be a whole number of enrollments per hour, or none; got ${JSON.stringify(v)}`,
      {
        code: 'USAGE_FLAG_VALUE',
        details: { flag: '--quota', value: v },
      },
    );
  return n;
}

// ------------------------------------------------------------------------------ for ad hoc commands

/**
 * Parses a command that declares no Spec: the string flags `names` (and --data, --json), strictly, with
 * the same messages. Prefer a Spec: it writes the help too.
 */
export function flags(
  argv: string[],
  names: string[],
  name = 'command',
): { values: Record<string, string | undefined>; positionals: string[] } {
  const spec: Spec = {
    name,
    summary: '',
    args: argv.map(() => ({ name: 'ARG', help: '' })),
    flags: Object.fromEntries(names.map((n) => [n, { type: 'string', help: '' } as FlagSpec])),
    examples: [],
  };
  const p = parse(spec, argv);
  return { values: p.values as Record<string, string | undefined>, positionals: p.args };
}

/** As flags(), for a command that goes through the API (--local and --remote too), with boolean flags. */
export function apiFlags(argv: string[], strings: string[], booleans: string[] = [], name = 'command') {
  const spec: Spec = {
    name,
    summary: '',
    api: true,
    args: argv.map(() => ({ name: 'ARG', help: '' })),
    flags: Object.fromEntries([
      ...strings.map((n) => [n, { type: 'string', help: '' } as FlagSpec]),
      ...booleans.map((n) => [n, { type: 'boolean', help: '' } as FlagSpec]),
    ]),
    examples: [],
  };
  const p = parse(spec, argv);
  return { values: p.values, positionals: p.args };
}
