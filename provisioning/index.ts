/**
 * The provisioning service's public face: `buildProvisioning()` wires the two Fastify apps from
 * configuration and dependencies; `main.ts` only starts it. Tests drive the apps with `inject()` and with
 * real listeners.
 *
 * - api: the mTLS listener (stations, operators, devices re-enrolling): enrollment, batch, EST, operator API.
 * - public: plain HTTP, public signed objects only: CRLs, OCSP, CA certificates, health, OpenAPI.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import AjvCompiler from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { ConsoleConfig } from '../config/index.ts';
import { attachConsole, type ConsoleServer } from '../console/index.ts';
import type { CertificateAuthority } from '../pki/ca.ts';
import { certToPem } from '../pki/x509.ts';
import type { Registry } from '../registry/index.ts';
import { installAuthentication, registerApiRoutes } from './api.ts';
import { Authenticator } from './auth.ts';
import { CrlPublisher } from './crl.ts';
import { Enrollment } from './enroll.ts';
import { frameworkErrors, installErrorHandling } from './http.ts';
import { Issuance } from './issuance.ts';
import { OcspResponder } from './ocsp.ts';
import { OperatorActions } from './operator-actions.ts';
import { registerHealth, registerPublicRoutes } from './public.ts';
import { RotationSweeper } from './rotation.ts';

export interface ProvisioningConfig {
  /** The name clients dial (FLEET_HOST); it goes into the server certificate. */
  readonly host: string;
  readonly apiPort: number;
  readonly publicPort: number;
  /** Handed to enrolled devices. */
  readonly brokerUrl: string;
  /** Where to listen (default: `host`, which for localhost means 127.0.0.1 and ::1). */
  readonly listenHost?: string;
  /** Extra DNS names for the server certificate (localhost, the host and the machine's name are in it). */
  readonly serverNames?: readonly string[];
  /** JSON body limit (default 64 KiB: a CSR and a few ids). */
  readonly bodyLimit?: number;
  /** Lines per batch chunk (default 200). */
  readonly batchChunkLines?: number;
  /** The operator console on its own HTTPS port (console/); absent or disabled = none. */
  readonly console?: ConsoleConfig | undefined;
  /**
   * How long a certificate superseded by EST simplereenroll stays usable if its successor does not connect
   * first (FLEET_ROTATION_GRACE_HOURS; default 24): registry/rotation.ts.
   */
  readonly rotationGraceHours?: number;
}

export interface ProvisioningDeps {
  ca: CertificateAuthority;
  registry: Registry;
  logger: Logger;
}

export interface Provisioning {
  readonly api: FastifyInstance;
  readonly public: FastifyInstance;
  readonly auth: Authenticator;
  readonly crl: CrlPublisher;
  /** Retires superseded certificates when their grace period ends (provisioning/rotation.ts). */
  readonly rotation: RotationSweeper;
  readonly enrollment: Enrollment;
  readonly console: ConsoleServer | undefined;
  /** Listens on the configured ports (0 = any) and returns the ports bound. */
  listen(): Promise<{ apiPort: number; publicPort: number; consolePort?: number }>;
  /** Stops both listeners and the background work. The registry stays open (it is the caller's). */
  close(): Promise<void>;
}

/** Server certificate lifetime: made at start from the infrastructure CA, renewed in place daily. */
const SERVER_CERT_DAYS = 7;
const SERVER_CERT_RENEW_MS = 24 * 3600_000;
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** A fresh key and certificate for the mTLS listener (key only in memory), with the issuing CA after it. */
export function serverCredentials(ca: CertificateAuthority, config: ProvisioningConfig) {
  const names = new Set(['localhost', hostname(), config.host, ...(config.serverNames ?? [])]);
  const dns = [...names].filter((n) => DNS_NAME.test(n) && !IPV4.test(n));
  const ips = new Set(['127.0.0.1', '::1']);
  if (IPV4.test(config.host) || config.host.includes(':')) ips.add(config.host);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const cert = ca.issue({
    profile: 'broker',
    id: dns[0] ?? 'localhost',
    dns,
    ips: [...ips],
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    validityDays: SERVER_CERT_DAYS,
  });
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    // Servers send the full chain: leaf then the infrastructure CA (clients hold the root).
    cert: certToPem(cert.der) + ca.chainFor('broker').map(certToPem).join(''),
  };
}

/**
 * Query strings and path parameters are text, so their numbers are coerced; a JSON body is taken as sent:
 * `"product": 42` is refused (BODY_INVALID), never quietly turned into "42". Unknown fields are refused,
 * not dropped.
 */
function strictBodyValidator() {
  const factory = AjvCompiler();
  return (externalSchemas: unknown, options: { customOptions?: object }) => {
    const opts = (coerceTypes: false | 'array') => ({
      ...options,
      customOptions: { ...options.customOptions, removeAdditional: false, coerceTypes },
    });
    // biome-ignore lint/suspicious/noExplicitAny: the compiler factory's own types are loose
    const strict = factory(externalSchemas as any, opts(false) as any);
    // biome-ignore lint/suspicious/noExplicitAny: as above
    const coercing = factory(externalSchemas as any, opts('array') as any);
    return (route: { httpPart?: string }) =>
      // biome-ignore lint/suspicious/noExplicitAny: as above
      route.httpPart === 'body' ? strict(route as any) : coercing(route as any);
  };
}

