/**
 * The provisioning service over mTLS, as a factory station and an operator use it: batch enrollment
 * (`POST /v1/enrollments/batch`, NDJSON both ways), a service certificate for the observer, and device
 * revocation (`POST /v1/devices/:id/revoke`). Plain node:https with the caller's certificate; the server is
 * verified against the fleet root.
 */
import { Agent, request } from 'node:https';
import * as der from '../pki/der.ts';
import { SimError } from './errors.ts';
import type { Enroller, EnrollOutcome, EnrollRequest } from './identities.ts';
import type { Operator } from './operator.ts';

export interface ApiCredentials {
  readonly cert: string;
  readonly key: string;
}

interface Answer {
  status: number;
  body: string;
}

class ApiClient {
  private readonly agent: Agent;
  constructor(
    readonly baseUrl: string,
    readonly rootPem: string,
    creds: ApiCredentials,
  ) {
    const u = new URL(baseUrl);
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 16,
      ca: rootPem,
      cert: creds.cert,
      key: creds.key,
      servername: /^[\d.]+$|:/.test(u.hostname) ? 'localhost' : u.hostname,
    });
  }

  call(
    method: string,
    path: string,
    body: string | undefined,
    contentType = 'application/json',
  ): Promise<Answer> {
    const url = new URL(path, this.baseUrl);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          headers:
            body === undefined
              ? {}
              : { 'content-type': contentType, 'content-length': Buffer.byteLength(body) },
          timeout: 120_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function problem(a: Answer): { code: string; message: string } {
  try {
    const j = JSON.parse(a.body) as {
      code?: string;
      message?: string;
      error?: { code?: string; message?: string };
    };
    const e = j.error ?? j;
    return { code: e.code ?? `HTTP_${a.status}`, message: e.message ?? a.body.slice(0, 200) };
  } catch {
    return { code: `HTTP_${a.status}`, message: a.body.slice(0, 200) };
  }
}

const csrPem = (d: Buffer) => der.toPem(d, 'CERTIFICATE REQUEST');

export class HttpEnroller implements Enroller {
  private readonly station: ApiClient;
  private readonly operator: ApiClient | undefined;
  /** The issuing CA certificate(s) sent after each device certificate, learned from the first answer. */
  private chain: string | undefined;

  constructor(baseUrl: string, rootPem: string, station: ApiCredentials, operator?: ApiCredentials) {
    this.station = new ApiClient(baseUrl, rootPem, station);
    this.operator = operator ? new ApiClient(baseUrl, rootPem, operator) : undefined;
  }

  async rootPem(): Promise<string> {
    return this.station.rootPem;
  }

  private async one(r: EnrollRequest): Promise<EnrollOutcome> {
    const a = await this.station.call(
      'POST',
      '/v1/enrollments',
      JSON.stringify({ deviceId: r.id, product: r.product, csr: csrPem(r.csr) }),
    );
    if (a.status !== 200 && a.status !== 201) return { id: r.id, ok: false, ...problem(a) };
    const j = JSON.parse(a.body) as { certificate: string; chain: string[] };
    this.chain = j.chain.join('');
    return { id: r.id, ok: true, certPem: j.certificate + this.chain };
  }

  async enrollDevices(reqs: readonly EnrollRequest[]): Promise<EnrollOutcome[]> {
    const out: EnrollOutcome[] = [];
    let rest = reqs;
    // The single-enrollment answer carries the chain; the batch lines carry only the certificate.
    if (this.chain === undefined && rest.length) {
      out.push(await this.one(rest[0]!));
      rest = rest.slice(1);
    }
    if (!rest.length) return out;
    const body = rest
      .map((r) => JSON.stringify({ deviceId: r.id, product: r.product, csr: csrPem(r.csr) }))
      .join('\n');
    let a: Answer;
    try {
      a = await this.station.call('POST', '/v1/enrollments/batch', `${body}\n`, 'application/x-ndjson');
    } catch (cause) {
      throw new SimError(
        'SIM_ENROLL_FAILED',
        `the batch enrollment request failed: ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
    if (a.status !== 200) {
      const p = problem(a);
      throw new SimError('SIM_ENROLL_FAILED', `the station API refused the batch: ${p.code}: ${p.message}`);
    }
    for (const line of a.body.split('\n')) {
      if (!line.trim()) continue;
      const j = JSON.parse(line) as {
        line: number;
        deviceId?: string;
        ok: boolean;
        certificate?: string;
        error?: { code: string; message: string };
      };
      const id = j.deviceId ?? rest[j.line - 1]?.id ?? `line ${j.line}`;
      if (j.ok && j.certificate) out.push({ id, ok: true, certPem: j.certificate + (this.chain ?? '') });
      else
        out.push({ id, ok: false, code: j.error?.code ?? 'UNKNOWN', message: j.error?.message ?? 'refused' });
    }
    return out;
  }

  async enrollService(id: string, csr: Buffer): Promise<string> {
    if (!this.operator)
      throw new SimError('SIM_ENROLL_FAILED', 'a service certificate needs operator credentials');
    const created = await this.operator.call('POST', '/v1/services', JSON.stringify({ id }));
    if (created.status !== 201 && created.status !== 409) {
      const p = problem(created);
      throw new SimError('SIM_ENROLL_FAILED', `creating service ${id} failed: ${p.code}: ${p.message}`);
    }
    const a = await this.operator.call(
      'POST',
      `/v1/services/${id}/certificates`,
      JSON.stringify({ csr: csrPem(csr) }),
    );
    if (a.status !== 200 && a.status !== 201) {
      const p = problem(a);
      throw new SimError(
        'SIM_ENROLL_FAILED',
        `issuing the ${id} certificate failed: ${p.code}: ${p.message}`,
      );
    }
    const j = JSON.parse(a.body) as { certificate: string; chain: string[] };
    return j.certificate + j.chain.join('');
  }

  close(): void {
    this.station.close();
    this.operator?.close();
  }
}

export class HttpOperator implements Operator {
  private readonly client: ApiClient;
  constructor(baseUrl: string, rootPem: string, creds: ApiCredentials) {
    this.client = new ApiClient(baseUrl, rootPem, creds);
  }

  async revokeDevice(id: string, reason: string): Promise<void> {
    const a = await this.client.call(
      'POST',
      `/v1/devices/${encodeURIComponent(id)}/revoke`,
      JSON.stringify({ reason }),
    );
    if (a.status >= 300) {
      const p = problem(a);
      throw new SimError('SIM_REVOKE_FAILED', `revoking ${id} failed: ${p.code}: ${p.message}`, {
        details: { code: p.code },
      });
    }
  }

  close(): void {
    this.client.close();
  }
}
