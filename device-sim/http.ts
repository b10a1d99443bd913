/**
 * The provisioning service over mTLS, as a factory station and an operator use it:
 *
 * - devices are enrolled by a station through the batch API (`POST /v1/enrollments/batch`, NDJSON both
 *   ways); the first device of a run goes through `POST /v1/enrollments`, whose answer carries the issuing
 *   CA chain that batch lines leave out;
 * - with no station credential given, the operator creates one (`POST /v1/stations`, scope = the
 *   simulator's product, no hourly quota) and issues it a certificate for a key made here; the credential is
 *   cached beside the identities and reused while the service still accepts it;
 * - the latency subscriber's service certificate: `POST /v1/services` + `/v1/services/:id/certificates`;
 * - revocation under load: `POST /v1/devices/:id/revoke`.
 *
 * JSON calls go through provisioning's own ProvisioningClient (undici, the fleet root as the only trust
 * anchor). The NDJSON batch cannot (its `call` sends JSON), so it is one undici request on an agent with
 * the station's certificate, the same library and the same trust. TLS verification is never relaxed.
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { buildCsr } from '../pki/csr-build.ts';
import * as der from '../pki/der.ts';
import { FleetError } from '../pki/errors.ts';
import { exists, writeAtomic } from '../pki/files.ts';
import { isUnreachable, ProvisioningClient } from '../provisioning/client.ts';
import { SimError } from './errors.ts';
import type { Enroller, EnrollOutcome, EnrollRequest } from './identities.ts';
import type { Operator } from './operator.ts';

export interface ApiCredentials {
  /** PEM: the certificate, then its issuing CA. */
  readonly cert: string;
  readonly key: string;
}

/** The default station the simulator creates through the operator API when none is given. */
export const SIM_STATION_ID = 'sim-station';

const csrPem = (d: Buffer) => der.toPem(d, 'CERTIFICATE REQUEST');

function clientFor(baseUrl: string, rootPem: string, c: ApiCredentials, timeoutMs = 120_000) {
  return new ProvisioningClient({ baseUrl, cert: c.cert, key: c.key, ca: rootPem, timeoutMs });
}

function why(e: unknown): string {
  if (e instanceof FleetError) return `${e.code}: ${e.message}`;
  return (e as Error).message ?? String(e);
}

/**
 * Does a provisioning service answer at `baseUrl`? `true` when it answers anything over TLS verified
 * against the fleet root, `false` when nothing listens there (connection refused). Anything else (a TLS
 * failure, a timeout: something listens but is not the service we trust) is an error, so the caller never
 * falls back to writing a local registry while something may be running.
 */
export async function probeApi(
  baseUrl: string,
  rootPem: string,
  creds: ApiCredentials | undefined,
): Promise<boolean> {
  // healthz is open: without the operator credential the probe goes without a client certificate.
  const agent = new Agent({
    connect: { ca: rootPem, ...(creds ?? {}), timeout: 3000 },
    headersTimeout: 3000,
  });
  try {
    const res = await request(`${baseUrl.replace(/\/$/, '')}/healthz`, { dispatcher: agent });
    await res.body.dump();
    return true; // an HTTP answer, whatever its status: the service is there
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    if (reason === 'ECONNREFUSED') return false;
    throw new SimError(
      'SIM_ENROLL_FAILED',
      `something listens at ${baseUrl} but it is not a provisioning service this root trusts (${String(reason)}); ` +
        'pass --enroll local or --enroll api explicitly, or --api URL',
      { cause: e },
    );
  } finally {
    await agent.close();
  }
}

function newKey(): Promise<KeyObject> {
  return new Promise((resolve, reject) =>
    generateKeyPair('ec', { namedCurve: 'prime256v1' }, (err, _pub, priv) =>
      err ? reject(err) : resolve(priv),
    ),
  );
}

export interface HttpEnrollerOptions {
  readonly baseUrl: string;
  readonly rootPem: string;
  /** The operator credential: creates the station (when none is given) and the observer's service. */
  readonly operator?: ApiCredentials | undefined;
  /** A station credential to enroll with; without it the operator makes `stationId`. */
  readonly station?: ApiCredentials | undefined;
  readonly stationId?: string | undefined;
  /** The product the station must be allowed to enroll. */
  readonly product: string;
  /** Where a created station's key and certificate are cached (reused across runs). */
  readonly stationDir?: string | undefined;
  /** Requests in flight on the batch API (each one a batch). */
  readonly parallel?: number;
}

interface BatchLine {
  line: number;
  deviceId?: string;
  ok: boolean;
  certificate?: string;
  error?: { code: string; message: string };
}

