/**
 * The plain-HTTP listener: only public, signed objects (CRLs, OCSP answers, CA certificates), a health
 * check and the OpenAPI document. Nothing here changes anything or depends on who asks.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { CertificateAuthority, IssuingCa } from '../pki/ca.ts';
import { OCSP_CONTENT_TYPE, OCSP_REQUEST_MAX_BYTES, ocspRequestFromGetPath } from '../pki/ocsp.ts';
import { certToPem } from '../pki/x509.ts';
import type { Registry } from '../registry/index.ts';
import type { CrlPublisher } from './crl.ts';
import { ProvisioningError } from './errors.ts';
import type { OcspResponder } from './ocsp.ts';

export interface PublicDeps {
  ca: CertificateAuthority;
  registry: Registry;
  crl: CrlPublisher;
  ocsp: OcspResponder;
  /** The OpenAPI document of the mTLS API. */
  openapi(): unknown;
}

export function registerHealth(app: FastifyInstance, registry: Registry): void {
  app.get(
    '/healthz',
    { schema: { tags: ['public'], summary: 'Health: the service runs and its registry answers' } },
    async (req, reply) => {
      try {
        await registry.generation();
      } catch (cause) {
        req.log.error({ event: 'health_registry_down', err: cause });
        throw new ProvisioningError('SERVICE_UNAVAILABLE', 'the registry does not answer', { cause });
      }
      return reply.header('cache-control', 'no-store').send({ status: 'ok', driver: registry.driver });
    },
  );
}

export function registerPublicRoutes(app: FastifyInstance, deps: PublicDeps): void {
  const { ca, crl, ocsp } = deps;
  registerHealth(app, deps.registry);

  for (const which of ['device', 'infrastructure'] as const satisfies readonly IssuingCa[]) {
    app.get(
      `/crl/${which}.crl`,
      { schema: { tags: ['public'], summary: `The ${which} CA's CRL (DER), rebuilt on every change` } },
      async (req, reply) => {
        const c = await crl.get(which);
        const etag = `"${c.crlNumber.toString(16)}"`;
        reply
          .header('etag', etag)
          .header('last-modified', c.thisUpdate.toUTCString())
          .header('expires', c.nextUpdate.toUTCString())
          // Short: a revocation should reach clients that poll well before nextUpdate.
          .header('cache-control', 'public, max-age=60, must-revalidate');
        if (req.headers['if-none-match'] === etag) return reply.code(304).send();
        return reply.type('application/pkix-crl').send(c.der);
      },
    );
    app.get(`/crl/${which}.crl.pem`, { schema: { hide: true } }, async (_req, reply) =>
      reply.type('application/x-pem-file').send((await crl.get(which)).pem),
    );
  }

  const caCerts: Record<string, Buffer> = {
    root: ca.root,
    device: ca.issuers.device.certificate,
    infrastructure: ca.issuers.infrastructure.certificate,
  };
  app.get(
    '/ca/:name',
    {
      schema: {
        tags: ['public'],
        summary:
          'CA certificates: root|device|infrastructure as .crt (DER) or .pem; trust.pem holds all three',
        params: { type: 'object', properties: { name: { type: 'string', maxLength: 40 } } },
      },
    },
    async (req, reply) => {
      const name = (req.params as { name: string }).name;
      if (name === 'trust.pem') return reply.type('application/x-pem-file').send(ca.trustPem);
      const m = /^(root|device|infrastructure)\.(crt|pem)$/.exec(name);
      if (!m) throw new ProvisioningError('ROUTE_NOT_FOUND', `no CA certificate ${name}`);
      const d = caCerts[m[1]!]!;
      reply.header('cache-control', 'public, max-age=3600');
      return m[2] === 'crt'
        ? reply.type('application/pkix-cert').send(d)
        : reply.type('application/x-pem-file').send(certToPem(d));
    },
  );

  // RFC 6960 Appendix A.1: POST with the DER request as body, or GET with it base64 (and URL-encoded) in
  // the path. The answer is always HTTP 200 with an OCSPResponse, errors included (RFC 5019 §5).
  app.addContentTypeParser(
    OCSP_CONTENT_TYPE.request,
    { parseAs: 'buffer', bodyLimit: OCSP_REQUEST_MAX_BYTES },
    (_req, body, done) => done(null, body),
  );
  const send = (reply: FastifyReply, der: Buffer, cacheable: boolean) =>
    reply
      .type(OCSP_CONTENT_TYPE.response)
      .header('cache-control', cacheable ? 'public, max-age=60' : 'no-store')
      .send(der);
  app.post(
    '/ocsp',
    {
      schema: {
        tags: ['public'],
        summary: 'OCSP (RFC 6960), DER request in the body',
        consumes: [OCSP_CONTENT_TYPE.request],
      },
    },
    async (req, reply) => send(reply, await ocsp.respond(req.body as Buffer), false),
  );
  app.get(
    '/ocsp/*',
    { schema: { tags: ['public'], summary: 'OCSP (RFC 6960 A.1), base64 DER request in the path' } },
    async (req, reply) => {
      // The raw path: the base64 may hold '/', which a router would have split or decoded.
      const raw = (req.raw.url ?? '').split('?')[0]!.replace(/^\/ocsp\//, '');
      let request: Buffer;
      try {
        request = ocspRequestFromGetPath(raw);
      } catch {
        request = Buffer.alloc(0); // answered as malformedRequest below
      }
      return send(reply, await ocsp.respond(request), true);
    },
  );

  app.get('/openapi.json', { schema: { tags: ['public'], summary: 'This OpenAPI document' } }, async () =>
    deps.openapi(),
  );
}
