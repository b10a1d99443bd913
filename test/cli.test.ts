/**
 * The `fleet` CLI end to end on the embedded default (PGlite in a temp data dir): issue a device from an
 * openssl CSR, verify it with openssl, revoke it, and check the CLI's CRL makes openssl refuse it. Bad
 * CSRs are refused with their own codes and leave no row.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../cli/main.ts';
import { openRegistry } from '../registry/index.ts';
import { csrPem, generateKey, nodeCsr, openssl, opensslCsr, opensslVerify } from './helpers/pki.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

/** Runs the CLI in-process against `dir`, with an environment that has no FLEET_* or DATABASE_URL. */
async function fleet(dir: string, ...args: string[]) {
  const out = new Capture();
  const err = new Capture();
  const code = await runCli([...args, '--data', dir, '--json'], {}, { out, err });
  let json: unknown;
  try {
    json = JSON.parse(out.text);
  } catch {
    json = undefined;
  }
  return { code, out: out.text, err: err.text, json: json as Record<string, unknown> };
}

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fleet-cli-'));
  const r = await fleet(dir, 'init');
  expect(r.code, r.err).toBe(0);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fleet init', () => {
  it('is idempotent: a second init creates nothing and keeps the same root', async () => {
    const root = await readFile(join(dir, 'ca', 'root.crt.pem'), 'utf8');
    const r = await fleet(dir, 'init');
    expect(r.code).toBe(0);
    expect(r.json.created).toEqual([]);
    expect(await readFile(join(dir, 'ca', 'root.crt.pem'), 'utf8')).toBe(root);
  });

  it('keeps CA keys encrypted and private (mode 0600) and the generated passphrase 0600', async () => {
    const { stat } = await import('node:fs/promises');
    for (const f of ['ca/keys/root.key.pem', 'ca/keys/device-ca.key.pem', 'secrets/ca-passphrase']) {
      expect(((await stat(join(dir, f))).mode & 0o777).toString(8), f).toBe('600');
    }
    expect(await readFile(join(dir, 'ca/keys/root.key.pem'), 'utf8')).toContain('ENCRYPTED PRIVATE KEY');
  });
});

describe('fleet device issue, revoke and crl with openssl', () => {
  it('issues a certificate openssl accepts for TLS clients, and after revocation the CLI CRL makes openssl refuse it', async () => {
    const { csrPath } = await opensslCsr(dir, '/CN=sensor-1');
    const out = join(dir, 'out');
    const issued = await fleet(
      dir,
      'device',
      'issue',
      '--id',
      'sensor-1',
      '--product',
      'thermo',
      '--csr',
      csrPath,
      '--out',
      out,
    );
    expect(issued.code, issued.err).toBe(0);
    expect(issued.json.serial).toMatch(/^[0-9a-f]{32}$/);
    const cert = join(out, 'sensor-1.crt.pem');
    const root = join(dir, 'ca', 'root.crt.pem');
    const chain = join(dir, 'ca', 'device-ca.crt.pem');
    const ok = await opensslVerify(cert, { purpose: 'sslclient', root, chain });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(': OK');

    // Same id, same key: the same certificate back (a retry on the line never mints a second one).
    const again = await fleet(
      dir,
      'device',
      'issue',
      '--id',
      'sensor-1',
      '--product',
      'thermo',
      '--csr',
      csrPath,
    );
    expect(again.code).toBe(0);
    expect(again.json.serial).toBe(issued.json.serial);
    expect(again.json.reused).toBe(true);

    const revoked = await fleet(dir, 'device', 'revoke', 'sensor-1', '--reason', 'keyCompromise');
    expect(revoked.code, revoked.err).toBe(0);
    const crlFile = join(dir, 'device.crl.pem');
    expect((await fleet(dir, 'crl', '--out', crlFile)).code).toBe(0);
    expect(await readFile(crlFile, 'utf8')).toMatch(/^-----BEGIN X509 CRL-----/);
    const bundle = join(dir, 'trust-with-crl.pem');
    await writeFile(
      bundle,
      [await readFile(root, 'utf8'), await readFile(chain, 'utf8'), await readFile(crlFile, 'utf8')].join(''),
    );
    const refused = await opensslVerify(cert, { crl: true, root: bundle });
    expect(refused.code).not.toBe(0);
    expect(refused.stdout + refused.stderr).toContain('certificate revoked');
    const text = await openssl(['crl', '-in', crlFile, '-noout', '-text']);
    expect(text.stdout.toUpperCase()).toContain(String(issued.json.serial).toUpperCase());
    expect(text.stdout).toContain('Key Compromise');

    const shown = await fleet(dir, 'device', 'show', 'sensor-1');
    expect(shown.json.status).toBe('revoked');
    expect(shown.json.revocationReason).toBe('keyCompromise');
  });

  it('writes the CRL as DER when the file name ends in .der', async () => {
    const f = join(dir, 'device.crl.der');
    expect((await fleet(dir, 'crl', '--out', f)).code).toBe(0);
    const r = await openssl(['crl', '-inform', 'DER', '-in', f, '-noout', '-crlnumber']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/crlNumber=0x[0-9A-F]+/);
  });
});