export class HttpEnroller implements Enroller {
  private readonly operator: ProvisioningClient | undefined;
  private station: { creds: ApiCredentials; client: ProvisioningClient; agent: Agent } | undefined;
  private stationReady: Promise<void> | undefined;
  /** The issuing CA certificate(s) sent after each device certificate, learned from the first answer. */
  private chain: string | undefined;
  /** The station the devices were enrolled by, once known. */
  stationId: string | undefined;

  constructor(readonly o: HttpEnrollerOptions) {
    this.operator = o.operator ? clientFor(o.baseUrl, o.rootPem, o.operator) : undefined;
    this.stationId = o.station ? o.stationId : (o.stationId ?? SIM_STATION_ID);
  }

  async rootPem(): Promise<string> {
    return this.o.rootPem;
  }

  private useStation(creds: ApiCredentials): void {
    const agent = new Agent({
      connect: { cert: creds.cert, key: creds.key, ca: this.o.rootPem, timeout: 30_000 },
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
    this.station = { creds, client: clientFor(this.o.baseUrl, this.o.rootPem, creds), agent };
  }

  /** The station credential: the one given, or the cached/created `sim-station`. */
  private ensureStation(): Promise<void> {
    this.stationReady ??= (async () => {
      if (this.o.station) return this.useStation(this.o.station);
      if (!this.operator)
        throw new SimError(
          'SIM_ENROLL_FAILED',
          'enrolling through the API needs a station credential (--station-cert/--station-key) or the operator credential to create one (--operator-cert/--operator-key, default DATA/operator/admin.*.pem)',
        );
      const id = this.stationId!;
      const op = this.operator;
      // The station exists with our product in its scope (created here, or widened if it lacks it).
      try {
        await op.call('POST', '/v1/stations', { id, products: [this.o.product], hourlyQuota: null });
      } catch (e) {
        if (!(e instanceof FleetError) || e.httpStatus !== 409) {
          throw new SimError('SIM_ENROLL_FAILED', `creating station ${id} failed (${why(e)})`, { cause: e });
        }
        const row = await op.call<{ status: string; products: string[] | null }>('GET', `/v1/stations/${id}`);
        if (row.status !== 'active')
          throw new SimError(
            'SIM_ENROLL_FAILED',
            `station ${id} is ${row.status}; reinstate it or name another station's credential`,
          );
        if (row.products && !row.products.includes(this.o.product))
          await op.call('PATCH', `/v1/stations/${id}`, { products: [...row.products, this.o.product] });
      }
      const dir = this.o.stationDir;
      const keyFile = dir ? join(dir, `${id}.key.pem`) : undefined;
      const certFile = dir ? join(dir, `${id}.crt.pem`) : undefined;
      if (keyFile && certFile && (await exists(keyFile)) && (await exists(certFile))) {
        // Reuse the cached credential while the service still takes it (not revoked, not superseded).
        const cached = { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8') };
        const probe = clientFor(this.o.baseUrl, this.o.rootPem, cached, 10_000);
        try {
          await probe.call('GET', '/.well-known/est/csrattrs');
          return this.useStation(cached);
        } catch {
          // fall through: issue a fresh certificate
        } finally {
          await probe.close();
        }
      }
      const key = await newKey();
      const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
      let issued: { certificate: string; chain: string[] };
      try {
        issued = await op.call('POST', `/v1/stations/${id}/certificates`, { csr: csrPem(buildCsr(key, id)) });
      } catch (e) {
        throw new SimError('SIM_ENROLL_FAILED', `issuing station ${id} a certificate failed (${why(e)})`, {
          cause: e,
        });
      }
      const creds = { key: keyPem, cert: issued.certificate + issued.chain.join('') };
      if (dir && keyFile && certFile) {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        await writeAtomic(keyFile, creds.key, 0o600);
        await writeAtomic(certFile, creds.cert, 0o644);
      }
      this.useStation(creds);
    })();
    return this.stationReady;
  }

  private async one(r: EnrollRequest): Promise<EnrollOutcome> {
    try {
      const j = await this.station!.client.call<{ certificate: string; chain: string[] }>(
        'POST',
        '/v1/enrollments',
        { deviceId: r.id, product: r.product, csr: csrPem(r.csr) },
      );
      this.chain = j.chain.join('');
      return { id: r.id, ok: true, certPem: j.certificate + this.chain };
    } catch (e) {
      if (isUnreachable(e)) throw new SimError('SIM_ENROLL_FAILED', why(e), { cause: e });
      if (e instanceof FleetError) return { id: r.id, ok: false, code: e.code, message: e.message };
      throw e;
    }
  }

  private async batch(reqs: readonly EnrollRequest[]): Promise<EnrollOutcome[]> {
    const body = `${reqs.map((r) => JSON.stringify({ deviceId: r.id, product: r.product, csr: csrPem(r.csr) })).join('\n')}\n`;
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${this.o.baseUrl.replace(/\/$/, '')}/v1/enrollments/batch`, {
        method: 'POST',
        dispatcher: this.station!.agent,
        headers: { 'content-type': 'application/x-ndjson' },
        body,
      });
    } catch (cause) {
      throw new SimError(
        'SIM_ENROLL_FAILED',
        `the batch enrollment request to ${this.o.baseUrl} failed (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`,
        { cause },
      );
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      let e: { code?: string; message?: string } | undefined;
      try {
        e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
      } catch {
        e = undefined;
      }
      throw new SimError(
        'SIM_ENROLL_FAILED',
        `the station API refused the batch: ${e?.code ?? `HTTP ${res.statusCode}`}: ${e?.message ?? text.slice(0, 200)}`,
        { details: { code: e?.code ?? `HTTP_${res.statusCode}` } },
      );
    }
    const out: EnrollOutcome[] = [];
    for (const raw of text.split('\n')) {
      if (!raw.trim()) continue;
      const j = JSON.parse(raw) as BatchLine;
      const id = j.deviceId ?? reqs[j.line - 1]?.id ?? `line ${j.line}`;
      if (j.ok && j.certificate) out.push({ id, ok: true, certPem: j.certificate + (this.chain ?? '') });
      else
        out.push({
          id,
          ok: false,
          code: j.error?.code ?? 'API_ERROR',
          message: j.error?.message ?? 'refused',
        });
    }
    return out;
  }

  async enrollDevices(reqs: readonly EnrollRequest[]): Promise<EnrollOutcome[]> {
    await this.ensureStation();
    const out: EnrollOutcome[] = [];
    let rest = reqs;
    // The single answer carries the issuing CA chain; batch lines carry only the certificate.
    if (this.chain === undefined && rest.length) {
      out.push(await this.one(rest[0]!));
      rest = rest.slice(1);
    }
    if (!rest.length) return out;
    // A few batches in flight: the service commits 200 lines a transaction, the CSR checks use its cores.
    const size = Math.ceil(
      rest.length / Math.max(1, Math.min(this.o.parallel ?? 2, Math.ceil(rest.length / 100))),
    );
    const parts: EnrollRequest[][] = [];
    for (let i = 0; i < rest.length; i += size) parts.push(rest.slice(i, i + size));
    for (const r of await Promise.all(parts.map((p) => this.batch(p)))) out.push(...r);
    return out;
  }

  async enrollService(id: string, csr: Buffer): Promise<string> {
    if (!this.operator)
      throw new SimError('SIM_ENROLL_FAILED', 'a service certificate needs the operator credential');
    try {
      await this.operator.call('POST', '/v1/services', { id });
    } catch (e) {
      if (!(e instanceof FleetError) || e.httpStatus !== 409)
        throw new SimError('SIM_ENROLL_FAILED', `creating service ${id} failed (${why(e)})`, { cause: e });
    }
    try {
      const j = await this.operator.call<{ certificate: string; chain: string[] }>(
        'POST',
        `/v1/services/${encodeURIComponent(id)}/certificates`,
        { csr: csrPem(csr) },
      );
      return j.certificate + j.chain.join('');
    } catch (e) {
      throw new SimError('SIM_ENROLL_FAILED', `issuing the ${id} certificate failed (${why(e)})`, {
        cause: e,
      });
    }
  }

  async close(): Promise<void> {
    await this.operator?.close();
    if (this.station) {
      await this.station.client.close();
      await this.station.agent.close();
    }
  }
}

export class HttpOperator implements Operator {
  private readonly client: ProvisioningClient;
  constructor(baseUrl: string, rootPem: string, creds: ApiCredentials) {
    this.client = clientFor(baseUrl, rootPem, creds, 30_000);
  }

  async revokeDevice(id: string, reason: string): Promise<void> {
    try {
      await this.client.call('POST', `/v1/devices/${encodeURIComponent(id)}/revoke`, { reason });
    } catch (e) {
      const code = e instanceof FleetError ? e.code : 'error';
      throw new SimError('SIM_REVOKE_FAILED', `revoking ${id} failed (${why(e)})`, {
        cause: e,
        details: { code },
      });
    }
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
