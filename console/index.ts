/**
 * The operator console, a part served by the provisioning service (design.md, "Console"): server-rendered
 * pages over HTTPS on its own port, signed in by a one-time link, every action through the operator API's
 * own code path and audited under the operator.
 *
 * Why its own port: the API listener asks every client for a certificate (mutual TLS), and a browser
 * answers such a request with a certificate picker, or fails, for people who have none installed. The
 * console's listener asks for none; it serves the same kind of server certificate (infrastructure CA, the
 * names clients dial) or one the operators' browsers already trust (FLEET_CONSOLE_CERT_FILE). Browsers
 * need HTTPS anyway for a Secure cookie.
 *
 * `attachConsole()` is provisioning's one hook: it adds the link routes to the mTLS API (an operator's
 * certificate asks for a link for itself) and builds the HTTPS listener.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { ConsoleConfig } from '../config/index.ts';
import type { CertificateAuthority } from '../pki/ca.ts';
import { callerOf } from '../provisioning/api.ts';
import type { Authenticator } from '../provisioning/auth.ts';
import type { CrlPublisher } from '../provisioning/crl.ts';
import type { OperatorActions } from '../provisioning/operator-actions.ts';
import {
  createConsoleLink,
  dbOf,
  listConsoleSessions,
  pruneConsoleSignIns,
  prunePresenceHistory,
  revokeConsoleSessions,
} from '../registry/console.ts';
import { type Registry, ref } from '../registry/index.ts';
import { BrokerMetricsReader } from './broker-metrics.ts';
import { ConsoleError } from './errors.ts';
import { registerRoutes } from './routes.ts';
import { newToken, Sessions, sha256 } from './session.ts';

export interface ConsoleDeps {
  ca: CertificateAuthority;
  registry: Registry;
  auth: Authenticator;
  crl: CrlPublisher;
  actions: OperatorActions;
  logger: Logger;
  /** The name operators dial (FLEET_HOST), for the links when FLEET_CONSOLE_URL is not set. */
  host: string;
  /** The console's TLS key and chain when no certificate file is configured (renewed with the API's). */
  credentials(): { key: string; cert: string };
}

export interface ConsoleServer {
  readonly app: FastifyInstance;
  /** Base URL of the links (FLEET_CONSOLE_URL, else https://<host>:<port bound>). */
  url(): string;
  listen(host: string): Promise<number>;
  /** New TLS credentials (the daily renewal). */
  renew(): void;
  close(): Promise<void>;
}

const ASSETS = {
  'console.css': { type: 'text/css; charset=utf-8', file: 'assets/console.css' },
  'console.js': { type: 'text/javascript; charset=utf-8', file: 'assets/console.js' },
} as const;

/** Content-Security-Policy: nothing from anywhere but the console itself, no inline script or style. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** The operator API's console routes: a sign-in link for the calling operator, and ending sessions. */
export function registerConsoleApi(
  api: FastifyInstance,
  o: {
    registry: Registry;
    auth: Authenticator;
    config: ConsoleConfig | undefined;
    url: () => string | undefined;
  },
): void {
  // Authenticated in onRequest (provisioning/api.ts installAuthentication), before the body is read.
  const auth = { kinds: ['operator'] } as const;
  api.post(
    '/v1/console/links',
    {
      config: { action: 'console.link', auth },
      schema: {
        tags: ['operator'],
        summary: 'A one-time console sign-in link for the calling operator (short-lived, single use)',
      },
    },
    async (req, reply) => {
      const who = callerOf(req);
      const base = o.url();
      if (!o.config?.enabled || !base)
        throw new ConsoleError('CONSOLE_DISABLED', 'the console is not served by this provisioning service');
      const token = newToken();
      const expiresAt = new Date(Date.now() + o.config.linkTtlSeconds * 1000);
      await createConsoleLink(dbOf(o.registry), {
        tokenSha256: sha256(token),
        operator: who.id,
        expiresAt,
      });
      await o.registry.appendAudit({
        actor: ref('operator', who.id),
        action: 'console.link',
        outcome: 'success',
        details: { expiresAt: expiresAt.toISOString() },
      });
      return reply.code(201).send({
        url: `${base}/signin?token=${token}`,
        operator: who.id,
        expiresAt: expiresAt.toISOString(),
      });
    },
  );
  api.post(
    '/v1/console/sessions/revoke',
    {
      config: { action: 'console.session_revoke', auth },
      schema: {
        tags: ['operator'],
        summary: "End every live console session of one operator (default: the caller's own)",
        body: {
          type: 'object',
          additionalProperties: false,
          properties: { operator: { type: 'string', minLength: 1, maxLength: 64 } },
        },
      },
    },
    async (req) => {
      const who = callerOf(req);
      const target = (req.body as { operator?: string } | undefined)?.operator ?? who.id;
      const ended = await revokeConsoleSessions(
        dbOf(o.registry),
        { operator: target },
        ref('operator', who.id),
      );
      await o.registry.appendAudit({
        actor: ref('operator', who.id),
        action: 'console.session_revoke',
        subject: ref('operator', target),
        outcome: 'success',
        details: { sessions: ended.length, via: 'api' },
      });
      return { operator: target, sessionsEnded: ended.length };
    },
  );
  api.get(
    '/v1/console/sessions',
    {
      config: { action: 'console.sessions', auth },
      schema: { tags: ['operator'], summary: 'Live console sessions' },
    },
    async (_req) => {
      const rows = await listConsoleSessions(dbOf(o.registry));
      return {
        items: rows.map((s) => ({
          session: s.idSha256.slice(0, 16),
          operator: s.operator,
          createdAt: s.createdAt,
          lastSeenAt: s.lastSeenAt,
          expiresAt: s.expiresAt,
          address: s.address,
        })),
      };
    },
  );
}

