/** What both Fastify apps share: one error shape with stable codes, and Fastify's own errors mapped to ours. */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FleetError } from '../pki/errors.ts';
import { type Registry, ref } from '../registry/index.ts';
import { ProvisioningError, toFleetError } from './errors.ts';

/** Fastify's framework errors (FST_ERR_…) and validation failures, as our codes. */
export function mapError(err: unknown): FleetError {
  if (err instanceof FleetError) return err;
  const e = err as FastifyError & { validationContext?: string };
  if (e && Array.isArray(e.validation)) {
    const where = e.validationContext ?? 'body';
    const first = e.validation[0];
    const field =
      (first?.params as { missingProperty?: string; additionalProperty?: string } | undefined)
        ?.missingProperty ??
      (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty ??
      first?.instancePath?.replace(/^\//, '');
    return new ProvisioningError(where === 'body' ? 'BODY_INVALID' : 'QUERY_INVALID', e.message, {
      details: { in: where, ...(field ? { field } : {}) },
    });
  }
  switch (e?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ProvisioningError('BODY_MALFORMED_JSON', 'the body is not valid JSON', { cause: err });
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ProvisioningError('BODY_TOO_LARGE', 'the body is over the size limit', { cause: err });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ProvisioningError(
        'CONTENT_TYPE_UNSUPPORTED',
        'this endpoint does not take that content type',
        {
          cause: err,
        },
      );
    case 'FST_ERR_BAD_URL':
      return new ProvisioningError('URL_INVALID', 'the URL is malformed (bad percent-encoding)', {
        cause: err,
      });
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new ProvisioningError('URL_TOO_LONG', 'a path segment is longer than the router takes', {
        cause: err,
      });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ProvisioningError('BODY_INVALID', 'the body length disagrees with Content-Length', {
        cause: err,
      });
  }
  return toFleetError(err);
}

/**
 * One error answer for every failure. A refusal of an identified caller (`req.actor`, set once the TLS
 * identity is known) is recorded in the audit log under the route's action; anonymous refusals are only
 * logged, so an unauthenticated flood cannot grow the database.
 */
export function installErrorHandling(app: FastifyInstance, registry?: Registry): void {
  app.setErrorHandler(async (err, req, reply) => {
    const fe = mapError(err);
    if (fe.httpStatus >= 500)
      req.log.error({ event: 'request_failed', code: fe.code, err }, 'request failed');
    else req.log.info({ event: 'request_refused', code: fe.code, cause: fe.cause }, fe.message);
    const actor = (req as { actor?: string | null }).actor;
    if (registry && actor) {
      const action = req.routeOptions.config.action ?? `${req.method} ${req.routeOptions.url ?? ''}`;
      const body = req.body as { deviceId?: unknown } | undefined;
      const deviceId = typeof body?.deviceId === 'string' ? body.deviceId : undefined;
      await auditRefusal(registry, req, actor, action, deviceId, fe);
    }
    return reply.code(fe.httpStatus).type('application/json; charset=utf-8').send({ error: fe.toPublic() });
  });
  app.setNotFoundHandler((req, reply) =>
    reply
      .code(404)
      .type('application/json; charset=utf-8')
      .send({
        error: { code: 'ROUTE_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` },
      }),
  );
}

/**
 * Fastify's `frameworkErrors`: what its router refuses before any route or hook runs (a bad percent-encoding,
 * a path parameter over maxParamLength) gets our error shape and code too, not Fastify's own body.
 */
export function frameworkErrors(err: Error, req: FastifyRequest, reply: FastifyReply): void {
  const fe = mapError(err);
  req.log.info({ event: 'request_refused', code: fe.code }, fe.message);
  reply.code(fe.httpStatus).type('application/json; charset=utf-8').send({ error: fe.toPublic() });
}

/** JSON schema of the error answer, for the OpenAPI document. */
export const ERROR_SCHEMA = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: { type: 'object', additionalProperties: true },
      },
      required: ['code', 'message'],
    },
  },
} as const;

/** Records a refused request of an identified caller. Never fails the answer. */
export async function auditRefusal(
  registry: Registry,
  req: FastifyRequest,
  actor: string,
  action: string,
  deviceId: string | undefined,
  e: FleetError,
): Promise<void> {
  try {
    await registry.appendAudit({
      actor,
      action,
      subject:
        deviceId && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(deviceId) ? ref('device', deviceId) : null,
      outcome: e.httpStatus >= 500 ? 'failure' : 'denied',
      details: { code: e.code },
    });
  } catch (err) {
    req.log.error({ event: 'audit_write_failed', err }, 'could not record a refusal in the audit log');
  }
}
