/**
 * Crash safety, for real: the service runs as a child process (provisioning/main.ts, configured from the
 * environment like production) and is killed with SIGKILL in the middle of a batch. Every certificate the
 * client received is recorded; nothing is recorded twice; re-sending the whole batch to a restarted service
 * completes it, answering the already-issued certificates again (idempotency) and no duplicates.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { caConfigFrom, type FleetConfig, keyStoreFor, loadConfig, paths } from '../config/index.ts';
import { loadCa } from '../pki/ca.ts';
import { certToPem } from '../pki/x509.ts';
import { Issuance } from '../provisioning/issuance.ts';
import { openRegistry } from '../registry/index.ts';
import { initDataDir } from '../runtime/index.ts';
import { csrPem, generateKey, nodeCsr } from './helpers/pki.ts';
import { backends } from './helpers/provisioning.ts';
import { getCertificate } from './helpers/registry.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const N = 1200;

interface Child {
  proc: ChildProcess;
  apiPort: number;
}

/** Starts `provisioning/main.ts` as its own process and waits for the line naming its ports. */
function startChild(env: Record<string, string>): Promise<Child> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'provisioning/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    let errText = '';
    const timer = setTimeout(() => reject(new Error(`no listening line; stderr: ${errText}`)), 60_000);
    proc.stderr!.on('data', (d) => {
      errText += d;
    });
    // Log lines go to stderr (stdout is for what a command answers); the listening line is one of them.
    proc.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split('\n')) {
        if (!line.includes('provisioning_listening')) continue;
        clearTimeout(timer);
        resolve({ proc, apiPort: JSON.parse(line).apiPort });
        return;
      }
    });
    proc.on('exit', (code) => reject(new Error(`child exited with ${code}: ${errText}`)));
  });
}

/** Waits for a child to exit; after `ms` it is killed (a stop that hangs is a failure, not a stuck run). */
async function exited(proc: ChildProcess, ms: number): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe.each(backends('provcrash'))('crash mid-batch on $name', (backend) => {
  let dir: string | undefined;
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
    await backend.cleanup();
  });

  it('a SIGKILL mid-batch leaves every certificate recorded and returned, or never issued; a re-send completes without duplicates', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fleet-crash-'));
    const env: Record<string, string> = {
      FLEET_DATA_DIR: dir,
      FLEET_API_PORT: '0',
      FLEET_PUBLIC_PORT: '0',
      // Any free port: the default 8444 collides with any other Fleet on the machine.
      FLEET_CONSOLE_PORT: '0',
      FLEET_LOG_LEVEL: 'info',
      FLEET_CA_PASSPHRASE: 'crash-test-passphrase-0123456789',
    };
    if (backend.url) {
      await (await backend.open()).close(); // creates the fresh database
      env['DATABASE_URL'] = backend.url;
    } else {
      env['DATABASE_URL'] = '';
    }
    const config: FleetConfig = loadConfig(env);
    await initDataDir(config);

    // The station, with a key made here, recorded before the service starts (the PGlite dir is exclusive).
    const { keys } = await keyStoreFor(config);
    const ca = await loadCa(paths(dir).ca, keys, caConfigFrom(config));
    const stationId = 'line-7';
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const reg = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: dir });
    const issued = await new Issuance(ca, reg).issuePrincipal(
      { kind: 'station', id: stationId, products: ['thermo'] },
      { spki: publicKey.export({ type: 'spki', format: 'der' }) },
      'system:test',
    );
    await reg.close();
    const agent = new Agent({
      connect: {
        ca: ca.rootPem,
        cert: certToPem(issued.der) + issued.chain.map(certToPem).join(''),
        key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        servername: 'localhost',
      },
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    });

    const ids = Array.from({ length: N }, (_, i) => `crash-${String(i).padStart(5, '0')}`);
    const body = `${ids.map((id) => JSON.stringify({ deviceId: id, product: 'thermo', csr: csrPem(nodeCsr(generateKey('P-256'), id)) })).join('\n')}\n`;
    await writeFile(join(dir, 'batch.ndjson'), body);

    // Run 1: kill the service once some results have arrived, while later chunks are being issued.
    const first = await startChild(env);
    children.push(first.proc);
    const received: { line: number; deviceId: string; ok: boolean; serial: string; certificate: string }[] =
      [];
    try {
      const res = await request(`https://localhost:${first.apiPort}/v1/enrollments/batch`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/x-ndjson' },
        body,
      });
      let buf = '';
      for await (const chunk of res.body) {
        buf += chunk.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) if (l) received.push(JSON.parse(l));
        if (received.length >= 300 && first.proc.exitCode === null) first.proc.kill('SIGKILL');
      }
    } catch {
      // the connection dies with the process
    }
    await exited(first.proc, 15_000);
    expect(received.length).toBeGreaterThanOrEqual(200);
    expect(received.length).toBeLessThan(N);
    expect(received.every((r) => r.ok)).toBe(true);

    // Every certificate returned is recorded; no device has two certificates.
    const check = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: dir });
    for (const r of received) {
      const c = await getCertificate(check, r.serial);
      expect(c?.subjectId).toBe(r.deviceId);
      expect(c?.status).toBe('active');
    }
    const recorded = new Map<string, number>();
    let cursor: string | undefined;
    do {
      const page = await check.listDevices({ enrolledBy: stationId, limit: 1000, cursor });
      for (const d of page.items) recorded.set(d.id, 0);
      cursor = page.nextCursor;
    } while (cursor);
    for (const id of recorded.keys()) expect((await check.getDevice(id))!.certificates).toHaveLength(1);
    expect(recorded.size).toBeGreaterThanOrEqual(received.length);
    expect(recorded.size).toBeLessThan(N);
    await check.close();

    // Run 2: the same batch again, to a restarted service.
    const second = await startChild(env);
    children.push(second.proc);
    const res = await request(`https://localhost:${second.apiPort}/v1/enrollments/batch`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-ndjson' },
      body,
    });
    const out = (await res.body.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(out).toHaveLength(N);
    expect(out.every((o) => o.ok)).toBe(true);
    const bySerial = new Map(out.map((o) => [o.deviceId, o]));
    for (const r of received) {
      expect(bySerial.get(r.deviceId).serial).toBe(r.serial);
      expect(bySerial.get(r.deviceId).reused).toBe(true);
    }
    // Those recorded but never delivered come back as reused too; the rest are new.
    expect(out.filter((o) => o.reused).length).toBe(recorded.size);
    second.proc.kill('SIGTERM');
    expect(await exited(second.proc, 15_000)).toBe(0);
    await agent.close();

    const final = await openRegistry({ databaseUrl: config.databaseUrl, dataDir: dir });
    for (const id of [ids[0]!, ids[N - 1]!, ...[...recorded.keys()].slice(0, 20)]) {
      expect((await final.getDevice(id))!.certificates).toHaveLength(1);
    }
    const all = await final.listDevices({ enrolledBy: stationId, limit: 1000 });
    const rest = all.nextCursor
      ? await final.listDevices({ enrolledBy: stationId, limit: 1000, cursor: all.nextCursor })
      : { items: [] };
    expect(all.items.length + rest.items.length).toBe(N);
    const audit = await final.listAudit({
      actor: `station:${stationId}`,
      action: 'certificate.issue',
      limit: 1000,
    });
    const audit2 = audit.nextCursor
      ? await final.listAudit({
          actor: `station:${stationId}`,
          action: 'certificate.issue',
          limit: 1000,
          cursor: audit.nextCursor,
        })
      : { items: [] };
    expect(audit.items.length + audit2.items.length).toBe(N);
    await final.close();
  }, 240_000);
});