export async function buildProvisioning(
  config: ProvisioningConfig,
  deps: ProvisioningDeps,
): Promise<Provisioning> {
  const { ca, registry, logger } = deps;
  const auth = new Authenticator(registry, logger);
  const crl = new CrlPublisher(ca, registry, logger.child({ part: 'crl' }));
  const issuance = new Issuance(ca, registry);
  const enrollment = new Enrollment(issuance, registry, auth, logger);
  const ocsp = new OcspResponder(ca, registry, logger.child({ part: 'ocsp' }));
  const rotation = new RotationSweeper(registry, logger.child({ part: 'rotation' }));
  // biome-ignore lint/suspicious/noExplicitAny: Fastify types the factory more narrowly than it calls it
  const schemaController = { compilersFactory: { buildValidator: strictBodyValidator() as any } };

  const tls = serverCredentials(ca, config);
  const api = Fastify({
    loggerInstance: logger.child({ listener: 'api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit ?? 64 * 1024,
    forceCloseConnections: true,
    frameworkErrors,
    schemaController,
    https: {
      ...tls,
      ca: ca.trustPem,
      requestCert: true,
      // NOT a disabled verification: OpenSSL still verifies every client chain against the fleet trust and
      // records the verdict in socket.authorized. Unverified peers are refused at the route (auth.ts), so
      // only EST cacerts and the health check answer without a client certificate (RFC 7030 §4.1.1).
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
  }) as unknown as FastifyInstance;
  const pub = Fastify({
    loggerInstance: logger.child({ listener: 'public' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024,
    forceCloseConnections: true,
    frameworkErrors,
    schemaController,
  }) as unknown as FastifyInstance;

  await api.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Fleet provisioning API',
        version: '1',
        description:
          'Mutual TLS: every operation but EST cacerts and /healthz needs a client certificate issued by the fleet CA; ' +
          'the identity (station, operator, device) is read from it. Errors are {"error":{"code","message","details"}}.',
      },
      tags: [
        { name: 'enrollment', description: 'Station enrollment of devices' },
        { name: 'est', description: 'EST, RFC 7030' },
        { name: 'operator', description: 'Operator API (operator certificate)' },
        { name: 'public', description: 'Health' },
      ],
    },
  });
  installErrorHandling(api, registry);
  installErrorHandling(pub, registry);
  installAuthentication(api, auth);
  registerHealth(api, registry);
  const actions = new OperatorActions(registry, auth, crl);
  registerApiRoutes(api, {
    ca,
    registry,
    auth,
    enrollment,
    issuance,
    crl,
    actions,
    brokerUrl: config.brokerUrl,
    rotationGraceMs: Math.round((config.rotationGraceHours ?? 24) * 3600_000),
    ...(config.batchChunkLines ? { batchChunkLines: config.batchChunkLines } : {}),
  });
  api.get(
    '/openapi.json',
    {
      config: { auth: { kinds: ['operator', 'station', 'device', 'service'] } },
      schema: { hide: true },
    },
    async () => api.swagger(),
  );
  registerPublicRoutes(pub, { ca, registry, crl, ocsp, openapi: () => api.swagger() });
  const consolePart = await attachConsole(api, config.console, {
    ca,
    registry,
    auth,
    crl,
    actions,
    logger,
    host: config.host,
    credentials: () => serverCredentials(ca, config),
  });

  await auth.start();
  await crl.start();
  await rotation.start();
  await Promise.all([api.ready(), pub.ready()]);

  const renew = setInterval(() => {
    try {
      const next = serverCredentials(ca, config);
      (api.server as import('node:https').Server).setSecureContext({
        ...next,
        ca: ca.trustPem,
        minVersion: 'TLSv1.2',
      });
      consolePart.renew();
      logger.info({ event: 'server_certificate_renewed' });
    } catch (err) {
      logger.error({ event: 'server_certificate_renew_failed', err });
    }
  }, SERVER_CERT_RENEW_MS);
  renew.unref();

  let closed = false;
  return {
    api,
    public: pub,
    auth,
    crl,
    rotation,
    enrollment,
    console: consolePart.server,
    async listen() {
      const host = config.listenHost ?? config.host;
      await api.listen({ port: config.apiPort, host });
      await pub.listen({ port: config.publicPort, host });
      const port = (f: FastifyInstance) => (f.server.address() as AddressInfo).port;
      const consolePort = await consolePart.listen(host);
      const ports = { apiPort: port(api), publicPort: port(pub), ...(consolePort ? { consolePort } : {}) };
      logger.info({ event: 'provisioning_listening', host, ...ports });
      return ports;
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(renew);
      await Promise.allSettled([api.close(), pub.close(), consolePart.close()]);
      await rotation.stop();
      await auth.stop();
      await crl.stop();
    },
  };
}
