/**
 * Routes of the mTLS listener: station enrollment (JSON and NDJSON batch), EST (RFC 7030) and the operator
 * API. Every route but `/.well-known/est/cacerts` and `/healthz` authenticates the TLS peer first (see
 * auth.ts) and checks the identity kind the route needs; who may do what is never read from a header.
 */
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CertificateAuthority } from '../pki/ca.ts';
import { OPERATOR_REASONS } from '../pki/crl.ts';
import { checkCsr, csrToDer } from '../pki/csr.ts';
import * as der from '../pki/der.ts';
import { FleetError, PkiError } from '../pki/errors.ts';
import { assertValidId, type Identity, type IdentityKind } from '../pki/ids.ts';
import { OID } from '../pki/oids.ts';
import { certsOnly, fromBase64Body, PKCS7_MIME, toBase64Body } from '../pki/pkcs7.ts';
import { certToPem } from '../pki/x509.ts';
import {
  DEFAULT_ROTATION_GRACE_MS,
  type PrincipalKind,
  type Registry,
  ref,
  SUBJECT_STATUSES,
  type SubjectStatus,
} from '../registry/index.ts';
import type { Authenticator } from './auth.ts';
import { runBatch } from './batch.ts';
import type { CrlPublisher } from './crl.ts';
import { type Enrollment, enrollmentAnswer } from './enroll.ts';
import { ProvisioningError } from './errors.ts';
import { auditRefusal, ERROR_SCHEMA } from './http.ts';
import { type Issuance, newCertificateRow } from './issuance.ts';
import { OperatorActions } from './operator-actions.ts';

export interface ApiDeps {
  ca: CertificateAuthority;
  registry: Registry;
  auth: Authenticator;
  enrollment: Enrollment;
  issuance: Issuance;
  crl: CrlPublisher;
  brokerUrl: string;
  /** How long a certificate superseded by simplereenroll stays usable (default 24 hours). */
  rotationGraceMs?: number;
  /** Lines per batch chunk. */
  batchChunkLines?: number;
  /** The status actions (shared with the console); made here when not given. */
  actions?: OperatorActions;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** `<kind>:<id>` of the authenticated caller, once known (for the audit of refusals). */
    actor: string | null;
    /** The caller, authenticated before its body or query was read (routes with `config.auth`). */
    caller: Identity | null;
  }
  interface FastifyContextConfig {
    /** The audit action a refusal of this route is recorded under. */
    action?: string;
    /** Who may call the route: authenticated in onRequest, before the body is parsed or validated. */
    auth?: RouteAuth;
  }
}

export interface RouteAuth {
  readonly kinds: readonly IdentityKind[];
  /** The superseded certificate of a device still re-enrolls (EST simplereenroll). */
  readonly allowSuperseded?: boolean;
}

/**
 * Authenticates every route that declares `config.auth`, in onRequest: before Fastify parses or validates
 * the body and the query, so an anonymous or foreign caller gets its 401 (a caller of the wrong kind its
 * 403) and learns nothing from validation, and no body of an unauthenticated caller is read. Installed
 * once per app, before the routes.
 */
export function installAuthentication(app: FastifyInstance, auth: Authenticator): void {
  app.decorateRequest('actor', null);
  app.decorateRequest('caller', null);
  app.addHook('onRequest', async (req) => {
    const need = req.routeOptions.config.auth;
    if (!need) return;
    const socket = req.raw.socket as TLSSocket;
    const who = auth.identityOf(socket);
    req.actor = ref(who.kind, who.id);
    req.caller = await auth.authenticate(socket, need.kinds, {
      ...(need.allowSuperseded ? { allowSuperseded: true } : {}),
    });
  });
}

/** The caller onRequest authenticated; a route without `config.auth` that asks fails closed (500). */
export function callerOf(req: FastifyRequest): Identity {
  if (!req.caller)
    throw new ProvisioningError('INTERNAL', 'internal error', {
      cause: new Error(`${req.url}: no config.auth`),
    });
  return req.caller;
}

const STATION: RouteAuth = { kinds: ['station'] };
const OPERATOR: RouteAuth = { kinds: ['operator'] };
/** Free text compared against a text column: no control characters (PostgreSQL cannot hold NUL). */
const NO_CONTROLS = '^[^\\u0000-\\u001f\\u007f]*$';

