/**
 * The `fleet` command line: every mistake is Fleet's own message with a stable code (exit 2), names the
 * flag, the rule and the value, suggests the nearest flag or command, and changes nothing (the data
 * directory is not even created). Every command and subcommand has a help with every flag and an example.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nearest, parse, SUBJECT_STATUSES } from '../cli/args.ts';
import type { Command } from '../cli/command.ts';
import { runCli } from '../cli/main.ts';
import { COMMANDS } from '../cli/table.ts';
import { OPERATOR_REASONS } from '../pki/crl.ts';
import { SUBJECT_STATUSES as REGISTRY_STATUSES } from '../registry/schema.ts';
import { csrPem, generateKey, nodeCsr } from './helpers/pki.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

let base: string;
let data: string;

async function fleet(...args: string[]) {
  const out = new Capture();
  const err = new Capture();
  const code = await runCli([...args, '--data', data], {}, { out, err });
  return { code, out: out.text, err: err.text };
}

async function fleetJson(...args: string[]) {
  const r = await fleet(...args, '--json');
  return { ...r, json: JSON.parse(r.out || 'null') };
}

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'fleet-cli-args-'));
  // Never created: every case below is refused before anything is touched.
  data = join(base, 'data');
});

afterAll(async () => {
  expect(existsSync(data)).toBe(false);
  await rm(base, { recursive: true, force: true });
});

describe('a command name that is not a command', () => {
  // Names inherited from Object.prototype once reached `entry.load()` and exited 70 (internal error).
  it.each([['toString'], ['constructor'], ['hasOwnProperty'], ['__proto__'], ['valueOf']])(
    'fleet %s is an unknown command (exit 2), not an internal error',
    async (name) => {
      const r = await fleetJson(name);
      expect(r.code, r.err).toBe(2);
      expect(r.json.error.code).toBe('USAGE_UNKNOWN_COMMAND');
      expect(r.err).not.toContain('internal error');
    },
  );

  it.each([
    ['device', 'constructor'],
    ['station', 'toString'],
    ['device', '__proto__'],
  ])('fleet %s %s is an unknown subcommand', async (cmd, sub) => {
    const r = await fleetJson(cmd, sub);
    expect(r.code, r.err).toBe(2);
    expect(r.json.error.code).toBe('USAGE_UNKNOWN_COMMAND');
  });

  it.each([
    [['devcie', 'list'], 'did you mean device?'],
    [['exipring'], 'did you mean expiring?'],
    [['device', 'lsit'], 'did you mean list?'],
    [['station', 'revok', 'x'], 'did you mean revoke?'],
  ])('fleet %j suggests the nearest: %s', async (args, hint) => {
    const r = await fleet(...args);
    expect(r.code).toBe(2);
    expect(r.err).toContain(hint);
  });
});

describe('unknown and misspelt flags are refused, never ignored, with the nearest flag suggested', () => {
  it.each([
    [['sim', '--devcies', '5'], '--devcies', '--devices'],
    [['device', 'issue', '--csv', 'x.csr'], '--csv', '--csr'],
    [['device', 'list', '--stauts', 'active'], '--stauts', '--status'],
    [['expiring', '--day', '5'], '--day', '--days'],
    [['crl', '--ca=device', '--outt', 'x'], '--outt', '--out'],
    [['audit', '--subjet', 'device:x'], '--subjet', '--subject'],
    [['station', 'create', 'l1', '--product', 'p'], '--product', '--products'],
    [['broker', '--workers', '2'], '--workers', undefined],
    [['up', '--port', '1883'], '--port', undefined],
    [['init', '-f'], '-f', undefined],
  ])('fleet %j: %s', async (args, flag, suggestion) => {
    const r = await fleetJson(...args);
    expect(r.code, r.err).toBe(2);
    expect(r.json.error.code).toBe('USAGE_UNKNOWN_FLAG');
    expect(r.json.error.details.flag).toBe(flag);
    expect(r.err).toContain(`no flag ${flag}`);
    if (suggestion) expect(r.err).toContain(`did you mean ${suggestion}?`);
    expect(r.err).toMatch(/--help shows more/);
  });
});

describe('bad values name the flag, the rule and the value', () => {
  const cases: { args: string[]; code: string; says: string[] }[] = [
    {
      args: ['expiring', '--days', '-5'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--days must not be negative', '"-5"'],
    },
    { args: ['expiring', '--days=-5'], code: 'USAGE_FLAG_VALUE', says: ['--days must not be negative'] },
    {
      args: ['expiring', '--days', 'soon'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--days must be a whole number', '"soon"'],
    },
    {
      args: ['device', 'list', '--limit', '0'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--limit must be at least 1'],
    },
    {
      args: ['device', 'list', '--limit', '5000'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--limit must be at most 1000'],
    },
    {
      args: ['device', 'list', '--status', 'bogus'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--status must be one of: active, suspended, revoked', '"bogus"'],
    },
    {
      args: ['device', 'revoke', 'dev-1', '--reason', 'whim'],
      code: 'USAGE_FLAG_VALUE',
      says: [`--reason must be one of: ${OPERATOR_REASONS.join(', ')}`],
    },
    {
      args: ['crl', '--ca', 'root'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--ca must be one of: device, infrastructure'],
    },
    {
      args: ['audit', '--from', 'yesterday'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--from must be a date and time'],
    },
    {
      args: ['station', 'create', 'l1', '--quota', '-1'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--quota must be', '"-1"'],
    },
    {
      args: ['sim', '--devices', '-5'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--devices: must be at least 1, got -5'],
    },
    {
      args: ['sim', '--storm', 'big'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--storm: must be full, resumed or both'],
    },
    { args: ['device', 'issue', '--id'], code: 'USAGE_FLAG_VALUE', says: ['--id needs a value (ID)'] },
    {
      args: ['device', 'issue', '--id', '--product', 'p'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--id needs a value'],
    },
    {
      args: ['device', 'list', '--json', '--json'],
      code: 'USAGE_FLAG_VALUE',
      says: ['--json is given twice'],
    },
    { args: ['init', '--json=yes'], code: 'USAGE_FLAG_VALUE', says: ['--json takes no value'] },
    {
      args: ['device', 'issue', '--id', 'dev-1'],
      code: 'USAGE_MISSING',
      says: [
        'needs --product PRODUCT, --csr FILE',
        'usage: fleet device issue --id ID --product PRODUCT --csr FILE',
      ],
    },
    { args: ['device', 'show'], code: 'USAGE_MISSING', says: ['fleet device show needs ID'] },
    { args: ['device', 'show', 'a', 'b'], code: 'USAGE_UNEXPECTED_ARGUMENT', says: ['extra "b"'] },
    {
      args: ['expiring', 'soon'],
      code: 'USAGE_UNEXPECTED_ARGUMENT',
      says: ['takes no argument, got "soon"'],
    },
    { args: ['sim', 'fast'], code: 'USAGE_UNEXPECTED_ARGUMENT', says: ['takes no argument'] },
  ];
  it.each(cases)('fleet $args → $code', async ({ args, code, says }) => {
    const r = await fleetJson(...args);
    expect(r.code, r.err).toBe(2);
    expect(r.json.error.code).toBe(code);
    for (const s of says) expect(r.err).toContain(s);
  });

  it('a CSR whose CN disagrees with --id is refused naming both values, before anything is written', async () => {
    const csrFile = join(base, 'dev-2.csr');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(csrFile, csrPem(nodeCsr(generateKey('P-256'), 'dev-9')));
    const r = await fleetJson('device', 'issue', '--id', 'dev-2', '--product', 'thermo', '--csr', csrFile);
    expect(r.code, r.err).toBe(1);
    expect(r.json.error.code).toBe('CSR_SUBJECT_MISMATCH');
    expect(r.err).toContain('"dev-9"');
    expect(r.err).toContain('"dev-2"');
  });
});

/** Every (sub)command, by the words after `fleet`, with the command that runs it. */
async function everyCommand(): Promise<{ words: string[]; command: Command; sub?: string }[]> {
  const all: { words: string[]; command: Command; sub?: string }[] = [];
  for (const [name, entry] of Object.entries(COMMANDS)) {
    const { command } = await entry.load();
    all.push({ words: [name], command });
    for (const sub of Object.keys(command.subcommands ?? {})) all.push({ words: [name, sub], command, sub });
  }
  return all;
}

