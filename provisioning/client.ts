/**
 * A small client for the provisioning API over mutual TLS: the caller's certificate and key, and the fleet
 * root as the only trust anchor (no system CAs). Errors from the service come back as FleetErrors with the
 * service's code, status and public message.
 *
 * On node:https rather than undici: the CLI's operator commands make one or two calls, and loading undici
 * cost them more than the call itself (≈ 0.5 s on a busy machine, the largest part of `fleet device list`).
 */
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { FleetError } from '../pki/errors.ts';
import { ApiAnswerError, ProvisioningError } from './errors.ts';

export interface ClientOptions {
  /** e.g. https://localhost:8443 */
  baseUrl: string;
  /** PEM: the client certificate, then its issuing CA. */
  cert: string;
  key: string;
  /** PEM of the fleet root: the only certificate trusted for the server. */
  ca: string;
  timeoutMs?: number;
}

/** The connection could not be made at all (nothing listens, DNS, TLS handshake refused). */
export function isUnreachable(e: unknown): boolean {
  return e instanceof FleetError && e.code === 'API_UNREACHABLE';
}

export class ProvisioningClient {
  private readonly agent: Agent;
  private readonly timeoutMs: number;
  readonly baseUrl: string;

  constructor(opts: ClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/$/, '');
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    // The fleet root is the only trust anchor; the server's name is checked against the URL's host.
    this.agent = new Agent({ cert: opts.cert, key: opts.key, ca: opts.ca, keepAlive: true });
  }

  /** The operator credential `fleet init` made, and the root, from a data directory. */
  static async fromFiles(
    baseUrl: string,
    files: { cert: string; key: string; ca: string },
  ): Promise<ProvisioningClient> {
    const read = async (p: string, what: string) => {
      try {
        return await readFile(p, 'utf8');
      } catch (cause) {
        throw new ProvisioningError(
          'OPERATOR_CREDENTIALS_MISSING',
          `cannot read the ${what} ${p}: run \`fleet init\` first`,
          { cause },
        );
      }
    };
    return new ProvisioningClient({
      baseUrl,
      cert: await read(files.cert, 'operator certificate'),
      key: await read(files.key, 'operator key'),
      ca: await read(files.ca, 'fleet root certificate'),
    });
  }

  private send(
    method: string,
    path: string,
    payload: Buffer | undefined,
  ): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = request(
        `${this.baseUrl}${path}`,
        {
          method,
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          );
        },
      );
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error(`no answer in ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  async call<T = unknown>(method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown): Promise<T> {
    let res: { status: number; text: string };
    try {
      res = await this.send(method, path, body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
    } catch (cause) {
      // Several addresses tried (localhost: 127.0.0.1 and ::1) fail as one AggregateError.
      const c = cause as NodeJS.ErrnoException & { errors?: NodeJS.ErrnoException[] };
      const code = c.code ?? c.errors?.[0]?.code ?? 'unknown';
      throw new ProvisioningError(
        'API_UNREACHABLE',
        `cannot reach the provisioning API at ${this.baseUrl} (${code})`,
        {
          cause,
          details: { url: this.baseUrl, reason: code },
        },
      );
    }
    let json: unknown;
    try {
      json = res.text ? JSON.parse(res.text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.status >= 400) {
      const e = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })
        ?.error;
      throw new ApiAnswerError(e, res.status);
    }
    return json as T;
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}
