/**
 * The fleet CLI's operator commands go through the provisioning API with the operator certificate that
 * `fleet init` made: against a running service, and, when the local service is not running, through the
 * same service started in-process for the one command.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../cli/main.ts';
import { loadConfig } from '../config/index.ts';
import { type RunningProvisioning, startProvisioning } from '../provisioning/main.ts';
import { csrPem, generateKey, nodeCsr } from './helpers/pki.ts';

let dir: string;
let env: Record<string, string>;
let service: RunningProvisioning | undefined;

async function fleet(...args: string[]) {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d) => {
    o += d;
  });
  err.on('data', (d) => {
    e += d;
  });
  const code = await runCli([...args, '--data', dir, '--json'], env, { out, err });
  let json: unknown;
  try {
    json = JSON.parse(o);
  } catch {
    json = undefined;
  }
  // biome-ignore lint/suspicious/noExplicitAny: test convenience
  return { code, out: o, err: e, json: json as any };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fleet-opcli-'));
  // Any free console port: the default 8444 collides with any other Fleet on the machine.
  env = { FLEET_LOG_LEVEL: 'warn', FLEET_CONSOLE_PORT: '0' };
  expect((await fleet('init')).code).toBe(0);
  const config = loadConfig({ ...env }, { data: dir });
  service = await startProvisioning({ ...config, apiPort: 0, publicPort: 0 });
  env['FLEET_API_PORT'] = String(service.ports.apiPort);
});
afterAll(async () => {
  await service?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('fleet operator commands through the API', () => {
  it('station create, issue (key made locally, 0600), scope; the station enrolls; device list/show/suspend/revoke', async () => {
    const created = await fleet('station', 'create', 'line-1', '--products', 'thermo', '--quota', '100');
    expect(created.code, created.err).toBe(0);
    expect(created.json).toMatchObject({
      kind: 'station',
      id: 'line-1',
      products: ['thermo'],
      hourlyQuota: 100,
    });
    const out = join(dir, 'line-1');
    const issued = await fleet('station', 'issue', 'line-1', '--out', out);
    expect(issued.code, issued.err).toBe(0);
    expect((await stat(join(out, 'line-1.key.pem'))).mode & 0o777).toBe(0o600);
    const scoped = await fleet('station', 'scope', 'line-1', '--products', 'thermo,valve', '--quota', 'none');
    expect(scoped.json).toMatchObject({ products: ['thermo', 'valve'], hourlyQuota: null });

    const agent = new Agent({
      connect: {
        cert: await readFile(join(out, 'line-1.crt.pem'), 'utf8'),
        key: await readFile(join(out, 'line-1.key.pem'), 'utf8'),
        ca: await readFile(join(out, 'root.crt.pem'), 'utf8'),
      },
    });
    const csr = csrPem(nodeCsr(generateKey('P-256'), 'dev-1'));
    const e = await request(`https://localhost:${env['FLEET_API_PORT']}/v1/enrollments`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: 'dev-1', product: 'valve', csr }),
    });
    expect(e.statusCode).toBe(201);
    await e.body.dump();
    await agent.close();

    const list = await fleet('device', 'list', '--station', 'line-1');
    expect(list.code, list.err).toBe(0);
    expect(list.json.items.map((d: { id: string }) => d.id)).toEqual(['dev-1']);
    expect(list.err).toBe(''); // no in-process fallback: the service answered
    const show = await fleet('device', 'show', 'dev-1');
    expect(show.json).toMatchObject({ id: 'dev-1', status: 'active', product: 'valve' });
    expect((await fleet('device', 'suspend', 'dev-1')).json).toMatchObject({ status: 'suspended' });
    expect((await fleet('device', 'reinstate', 'dev-1')).json).toMatchObject({ status: 'active' });
    const revoked = await fleet('device', 'revoke', 'dev-1', '--reason', 'keyCompromise');
    expect(revoked.json).toMatchObject({ status: 'revoked', changed: true });
    const again = await fleet('device', 'revoke', 'dev-1');
    expect(again.code).toBe(1);
    expect(again.json.error.code).toBe('ALREADY_REVOKED');

    const audit = await fleet('audit', '--subject', 'device:dev-1');
    expect(audit.json.items.map((a: { action: string }) => a.action)).toEqual(
      expect.arrayContaining(['certificate.issue', 'subject.suspend', 'subject.revoke']),
    );
    expect(audit.json.items.find((a: { action: string }) => a.action === 'subject.revoke').actor).toBe(
      'operator:admin',
    );
  });

  it('station revoke --cascade-from revokes the devices it enrolled in the window', async () => {
    expect((await fleet('station', 'create', 'line-2', '--products', 'thermo')).code).toBe(0);
    const r = await fleet(
      'station',
      'revoke',
      'line-2',
      '--reason',
      'keyCompromise',
      '--cascade-from',
      '2020-01-01T00:00:00Z',
    );
    expect(r.code, r.err).toBe(0);
    expect(r.json).toMatchObject({ status: 'revoked', cascade: { devicesRevoked: 0 } });
  });

  it('service and operator create and issue', async () => {
    expect((await fleet('service', 'create', 'ingest', '--role', 'telemetry')).json).toMatchObject({
      role: 'telemetry',
    });
    expect((await fleet('service', 'issue', 'ingest', '--out', join(dir, 'svc'))).code).toBe(0);
    expect((await fleet('operator', 'create', 'alice')).code).toBe(0);
    const op = await fleet('operator', 'issue', 'alice', '--out', join(dir, 'alice'));
    expect(op.code, op.err).toBe(0);
    expect(op.json.kind).toBe('operator');
  });

  it('expiring lists soon-to-expire certificates and exits 3 when there are any', async () => {
    const none = await fleet('expiring', '--days', '1');
    expect(none.code).toBe(0);
    const some = await fleet('expiring', '--days', '400');
    expect(some.code).toBe(3);
    expect(some.json.items.some((c: { subjectKind: string }) => c.subjectKind === 'operator')).toBe(true);
  });

  it('usage errors are usage errors', async () => {
    expect((await fleet('station', 'create')).code).toBe(2);
    expect((await fleet('device', 'revoke', 'x', '--reason', 'whim')).code).toBe(2);
    expect((await fleet('station', 'frobnicate')).code).toBe(2);
  });
});

describe('when the local service is not running', () => {
  it('runs it in-process for the command and says so; --remote refuses instead', async () => {
    await service?.stop();
    service = undefined;
    const list = await fleet('device', 'list');
    expect(list.code, list.err).toBe(0);
    expect(list.err).toContain('not running');
    expect(list.json.items.map((d: { id: string }) => d.id)).toContain('dev-1');
    const remote = await fleet('device', 'list', '--remote');
    expect(remote.code).toBe(1);
    expect(remote.json.error.code).toBe('API_UNREACHABLE');
  });
});