export const EST_CSR_TYPES = ['application/pkcs10'];
const EST_CSR_MAX = 64 * 1024;

const ANY = { type: 'object', additionalProperties: true } as const;
const err = {
  200: ANY,
  201: ANY,
  400: ERROR_SCHEMA,
  401: ERROR_SCHEMA,
  403: ERROR_SCHEMA,
  404: ERROR_SCHEMA,
  409: ERROR_SCHEMA,
};
const id = { type: 'string', minLength: 1, maxLength: 64 };
const reasonSchema = { type: 'string', enum: [...OPERATOR_REASONS] };

const KIND_PATHS: Record<'stations' | 'services' | 'operators', PrincipalKind> = {
  stations: 'station',
  services: 'service',
  operators: 'operator',
};

export function registerApiRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const { ca, registry, auth, enrollment, issuance, crl } = deps;
  const actions = deps.actions ?? new OperatorActions(registry, auth, crl);
  // Only the types each route declares: no text/plain fallback.
  app.removeContentTypeParser('text/plain');

  app.addContentTypeParser(EST_CSR_TYPES, { parseAs: 'string', bodyLimit: EST_CSR_MAX }, (_req, body, done) =>
    done(null, body),
  );
  // The batch body is read as a stream by the route itself (never buffered whole).
  app.addContentTypeParser('application/x-ndjson', (_req, payload, done) => done(null, payload));

  // ---------------------------------------------------------------------------------- enrollment

  app.post(
    '/v1/enrollments',
    {
      config: { action: 'device.enroll', auth: STATION },
      schema: {
        tags: ['enrollment'],
        summary: 'Enroll one device (station certificate). Idempotent for the same device id and key.',
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['deviceId', 'product', 'csr'],
          properties: {
            deviceId: id,
            product: id,
            fleet: id,
            csr: {
              type: 'string',
              minLength: 1,
              maxLength: 48 * 1024,
              description: 'PKCS#10, PEM or base64 DER',
            },
          },
        },
        response: { ...err, 429: ERROR_SCHEMA },
      },
    },
    async (req, reply) => {
      const station = callerOf(req);
      const body = req.body as { deviceId: string; product: string; fleet?: string; csr: string };
      const r = await enrollment.enroll(station, body);
      return reply
        .code(r.reused ? 200 : 201)
        .send(enrollmentAnswer(body.deviceId, r, ca.rootPem, deps.brokerUrl));
    },
  );

  app.post(
    '/v1/enrollments/batch',
    {
      config: { action: 'device.enroll', auth: STATION },
      schema: {
        tags: ['enrollment'],
        summary:
          'Enroll many devices: NDJSON in (one {deviceId, product, csr} a line), NDJSON out (one result a line, in order), streamed.',
        consumes: ['application/x-ndjson'],
        produces: ['application/x-ndjson'],
      },
    },
    async (req, reply) => {
      const station = callerOf(req);
      if (!(req.body instanceof Readable)) {
        throw new ProvisioningError(
          'CONTENT_TYPE_UNSUPPORTED',
          'the batch body must be application/x-ndjson',
        );
      }
      const socket = req.raw.socket as TLSSocket;
      const lines = runBatch(
        {
          enrollment,
          authenticate: () => auth.authenticate(socket, ['station']),
          auditRefusal: (actor, deviceId, e) =>
            auditRefusal(registry, req, actor, 'device.enroll', deviceId, e),
          ...(deps.batchChunkLines ? { chunkLines: deps.batchChunkLines } : {}),
        },
        req.body,
      );
      req.log.info({ event: 'batch_started', station: station.id });
      return reply
        .code(200)
        .type('application/x-ndjson')
        .send(Readable.from(lines, { objectMode: false }));
    },
  );

  // ---------------------------------------------------------------------------------- EST (RFC 7030)

  app.get(
    '/.well-known/est/cacerts',
    {
      schema: {
        tags: ['est'],
        summary: 'CA certificates, base64 PKCS#7 certs-only (no client certificate needed)',
      },
    },
    async (_req, reply) =>
      estReply(reply, [ca.root, ca.issuers.device.certificate, ca.issuers.infrastructure.certificate]),
  );

  const simpleenroll = async (req: FastifyRequest<{ Params: { label?: string } }>, reply: FastifyReply) => {
    const station = callerOf(req);
    const csr = estCsr(req.body);
    // EST carries no device id but the CSR: the subject CN is the device id (RFC 7030 §4.2.1).
    const cn = checkCsr(csr).commonName;
    if (cn === undefined)
      throw new PkiError('CSR_SUBJECT_INVALID', 'EST enrollment needs the device id as the CSR subject CN');
    const row = await auth.station(station.id);
    let product = req.params.label;
    if (product === undefined) {
      if (row.products?.length !== 1) {
        throw new ProvisioningError(
          'EST_PRODUCT_REQUIRED',
          'this station enrolls several products: name one as the EST label, /.well-known/est/<product>/simpleenroll',
        );
      }
      product = row.products[0]!;
    }
    const r = await enrollment.enroll(station, { deviceId: cn, product, csr });
    return estReply(reply, [r.der, ...r.chain]);
  };
  const estEnrollOpts = (summary: string, action: string, auth: RouteAuth) => ({
    config: { action, auth },
    schema: { tags: ['est'], summary, consumes: EST_CSR_TYPES },
  });
  app.post(
    '/.well-known/est/simpleenroll',
    estEnrollOpts('EST enroll (station certificate)', 'device.enroll', STATION),
    simpleenroll,
  );
  app.post(
    '/.well-known/est/:label/simpleenroll',
    estEnrollOpts('EST enroll with the product as label (station certificate)', 'device.enroll', STATION),
    simpleenroll,
  );

  const REENROLL: RouteAuth = { kinds: ['device'], allowSuperseded: true };
  const simplereenroll = async (req: FastifyRequest, reply: FastifyReply) => {
    const device = callerOf(req);
    const csr = estCsr(req.body);
    let checked: ReturnType<typeof checkCsr>;
    try {
      checked = checkCsr(csr, device.id);
    } catch (e) {
      if (e instanceof FleetError && e.code === 'CSR_SUBJECT_MISMATCH') {
        throw new ProvisioningError(
          'REENROLL_IDENTITY_MISMATCH',
          'the CSR names another device than the certificate',
          {
            cause: e,
          },
        );
      }
      throw e;
    }
    const chain = ca.chainFor('device');
    // A retry after a lost answer: the new key already has its certificate.
    const existing = await registry.findCertificateForKey(
      { kind: 'device', id: device.id },
      checked.spkiSha256,
    );
    if (existing) return estReply(reply, [Buffer.from(existing.der), ...chain]);
    const cert = ca.issue({ profile: 'device', id: device.id, spki: checked.spki });
    // The old certificate stays usable until the new one first connects or the grace period ends
    // (registry/rotation.ts).
    await registry.supersede(device.serial, newCertificateRow(cert), {
      actor: ref('device', device.id),
      details: { via: 'est.simplereenroll' },
      graceMs: deps.rotationGraceMs ?? DEFAULT_ROTATION_GRACE_MS,
    });
    auth.invalidate();
    return estReply(reply, [cert.der, ...chain]);
  };
  app.post(
    '/.well-known/est/simplereenroll',
    estEnrollOpts(
      'EST re-enroll (the device certificate; the old one is superseded)',
      'device.reenroll',
      REENROLL,
    ),
    simplereenroll,
  );
  app.post(
    '/.well-known/est/:label/simplereenroll',
    estEnrollOpts('EST re-enroll with a label', 'device.reenroll', REENROLL),
    simplereenroll,
  );

  app.get(
    '/.well-known/est/csrattrs',
    {
      config: { auth: { kinds: ['station', 'device', 'operator', 'service'] } },
      schema: {
        tags: ['est'],
        summary: 'CSR attributes (RFC 7030 §4.5): a P-256 key signed with ECDSA SHA-256',
      },
    },
    async (_req, reply) => {
      // CsrAttrs ::= SEQUENCE OF AttrOrOID: ecdsa-with-SHA256, and ecPublicKey on prime256v1.
      const attrs = der.seq(
        der.oid(OID.ecdsaWithSHA256),
        der.seq(der.oid(OID.ecPublicKey), der.set(der.oid(OID.prime256v1))),
      );
      return reply
        .type('application/csrattrs')
        .header('content-transfer-encoding', 'base64')
        .send(toBase64Body(attrs));
    },
  );

  // ---------------------------------------------------------------------------------- operator: devices

  const actorOf = (who: Identity) => ref(who.kind, who.id);

  app.get(
    '/v1/devices',
    {
      config: { action: 'device.list', auth: OPERATOR },
      schema: {
        tags: ['operator'],
        summary: 'List devices (operator)',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            status: { type: 'string', enum: [...SUBJECT_STATUSES] },
            product: id,
            fleet: id,
            station: id,
            enrolledFrom: { type: 'string', format: 'date-time' },
            enrolledTo: { type: 'string', format: 'date-time' },
            expiringWithinDays: { type: 'number', minimum: 0, maximum: 36500 },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            cursor: id,
          },
        },
        response: err,
      },
    },
    async (req) => {
      const q = req.query as Record<string, string | number | undefined>;
      return registry.listDevices({
        status: q['status'] as SubjectStatus | undefined,
        product: q['product'] as string | undefined,
        fleet: q['fleet'] as string | undefined,
        enrolledBy: q['station'] as string | undefined,
        enrolledFrom: q['enrolledFrom'] ? new Date(q['enrolledFrom']) : undefined,
        enrolledTo: q['enrolledTo'] ? new Date(q['enrolledTo']) : undefined,
        expiringWithinDays: q['expiringWithinDays'] as number | undefined,
        limit: q['limit'] as number | undefined,
        cursor: q['cursor'] as string | undefined,
      });
    },
  );

  app.get(
    '/v1/devices/:id',
    {
      config: { action: 'device.show', auth: OPERATOR },
      schema: { tags: ['operator'], summary: 'One device with its certificates and presence', response: err },
    },
    async (req) => {
      const { id: deviceId } = req.params as { id: string };
      assertValidId(deviceId, 'device id');
      const d = await registry.getDevice(deviceId);
      if (!d) throw new ProvisioningError('DEVICE_NOT_FOUND', `no device ${deviceId}`);
      return d;
    },
  );

  app.post(
    '/v1/devices',
    {
      config: { action: 'device.issue', auth: OPERATOR },
      schema: {
        tags: ['operator'],
        summary:
          'Issue a device certificate (operator), outside any station scope or quota. Idempotent for the same id and key.',
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'product', 'csr'],
          properties: {
            id,
            product: id,
            fleet: id,
            csr: {
              type: 'string',
              minLength: 1,
              maxLength: 48 * 1024,
              description: 'PKCS#10, PEM or base64 DER',
            },
          },
        },
        response: err,
      },
    },
    async (req, reply) => {
      const who = callerOf(req);
      const body = req.body as { id: string; product: string; fleet?: string; csr: string };
      const r = await issuance.issueDevice({
        id: body.id,
        product: body.product,
        fleet: body.fleet,
        csr: body.csr,
        actor: actorOf(who),
      });
      return reply.code(r.reused ? 200 : 201).send(enrollmentAnswer(body.id, r, ca.rootPem, deps.brokerUrl));
    },
  );

  const reasonBody = {
    type: 'object',
    additionalProperties: false,
    properties: { reason: reasonSchema },
  };
  for (const action of ['revoke', 'suspend', 'reinstate', 'reset'] as const) {
    app.post(
      `/v1/devices/:id/${action}`,
      {
        config: { action: `device.${action}`, auth: OPERATOR },
        schema: {
          tags: ['operator'],
          summary: `${action[0]!.toUpperCase()}${action.slice(1)} a device`,
          ...(action === 'revoke' ? { body: reasonBody } : {}),
          response: err,
        },
      },
      async (req) => {
        const who = callerOf(req);
        const { id: deviceId } = req.params as { id: string };
        assertValidId(deviceId, 'device id');
        return actions.device(actorOf(who), deviceId, action, {
          reason: (req.body as { reason?: string } | undefined)?.reason,
        });
      },
    );
  }

  // ---------------------------------------------------------------------------------- operator: principals

  for (const [path, kind] of Object.entries(KIND_PATHS)) {
    const createProps: Record<string, unknown> = { id };
    if (kind === 'station') {
      createProps['products'] = { type: 'array', items: id, maxItems: 1000 };
      createProps['hourlyQuota'] = { type: ['integer', 'null'], minimum: 0, maximum: 2_147_483_647 };
    }
    if (kind === 'service') createProps['role'] = id;
    app.post(
      `/v1/${path}`,
      {
        config: { action: `${kind}.create`, auth: OPERATOR },
        schema: {
          tags: ['operator'],
          summary: `Create a ${kind}`,
          body: { type: 'object', additionalProperties: false, required: ['id'], properties: createProps },
          response: err,
        },
      },
      async (req, reply) => {
        const who = callerOf(req);
        const b = req.body as { id: string; products?: string[]; hourlyQuota?: number | null; role?: string };
        assertValidId(b.id, `${kind} id`);
        const row = await registry.createPrincipal(
          {
            kind,
            id: b.id,
            products: b.products ?? null,
            hourlyQuota: b.hourlyQuota ?? null,
            role: b.role ?? null,
          },
          actorOf(who),
        );
        return reply.code(201).send(row);
      },
    );

    app.get(
      `/v1/${path}`,
      {
        config: { action: `${kind}.list`, auth: OPERATOR },
        schema: {
          tags: ['operator'],
          summary: `List ${path}`,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              status: { type: 'string', enum: [...SUBJECT_STATUSES] },
              limit: { type: 'integer', minimum: 1, maximum: 1000 },
              cursor: { type: 'string', maxLength: 80 },
            },
          },
          response: err,
        },
      },
      async (req) => {
        const q = req.query as { status?: SubjectStatus; limit?: number; cursor?: string };
        return registry.listPrincipals({ kind, ...q });
      },
    );

    app.get(
      `/v1/${path}/:id`,
      {
        config: { action: `${kind}.show`, auth: OPERATOR },
        schema: { tags: ['operator'], summary: `One ${kind}`, response: err },
      },
      async (req) => {
        return principal(registry, kind, (req.params as { id: string }).id);
      },
    );

    app.post(
      `/v1/${path}/:id/certificates`,
      {
        config: { action: `${kind}.issue`, auth: OPERATOR },
        schema: {
          tags: ['operator'],
          summary: `Issue a certificate to a ${kind} for the key in its CSR`,
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['csr'],
            properties: { csr: { type: 'string', minLength: 1, maxLength: 48 * 1024 } },
          },
          response: err,
        },
      },
      async (req, reply) => {
        const who = callerOf(req);
        const p = await principal(registry, kind, (req.params as { id: string }).id);
        const r = await issuance.issuePrincipal(
          principalSubject(p),
          { csr: (req.body as { csr: string }).csr },
          actorOf(who),
        );
        return reply.code(201).send({
          kind,
          id: p.id,
          serial: r.serial,
          fingerprint: r.fingerprint,
          notBefore: r.notBefore.toISOString(),
          notAfter: r.notAfter.toISOString(),
          certificate: certToPem(r.der),
          chain: r.chain.map(certToPem),
          root: ca.rootPem,
        });
      },
    );

    if (kind === 'station') {
      app.patch(
        '/v1/stations/:id',
        {
          config: { action: 'station.scope', auth: OPERATOR },
          schema: {
            tags: ['operator'],
            summary: "Set a station's product scope and/or hourly quota",
            body: {
              type: 'object',
              additionalProperties: false,
              minProperties: 1,
              properties: { products: createProps['products'], hourlyQuota: createProps['hourlyQuota'] },
            },
            response: err,
          },
        },
        async (req) => {
          const who = callerOf(req);
          const { id: stationId } = req.params as { id: string };
          assertValidId(stationId, 'station id');
          const b = req.body as { products?: string[] | null; hourlyQuota?: number | null };
          const row = await registry.setStationScope(stationId, b, actorOf(who));
          auth.invalidate();
          return row;
        },
      );
    }

    const revokeBody =
      kind === 'station'
        ? {
            type: 'object',
            additionalProperties: false,
            properties: {
              reason: reasonSchema,
              cascade: {
                type: 'object',
                additionalProperties: false,
                required: ['from'],
                description:
                  'Also revoke every device the station enrolled in [from, to] (to defaults to now)',
                properties: {
                  from: { type: 'string', format: 'date-time' },
                  to: { type: 'string', format: 'date-time' },
                },
              },
            },
          }
        : reasonBody;
    for (const action of ['revoke', 'suspend', 'reinstate'] as const) {
      app.post(
        `/v1/${path}/:id/${action}`,
        {
          config: { action: `${kind}.${action}`, auth: OPERATOR },
          schema: {
            tags: ['operator'],
            summary: `${action[0]!.toUpperCase()}${action.slice(1)} a ${kind}${kind === 'station' && action === 'revoke' ? ', optionally with the devices it enrolled in a time window' : ''}`,
            ...(action === 'revoke' ? { body: revokeBody } : {}),
            response: err,
          },
        },
        async (req) => {
          const who = callerOf(req);
          const { id: pid } = req.params as { id: string };
          assertValidId(pid, `${kind} id`);
          const body = (req.body ?? {}) as { reason?: string; cascade?: { from: string; to?: string } };
          return actions.principal(actorOf(who), kind, pid, action, {
            reason: body.reason,
            ...(body.cascade
              ? {
                  cascade: {
                    from: new Date(body.cascade.from),
                    ...(body.cascade.to ? { to: new Date(body.cascade.to) } : {}),
                  },
                }
              : {}),
          });
        },
      );
    }
  }

  // ---------------------------------------------------------------------------------- audit, expiring

  app.get(
    '/v1/audit',
    {
      config: { action: 'audit.list', auth: OPERATOR },
      schema: {
        tags: ['operator'],
        summary: 'The audit log, newest first',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            actor: { type: 'string', maxLength: 200, pattern: NO_CONTROLS },
            subject: { type: 'string', maxLength: 200, pattern: NO_CONTROLS },
            action: { type: 'string', maxLength: 100, pattern: NO_CONTROLS },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            cursor: { type: 'string', pattern: '^[0-9]{1,15}$' },
          },
        },
        response: err,
      },
    },
    async (req) => {
      const q = req.query as Record<string, string | number | undefined>;
      return registry.listAudit({
        actor: q['actor'] as string | undefined,
        subject: q['subject'] as string | undefined,
        action: q['action'] as string | undefined,
        from: q['from'] ? new Date(q['from']) : undefined,
        to: q['to'] ? new Date(q['to']) : undefined,
        limit: q['limit'] as number | undefined,
        cursor: q['cursor'] as string | undefined,
      });
    },
  );

  app.get(
    '/v1/certificates/expiring',
    {
      config: { action: 'certificate.expiring', auth: OPERATOR },
      schema: {
        tags: ['operator'],
        summary:
          'Active certificates that expire within N days (default 30), soonest first; expired ones included',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            days: { type: 'number', minimum: 0, maximum: 36500 },
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            cursor: { type: 'string', pattern: '^[0-9a-fA-F]{1,40}$' },
          },
        },
        response: err,
      },
    },
    async (req) => {
      const q = req.query as { days?: number; limit?: number; cursor?: string };
      return registry.expiringCertificates({ withinDays: q.days ?? 30, limit: q.limit, cursor: q.cursor });
    },
  );
}