export async function buildConsole(config: ConsoleConfig, deps: ConsoleDeps): Promise<ConsoleServer> {
  const log = deps.logger.child({ part: 'console' });
  const fromFiles = config.certFile && config.keyFile;
  const tls = () =>
    fromFiles
      ? { key: readFileSync(config.keyFile!, 'utf8'), cert: readFileSync(config.certFile!, 'utf8') }
      : deps.credentials();
  const app = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024,
    forceCloseConnections: true,
    // No client certificate is asked for on this port (see the module comment).
    https: { ...tls(), minVersion: 'TLSv1.2' },
  }) as unknown as FastifyInstance;

  const assets = new Map<string, { type: string; body: Buffer }>();
  for (const [name, a] of Object.entries(ASSETS))
    assets.set(name, { type: a.type, body: readFileSync(fileURLToPath(new URL(a.file, import.meta.url))) });

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    // same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` with a form POST, and the
    // origin check needs the real one. Other sites never see a console address (or a sign-in token in one).
    reply.header('referrer-policy', 'same-origin');
    reply.header('cross-origin-opener-policy', 'same-origin');
    reply.header('strict-transport-security', 'max-age=31536000');
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    return payload;
  });
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });
  // The only routes without a session: the stylesheet and the script (code from this repository, no data).
  app.get('/assets/:name', async (req, reply) => {
    const a = assets.get((req.params as { name: string }).name);
    if (!a) throw new ConsoleError('CONSOLE_NOT_FOUND', 'no such asset');
    return reply.type(a.type).header('cache-control', 'private, max-age=300').send(a.body);
  });

  const broker = new BrokerMetricsReader(config.brokerMetrics, log);
  const sessions = new Sessions(deps.registry, config);
  registerRoutes(app, {
    registry: deps.registry,
    ca: deps.ca,
    crl: deps.crl,
    actions: deps.actions,
    sessions,
    broker,
    sessionTtlSeconds: config.sessionTtlSeconds,
  });
  await app.ready();

  // Housekeeping: old sign-ins and connection history beyond its retention, hourly.
  const prune = async () => {
    try {
      const db = dbOf(deps.registry);
      const signIns = await pruneConsoleSignIns(db);
      let history = 0;
      for (let n = -1; n !== 0; ) {
        n = await prunePresenceHistory(db, new Date(Date.now() - config.historyDays * 86_400_000));
        history += n;
      }
      if (signIns + history > 0) log.info({ event: 'console_pruned', signIns, history });
    } catch (err) {
      log.warn({ event: 'console_prune_failed', err }, 'pruning failed');
    }
  };
  const pruner = setInterval(() => void prune(), 3600_000);
  pruner.unref();

  let port = config.port;
  return {
    app,
    url: () =>
      config.publicUrl ?? `https://${deps.host.includes(':') ? `[${deps.host}]` : deps.host}:${port}`,
    async listen(host: string) {
      await app.listen({ port: config.port, host });
      port = (app.server.address() as AddressInfo).port;
      broker.start();
      void prune();
      log.info({ event: 'console_listening', host, port });
      return port;
    },
    renew() {
      if (fromFiles) return;
      (app.server as import('node:https').Server).setSecureContext({ ...tls(), minVersion: 'TLSv1.2' });
    },
    async close() {
      clearInterval(pruner);
      broker.stop();
      await app.close();
    },
  };
}

/**
 * Provisioning's one hook: the console's API routes on the mTLS listener, and the console's own HTTPS
 * listener when the console is on. `listen` answers undefined when it is off.
 */
export async function attachConsole(
  api: FastifyInstance,
  config: ConsoleConfig | undefined,
  deps: ConsoleDeps,
): Promise<{
  server: ConsoleServer | undefined;
  listen(host: string): Promise<number | undefined>;
  renew(): void;
  close(): Promise<void>;
}> {
  const server = config?.enabled ? await buildConsole(config, deps) : undefined;
  registerConsoleApi(api, { registry: deps.registry, auth: deps.auth, config, url: () => server?.url() });
  return {
    server,
    listen: async (host) => (server ? server.listen(host) : undefined),
    renew: () => server?.renew(),
    close: async () => server?.close(),
  };
}