describe('bad input to fleet device issue is refused with its own code and leaves no row', () => {
  const P256 = () => csrPem(nodeCsr(generateKey('P-256'), 'bad-1'));
  const cases: {
    name: string;
    id: string;
    csr: () => string | Buffer | Promise<string | Buffer>;
    code: string;
  }[] = [
    { name: 'garbage bytes', id: 'bad-1', csr: () => randomBytes(300), code: 'CSR_MALFORMED' },
    {
      name: 'a tampered signature',
      id: 'bad-1',
      csr: () => {
        const d = nodeCsr(generateKey('P-256'), 'bad-1');
        d[d.length - 1]! ^= 0x01;
        return csrPem(d);
      },
      code: 'CSR_SIGNATURE_INVALID',
    },
    {
      name: 'an RSA-1024 key',
      id: 'bad-1',
      csr: () => csrPem(nodeCsr(generateKey('RSA-1024'), 'bad-1')),
      code: 'CSR_KEY_TOO_WEAK',
    },
    {
      name: 'an unsupported curve (secp256k1)',
      id: 'bad-1',
      csr: () => csrPem(nodeCsr(generateKey('secp256k1'), 'bad-1')),
      code: 'CSR_CURVE_UNSUPPORTED',
    },
    { name: "an id containing '/'", id: 'a/b', csr: P256, code: 'ID_INVALID' },
    { name: "an id containing '+'", id: 'a+b', csr: P256, code: 'ID_INVALID' },
    { name: "an id containing '#'", id: 'a#b', csr: P256, code: 'ID_INVALID' },
    { name: 'an id containing a control character', id: 'a\u0007b', csr: P256, code: 'ID_INVALID' },
    { name: 'an id over 64 characters', id: 'x'.repeat(65), csr: P256, code: 'ID_INVALID' },
    { name: 'a CN that disagrees with --id', id: 'bad-2', csr: P256, code: 'CSR_SUBJECT_MISMATCH' },
  ];

  it.each(cases)('$name → $code', async ({ id, csr, code }) => {
    const file = join(dir, `bad-${randomBytes(4).toString('hex')}.csr`);
    await writeFile(file, await csr());
    const r = await fleet(dir, 'device', 'issue', '--id', id, '--product', 'thermo', '--csr', file);
    expect(r.code).toBe(1);
    expect((r.json.error as { code: string }).code).toBe(code);
    expect(r.err).toContain(code);
  });

  it('after all of them the registry holds only the one good device', async () => {
    const list = await fleet(dir, 'device', 'list');
    expect(list.code).toBe(0);
    expect((list.json.items as { id: string }[]).map((d) => d.id)).toEqual(['sensor-1']);
  });

  it('a usage error (missing --csr) exits 2 with the usage text', async () => {
    const r = await fleet(dir, 'device', 'issue', '--id', 'x', '--product', 'p');
    expect(r.code).toBe(2);
    expect(r.err).toContain('usage: fleet');
  });
});

describe('the fleet binary', () => {
  it('refuses a second process on the same embedded data dir with REGISTRY_LOCKED', async () => {
    const holder = await openRegistry({ dataDir: dir });
    try {
      const child = spawn(process.execPath, ['bin/fleet.mjs', 'device', 'list', '--data', dir], {
        env: { PATH: process.env.PATH },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (b) => {
        stderr += b;
      });
      const code = await new Promise<number | null>((res) => child.on('close', res));
      expect(code).toBe(1);
      expect(stderr).toContain('REGISTRY_LOCKED');
      expect(stderr).toContain(String(process.pid));
    } finally {
      await holder.close();
    }
  });
});