// ---------------------------------------------------------------------------------------------------------

function estCsr(body: unknown): Buffer {
  if (typeof body !== 'string')
    throw new ProvisioningError('CONTENT_TYPE_UNSUPPORTED', 'EST takes application/pkcs10 (base64 PKCS#10)');
  // RFC 7030 §4.2.1: base64-encoded DER. A PEM block is taken too (some tools send one).
  if (body.includes('-----BEGIN')) return csrToDer(body);
  const d = fromBase64Body(body);
  if (!d) throw new ProvisioningError('EST_BODY_INVALID', 'the EST body is not base64 (RFC 7030 §4.2.1)');
  return d;
}

function estReply(reply: FastifyReply, certs: Buffer[]) {
  return reply
    .code(200)
    .type(PKCS7_MIME)
    .header('content-transfer-encoding', 'base64')
    .send(toBase64Body(certsOnly(certs)));
}

async function principal(registry: Registry, kind: PrincipalKind, pid: string) {
  assertValidId(pid, `${kind} id`);
  const p = await registry.getPrincipal(kind, pid);
  if (!p) throw new ProvisioningError('PRINCIPAL_NOT_FOUND', `no ${kind} ${pid}`);
  return p;
}

function principalSubject(p: { kind: PrincipalKind; id: string }) {
  return { kind: p.kind, id: p.id } as Parameters<Issuance['issuePrincipal']>[0];
}