describe('help', () => {
  it('fleet --help, -h and help list every command; fleet alone prints them to stderr and exits 2', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = await fleet(...args);
      expect(r.code).toBe(0);
      for (const name of Object.keys(COMMANDS)) expect(r.out).toContain(`  ${name} `);
    }
    const bare = await runCli([], {}, { out: new Capture(), err: new Capture() });
    expect(bare).toBe(2);
  });

  it('every command and subcommand has its own help with every flag it takes and an example', async () => {
    const all = await everyCommand();
    expect(all.length).toBeGreaterThan(35);
    for (const { words, command, sub } of all) {
      for (const ask of [
        [...words, '--help'],
        [...words, '-h'],
        ['help', ...words],
      ]) {
        const r = await fleet(...ask);
        expect(r.code, `${ask.join(' ')}: ${r.err}`).toBe(0);
        expect(r.out, ask.join(' ')).toMatch(new RegExp(`usage: fleet ${words.join(' ')}\\b`));
        expect(r.out, ask.join(' ')).toMatch(/\nexamples?\n {2}\S/);
        expect(r.out, ask.join(' ')).toContain('--data DIR');
      }
      const spec = sub ? command.subcommands![sub]!.spec : command.spec;
      const help = (await fleet(...words, '--help')).out;
      for (const flag of Object.keys(spec?.flags ?? {}))
        expect(help, `${words.join(' ')} --${flag}`).toContain(`--${flag}`);
      if (spec?.api) expect(help).toContain('--remote');
    }
  });

  it('fleet sim --help lists every flag the simulator takes', async () => {
    const { STRING_FLAGS, BOOLEAN_FLAGS } = await import('../device-sim/flags.ts');
    const r = await fleet('sim', '--help');
    expect(r.code).toBe(0);
    for (const f of [...STRING_FLAGS, ...BOOLEAN_FLAGS]) expect(r.out, f).toContain(`--${f}`);
  });

  it('enum flags list their values in the help', async () => {
    const r = await fleet('device', 'list', '--help');
    expect(r.out).toContain('--status active|suspended|revoked');
    expect((await fleet('device', 'revoke', '--help')).out).toContain(OPERATOR_REASONS.join('|'));
  });
});

describe('the parser', () => {
  it('suggests by edit distance (swaps count once) or by a unique prefix, and nothing when far', () => {
    expect(nearest('devcies', ['devices', 'telemetry'])).toBe('devices');
    expect(nearest('tele', ['devices', 'telemetry'])).toBe('telemetry');
    expect(nearest('zzzzzz', ['devices', 'telemetry'])).toBeUndefined();
  });

  it('takes --flag=value, values starting with a dash, and -- before arguments', () => {
    const spec = {
      name: 't',
      summary: 't',
      args: [{ name: 'X', help: '' }],
      flags: { n: { type: 'int' as const, help: '' }, s: { type: 'string' as const, help: '' } },
      examples: [],
    };
    expect(parse(spec, ['--n=3', '--s', '-x']).values).toMatchObject({ n: 3, s: '-x' });
    expect(parse(spec, ['--', '--not-a-flag']).args).toEqual(['--not-a-flag']);
  });

  it("the CLI's device statuses are the registry's", () => {
    expect([...SUBJECT_STATUSES]).toEqual([...REGISTRY_STATUSES]);
  });
});
