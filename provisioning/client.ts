/**
 * A small client for the provisioning API over mutual TLS: the caller's certificate and key, and the fleet
 * root as the only trust anchor (no system CAs). Errors from the service come back as FleetErrors with the
 * service's code, status and public message.
 */
import { readFile } from 'node:fs/promises';
import { Agent, request } from 'undici';
import { FleetError } from '../pki/errors.ts';
import { ProvisioningError } from './errors.ts';

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
  readonly baseUrl: string;

  constructor(opts: ClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/$/, '');
    const timeout = opts.timeoutMs ?? 30_000;
    this.agent = new Agent({
      connect: { cert: opts.cert, key: opts.key, ca: opts.ca, timeout },
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
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

  async call<T = unknown>(method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown): Promise<T> {
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${this.baseUrl}${path}`, {
        method,
        dispatcher: this.agent,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code ?? 'unknown';
      throw new ProvisioningError(
        'API_UNREACHABLE',
        `cannot reach the provisioning API at ${this.baseUrl} (${code})`,
        {
          cause,
          details: { url: this.baseUrl, reason: code },
        },
      );
    }
    const text = await res.body.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.statusCode >= 400) {
      const e = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } })
        ?.error;
      throw new FleetError(e?.code ?? 'API_ERROR', e?.message ?? `HTTP ${res.statusCode}`, {
        httpStatus: res.statusCode,
        ...(e?.details ? { details: e.details } : {}),
      });
    }
    return json as T;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
