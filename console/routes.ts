/**
 * The console's routes. Every route but the sign-in page, its POST and the two static assets runs behind
 * `requireOperator` (a live session of an active operator); every POST also behind the origin and CSRF
 * checks. Actions go through provisioning's OperatorActions, the operator API's own code path, audited
 * under the signed-in operator with `via: console`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CertificateAuthority } from '../pki/ca.ts';
import { OPERATOR_REASONS } from '../pki/crl.ts';
import { FleetError } from '../pki/errors.ts';
import { assertValidId } from '../pki/ids.ts';
import type { CrlPublisher } from '../provisioning/crl.ts';
import type { OperatorActions, PrincipalAction } from '../provisioning/operator-actions.ts';
import {
  cascadePreview,
  cascadeSessions,
  countDevices,
  type DeviceSearch,
  dbOf,
  expiringCount,
  findConsoleSessionByPrefix,
  listConsoleSessions,
  presenceHistoryOf,
  revokeConsoleSessions,
  searchDevices,
  stationDeviceCount,
  stationUsage,
} from '../registry/console.ts';
import type { PresenceHistoryRow } from '../registry/console-schema.ts';
import { type PrincipalKind, type Registry, ref, type SubjectStatus } from '../registry/index.ts';
import type { BrokerMetricsReader } from './broker-metrics.ts';
import { ConsoleError } from './errors.ts';
import { html, num, qs, when } from './html.ts';
import { overview } from './overview.ts';
import {
  checkCsrf,
  checkOrigin,
  clearSessionCookie,
  type Operator,
  type Sessions,
  setSessionCookie,
} from './session.ts';
import * as v from './views.ts';

export interface RouteDeps {
  registry: Registry;
  ca: CertificateAuthority;
  crl: CrlPublisher;
  actions: OperatorActions;
  sessions: Sessions;
  broker: BrokerMetricsReader;
  sessionTtlSeconds: number;
}

const KINDS: Record<string, PrincipalKind> = {
  stations: 'station',
  services: 'service',
  operators: 'operator',
};
const DEVICE_ACTIONS = ['revoke', 'suspend', 'reinstate', 'reset'] as const;
const PRINCIPAL_ACTIONS = ['revoke', 'suspend', 'reinstate'] as const;

type Q = Record<string, string | undefined>;

const str = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined);

function bad(message: string, field: string): ConsoleError {
  return new ConsoleError('CONSOLE_INPUT_INVALID', message, { details: { field } });
}

function idParam(v: unknown, what: string): string {
  if (typeof v !== 'string') throw bad(`${what} is missing`, what);
  try {
    assertValidId(v, what);
  } catch (e) {
    throw new ConsoleError('CONSOLE_INPUT_INVALID', (e as Error).message, { details: { field: what } });
  }
  return v;
}

/** A `datetime-local` (taken as UTC) or ISO time. */
function timeParam(v: string | undefined, field: string): Date | undefined {
  if (!v) return undefined;
  const t = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(v) ? v : `${v}Z`);
  if (Number.isNaN(t.getTime())) throw bad(`${field} is not a time`, field);
  return t;
}

/** A search from the query string, or a typed refusal. */
function deviceSearch(q: Q): DeviceSearch {
  const s: DeviceSearch = {};
  const term = str(q['q']);
  if (term) s.prefix = idParam(term, 'id prefix');
  for (const f of ['product', 'fleet', 'station'] as const) {
    const val = str(q[f]);
    if (val) s[f] = idParam(val, f);
  }
  const status = str(q['status']);
  if (status) {
    if (!['active', 'suspended', 'revoked'].includes(status))
      throw bad('status is active, suspended or revoked', 'status');
    s.status = status as SubjectStatus;
  }
  const c = str(q['connected']);
  if (c) {
    if (c !== 'yes' && c !== 'no') throw bad('connected is yes or no', 'connected');
    s.connected = c === 'yes';
  }
  const cursor = str(q['cursor']);
  if (cursor) s.cursor = idParam(cursor, 'cursor');
  return s;
}

/** What the brokers reported about the device's live session around a status change at `since`. */
export function sessionAfter(since: Date, history: PresenceHistoryRow[]) {
  const at = since.getTime();
  const open = history.find(
    (h) => h.connectedAt.getTime() <= at && (h.disconnectedAt === null || h.disconnectedAt.getTime() >= at),
  );
  if (!open) return { state: 'none' as const, text: 'none: the device was not connected when this was done' };
  if (open.disconnectedAt === null)
    return {
      state: 'open' as const,
      text: `still open on ${open.brokerNode ?? '?'} (connected since ${open.connectedAt.toISOString()}): waiting for the brokers to report it closed`,
    };
  const after = open.disconnectedAt.getTime() - at;
  return {
    state: 'closed' as const,
    closedAt: open.disconnectedAt.toISOString(),
    afterMs: after,
    text: `closed at ${open.disconnectedAt.toISOString().replace('T', ' ').replace('Z', ' UTC')} by broker node ${open.brokerNode ?? '?'} (${after} ms after the change; it was connected from ${open.remoteAddress ?? '?'} since ${open.connectedAt.toISOString()})`,
  };
}

export function registerRoutes(app: FastifyInstance, d: RouteDeps): void {
  const { registry } = d;
  const db = () => dbOf(registry);

  app.decorateRequest('operator', null);

  const requireOperator = async (req: FastifyRequest) => {
    req.operator = await d.sessions.authenticate(req);
  };
  /** The pages' background refresh: authenticated, but not activity that keeps an idle session alive. */
  const requireOperatorQuietly = async (req: FastifyRequest) => {
    req.operator = await d.sessions.authenticate(req, { touch: false });
  };
  /** POSTs: a live session, from the console's origin, with the session's CSRF token. */
  const requireAction = async (req: FastifyRequest) => {
    checkOrigin(req);
    req.operator = await d.sessions.authenticate(req);
    try {
      checkCsrf(req, req.operator);
    } catch (e) {
      await registry
        .appendAudit({
          actor: req.operator.actor,
          action: 'console.csrf_refused',
          outcome: 'denied',
          details: { path: req.url.split('?')[0], session: req.operator.sessionRef },
        })
        .catch(() => {});
      throw e;
    }
  };
  const op = (req: FastifyRequest): Operator => req.operator!;
  const send = (
    reply: FastifyReply,
    req: FastifyRequest,
    title: string,
    body: ReturnType<typeof html>,
    h1?: ReturnType<typeof html>,
  ) =>
    reply
      .type('text/html; charset=utf-8')
      .send(v.page({ title, path: req.url.split('?')[0]!, op: op(req), body, ...(h1 ? { h1 } : {}) }));
  const via = (req: FastifyRequest) => ({ via: 'console', session: op(req).sessionRef });

  // ------------------------------------------------------------------------------------------ sign-in

  app.get('/signin', async (req, reply) => {
    const token = str((req.query as Q)['token']);
    return reply.type('text/html; charset=utf-8').send(
      v.page({
        title: 'Sign in',
        path: '/signin',
        body: token
          ? html`<form method="post" action="/signin"><input type="hidden" name="token" value="${token}">
<p>This one-time link signs this browser in to the Fleet console.</p>
<p><button type="submit" autofocus>Continue to the console</button></p></form>`
          : v.messageBody(
              'No sign-in link.',
              html`<p>Run <code>npx fleet console</code> and open the link it prints.</p>`,
            ),
      }),
    );
  });

  app.post('/signin', async (req, reply) => {
    checkOrigin(req);
    const token = str((req.body as Q | undefined)?.['token']) ?? '';
    const r = await d.sessions.redeem(token, {
      address: req.socket.remoteAddress ?? null,
      userAgent: typeof req.headers['user-agent'] === 'string' ? req.headers['user-agent'] : null,
    });
    if ('refused' in r) {
      // An unknown token is only logged (an anonymous flood must not grow the database); a real link
      // used again or too late is audited under its operator.
      if (r.operator)
        await registry.appendAudit({
          actor: ref('operator', r.operator),
          action: 'console.sign_in',
          outcome: 'denied',
          details: { reason: `link_${r.refused}`, address: req.socket.remoteAddress ?? null },
        });
      req.log.info({ event: 'console_sign_in_refused', reason: r.refused });
      const why = { unknown: 'is not a sign-in link', expired: 'has expired', used: 'was already used' }[
        r.refused
      ];
      throw new ConsoleError(
        'CONSOLE_LINK_INVALID',
        `This link ${why}: run \`fleet console\` for a new one.`,
        {
          details: { reason: r.refused },
        },
      );
    }
    await registry.appendAudit({
      actor: ref('operator', r.session.operator),
      action: 'console.sign_in',
      outcome: 'success',
      details: { session: r.session.idSha256.slice(0, 16), address: r.session.address },
    });
    setSessionCookie(reply, r.token, d.sessionTtlSeconds);
    return reply.code(303).header('location', '/').send();
  });

  app.post('/signout', { preHandler: requireAction }, async (req, reply) => {
    await revokeConsoleSessions(db(), { idSha256: op(req).session.idSha256 }, op(req).actor);
    await registry.appendAudit({
      actor: op(req).actor,
      action: 'console.sign_out',
      outcome: 'success',
      details: { session: op(req).sessionRef },
    });
    clearSessionCookie(reply);
    return reply.code(303).header('location', '/signin').send();
  });

  app.post('/sessions/:ref/revoke', { preHandler: requireAction }, async (req, reply) => {
    const { ref: sref } = req.params as { ref: string };
    if (!/^[0-9a-f]{16}$/.test(sref)) throw bad('a session is named by 16 hex digits', 'session');
    const s = await findConsoleSessionByPrefix(db(), sref);
    if (!s) throw new ConsoleError('CONSOLE_NOT_FOUND', `no live session ${sref}`);
    await revokeConsoleSessions(db(), { idSha256: s.idSha256 }, op(req).actor);
    await registry.appendAudit({
      actor: op(req).actor,
      action: 'console.session_revoke',
      subject: ref('operator', s.operator),
      outcome: 'success',
      details: { ended: sref, ...via(req) },
    });
    if (s.idSha256 === op(req).session.idSha256) clearSessionCookie(reply);
    return reply.code(303).header('location', '/operators').send();
  });

  // ------------------------------------------------------------------------------------------ overview

  app.get('/', { preHandler: requireOperator }, async (req, reply) =>
    send(reply, req, 'Overview', v.overviewBody(await overview(d))),
  );
  app.get('/overview.json', { preHandler: requireOperatorQuietly }, async () => overview(d));

  // ------------------------------------------------------------------------------------------ devices

  app.get('/devices', { preHandler: requireOperator }, async (req, reply) => {
    const q = req.query as Q;
    const search = deviceSearch(q);
    const [pageRows, total] = await Promise.all([
      searchDevices(db(), { ...search, limit: 50 }),
      countDevices(db(), { ...search, cursor: undefined }),
    ]);
    return send(reply, req, 'Devices', v.devicesBody(q, pageRows.items, pageRows.nextCursor, total));
  });

  app.get('/devices/:id', { preHandler: requireOperator }, async (req, reply) => {
    const id = idParam((req.params as { id: string }).id, 'device id');
    const dev = await registry.getDevice(id);
    if (!dev) throw new ConsoleError('CONSOLE_NOT_FOUND', `no device ${id}`);
    const [history, audit] = await Promise.all([
      presenceHistoryOf(db(), 'device', id, 20),
      registry.listAudit({ subject: ref('device', id), limit: 50 }),
    ]);
    const q = req.query as Q;
    let outcome: v.ActionOutcome | undefined;
    const action = str(q['done']);
    if (action && (DEVICE_ACTIONS as readonly string[]).includes(action)) {
      const at = timeParam(str(q['at']), 'at');
      outcome = { action, ...(at ? { at } : {}), by: op(req).actor };
      const seq = Number(q['seq']);
      if (Number.isSafeInteger(seq) && seq > 0) outcome.seq = seq;
    }
    return send(
      reply,
      req,
      `Device ${id}`,
      v.deviceBody(dev, history, audit.items, outcome),
      html`Device <span class="mono">${id}</span>`,
    );
  });

  /** The device's status and, after an action at `since`, what became of its live session. */
  app.get('/devices/:id/live.json', { preHandler: requireOperatorQuietly }, async (req) => {
    const id = idParam((req.params as { id: string }).id, 'device id');
    const [row, pres, history] = await Promise.all([
      registry.getDeviceRow(id),
      registry.getPresence('device', id),
      presenceHistoryOf(db(), 'device', id, 5),
    ]);
    if (!row) throw new ConsoleError('CONSOLE_NOT_FOUND', `no device ${id}`);
    const since = timeParam(str((req.query as Q)['since']), 'since');
    return {
      id,
      status: row.status,
      presence: pres
        ? {
            connected: pres.connected,
            connectedAt: pres.connectedAt,
            disconnectedAt: pres.disconnectedAt,
            brokerNode: pres.brokerNode,
            remoteAddress: pres.remoteAddress,
          }
        : null,
      ...(since ? { session: sessionAfter(since, history) } : {}),
    };
  });

  app.get('/devices/:id/confirm', { preHandler: requireOperator }, async (req, reply) => {
    const id = idParam((req.params as { id: string }).id, 'device id');
    const action = str((req.query as Q)['action']);
    if (!action || !(DEVICE_ACTIONS as readonly string[]).includes(action))
      throw bad(`action is one of ${DEVICE_ACTIONS.join(', ')}`, 'action');
    const dev = await registry.getDevice(id);
    if (!dev) throw new ConsoleError('CONSOLE_NOT_FOUND', `no device ${id}`);
    const p = dev.presence;
    const live = p?.connected
      ? html`It is connected now on broker node <strong>${p.brokerNode ?? '?'}</strong> from ${p.remoteAddress ?? '?'} since ${when(p.connectedAt)}`
      : html`It is not connected now`;
    const active = dev.certificates.filter((c) => c.status === 'active').length;
    const consequences = {
      revoke: [
        html`set device <strong>${id}</strong> to <strong>revoked</strong>: final, this id is never issued again;`,
        html`revoke its ${num(active)} active certificate(s): the CRL and OCSP say revoked with the reason you choose;`,
        html`make every broker node refuse it and close its live session. ${live}.`,
      ],
      suspend: [
        html`set device <strong>${id}</strong> to <strong>suspended</strong> (reversible: reinstate undoes it);`,
        html`make every broker node refuse it and close its live session. ${live}.`,
      ],
      reinstate: [
        html`set device <strong>${id}</strong> back to <strong>active</strong>: brokers admit it again.`,
      ],
      reset: [
        html`allow the next enrollment of <strong>${id}</strong> to replace its certificate (a repaired device with a new key);`,
        html`not close its live session: its current certificate stays valid until it re-enrolls.`,
      ],
    }[action as (typeof DEVICE_ACTIONS)[number]];
    const verb = {
      revoke: 'Revoke',
      suspend: 'Suspend',
      reinstate: 'Reinstate',
      reset: 'Allow re-enrollment of',
    }[action as (typeof DEVICE_ACTIONS)[number]];
    return send(
      reply,
      req,
      `${verb} ${id}?`,
      v.confirmBody({
        what: `${verb} device ${id}?`,
        consequences,
        action,
        postTo: `/devices/${encodeURIComponent(id)}/actions/${action}`,
        cancel: `/devices/${encodeURIComponent(id)}`,
        csrf: op(req).session.csrf,
        reason: action === 'revoke',
      }),
    );
  });

  app.post('/devices/:id/actions/:action', { preHandler: requireAction }, async (req, reply) => {
    const { id: rawId, action } = req.params as { id: string; action: string };
    const id = idParam(rawId, 'device id');
    if (!(DEVICE_ACTIONS as readonly string[]).includes(action))
      throw bad(`action is one of ${DEVICE_ACTIONS.join(', ')}`, 'action');
    const reason = str((req.body as Q)['reason']);
    if (reason !== undefined && !(OPERATOR_REASONS as readonly string[]).includes(reason))
      throw bad(`reason is one of ${OPERATOR_REASONS.join(', ')}`, 'reason');
    const r = await d.actions.device(op(req).actor, id, action as (typeof DEVICE_ACTIONS)[number], {
      ...(reason ? { reason } : {}),
      details: via(req),
    });
    // The time of the change as the registry recorded it: the session report is measured from it.
    let at = new Date();
    if (r.seq) {
      const changes = await registry.changesSince(r.seq - 1, 1);
      if (changes[0]?.seq === r.seq) at = changes[0].at;
    }
    return reply
      .code(303)
      .header(
        'location',
        `/devices/${encodeURIComponent(id)}${qs({ done: action, at: at.toISOString(), seq: r.seq })}#outcome`,
      )
      .send();
  });

  // ------------------------------------------------------------------------------------------ principals

  for (const [path, kind] of Object.entries(KINDS)) {
    app.get(`/${path}`, { preHandler: requireOperator }, async (req, reply) => {
      const cursor = str((req.query as Q)['cursor']);
      if (cursor && !/^[a-z]+:[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(cursor))
        throw bad('bad cursor', 'cursor');
      const list = await registry.listPrincipals({ kind, limit: 50, ...(cursor ? { cursor } : {}) });
      const usage =
        kind === 'station'
          ? await stationUsage(
              db(),
              list.items.map((p) => p.id),
            )
          : new Map<string, number>();
      let extra: ReturnType<typeof html> | undefined;
      if (kind === 'operator') {
        const sessions = await listConsoleSessions(db());
        extra = v.sessionsTable(
          sessions.map((s) => ({ ...s, ref: s.idSha256.slice(0, 16) })),
          op(req).session.csrf,
          op(req).sessionRef,
        );
      }
      const title = { station: 'Stations', service: 'Services', operator: 'Operators' }[kind];
      return send(reply, req, title, v.principalsBody(kind, list.items, usage, list.nextCursor, extra));
    });

    app.get(`/${path}/:id`, { preHandler: requireOperator }, async (req, reply) => {
      const id = idParam((req.params as { id: string }).id, `${kind} id`);
      const p = await registry.getPrincipal(kind, id);
      if (!p) throw new ConsoleError('CONSOLE_NOT_FOUND', `no ${kind} ${id}`);
      const q = req.query as Q;
      const [audit, usage, enrolled] = await Promise.all([
        registry.listAudit({ subject: ref(kind, id), limit: 50 }),
        kind === 'station' ? stationUsage(db(), [id]) : Promise.resolve(new Map<string, number>()),
        kind === 'station' ? stationDeviceCount(db(), id) : Promise.resolve(0),
      ]);
      let outcome: ReturnType<typeof html> | undefined;
      const done = str(q['done']);
      if (done && (PRINCIPAL_ACTIONS as readonly string[]).includes(done)) {
        const from = timeParam(str(q['from']), 'from');
        const to = timeParam(str(q['to']), 'to');
        let cascade = html``;
        if (kind === 'station' && from && to) {
          const s = await cascadeSessions(db(), id, from, to);
          cascade = html`<p>Devices revoked with it: <strong>${str(q['devices']) ?? '0'}</strong>. Their live sessions:
            <strong data-live="cascade">${s.stillConnected} still connected${s.lastClosedAt ? html`; the last one closed at ${when(s.lastClosedAt, true)}` : ''}</strong>.</p>`;
        }
        outcome = html`<section class="notice" role="status" id="outcome"><h2>Done: ${done}</h2>
          <p>${kind} ${id} is ${p.status} since ${when(p.statusChangedAt, true)}.</p>${cascade}</section>`;
      }
      return send(
        reply,
        req,
        `${kind[0]!.toUpperCase()}${kind.slice(1)} ${id}`,
        v.principalBody(p, {
          usage: usage.get(id) ?? 0,
          enrolled,
          audit: audit.items,
          ...(outcome ? { outcome } : {}),
        }),
      );
    });

    app.get(`/${path}/:id/confirm`, { preHandler: requireOperator }, async (req, reply) => {
      const id = idParam((req.params as { id: string }).id, `${kind} id`);
      const q = req.query as Q;
      const action = str(q['action']);
      if (!action || !(PRINCIPAL_ACTIONS as readonly string[]).includes(action))
        throw bad(`action is one of ${PRINCIPAL_ACTIONS.join(', ')}`, 'action');
      const p = await registry.getPrincipal(kind, id);
      if (!p) throw new ConsoleError('CONSOLE_NOT_FOUND', `no ${kind} ${id}`);
      const consequences =
        action === 'revoke'
          ? [
              html`set ${kind} <strong>${id}</strong> to <strong>revoked</strong> (final) and revoke its certificates;`,
            ]
          : action === 'suspend'
            ? [html`set ${kind} <strong>${id}</strong> to <strong>suspended</strong> until reinstated;`]
            : [html`set ${kind} <strong>${id}</strong> back to <strong>active</strong>.`];
      if (kind === 'operator' && action !== 'reinstate')
        consequences.push(html`refuse every console session of operator ${id} from the next request.`);
      if (kind !== 'operator' && action !== 'reinstate')
        consequences.push(html`make every broker node refuse it and close its live connections.`);
      let extra: ReturnType<typeof html> | undefined;
      const hidden: Record<string, string> = {};
      if (kind === 'station' && action === 'revoke') {
        const from = timeParam(str(q['from']), 'from');
        const to = timeParam(str(q['to']), 'to') ?? new Date();
        const local = (t: Date | undefined) => (t ? t.toISOString().slice(0, 16) : '');
        if (from) {
          const preview = await cascadePreview(db(), id, from, to);
          consequences.push(
            html`<strong>also revoke ${num(preview.devices)} device(s)</strong> station ${id} enrolled between ${when(from)} and ${when(to)} that are not revoked yet; ${num(preview.connected)} of them are connected now and will be disconnected.`,
          );
          hidden['from'] = from.toISOString();
          hidden['to'] = to.toISOString();
        } else {
          consequences.push(
            html`leave the devices it enrolled as they are (choose a window below to revoke them too).`,
          );
        }
        extra = html`<form method="get" action="/${path}/${encodeURIComponent(id)}/confirm" class="filters" aria-label="Devices to revoke with the station">
<input type="hidden" name="action" value="revoke">
<div><label for="w-from">Devices enrolled from (UTC)</label><input id="w-from" name="from" type="datetime-local" value="${local(from)}"></div>
<div><label for="w-to">to (UTC, empty: now)</label><input id="w-to" name="to" type="datetime-local" value="${str(q['to']) ? local(to) : ''}"></div>
<div class="go"><button type="submit">Preview the count</button></div></form>`;
      }
      const verb = { revoke: 'Revoke', suspend: 'Suspend', reinstate: 'Reinstate' }[
        action as PrincipalAction
      ];
      return send(
        reply,
        req,
        `${verb} ${kind} ${id}?`,
        v.confirmBody({
          what: `${verb} ${kind} ${id}?`,
          consequences,
          action,
          postTo: `/${path}/${encodeURIComponent(id)}/actions/${action}`,
          cancel: `/${path}/${encodeURIComponent(id)}`,
          csrf: op(req).session.csrf,
          reason: action === 'revoke',
          hidden,
          ...(extra ? { extra } : {}),
        }),
      );
    });

    app.post(`/${path}/:id/actions/:action`, { preHandler: requireAction }, async (req, reply) => {
      const { id: rawId, action } = req.params as { id: string; action: string };
      const id = idParam(rawId, `${kind} id`);
      if (!(PRINCIPAL_ACTIONS as readonly string[]).includes(action))
        throw bad(`action is one of ${PRINCIPAL_ACTIONS.join(', ')}`, 'action');
      const b = req.body as Q;
      const reason = str(b['reason']);
      if (reason !== undefined && !(OPERATOR_REASONS as readonly string[]).includes(reason))
        throw bad(`reason is one of ${OPERATOR_REASONS.join(', ')}`, 'reason');
      const from = timeParam(str(b['from']), 'from');
      const to = timeParam(str(b['to']), 'to');
      const r = await d.actions.principal(op(req).actor, kind, id, action as PrincipalAction, {
        ...(reason ? { reason } : {}),
        ...(kind === 'station' && action === 'revoke' && from
          ? { cascade: { from, ...(to ? { to } : {}) } }
          : {}),
        details: via(req),
      });
      return reply
        .code(303)
        .header(
          'location',
          `/${path}/${encodeURIComponent(id)}${qs({
            done: action,
            ...(r.cascade && from
              ? {
                  from: from.toISOString(),
                  to: (to ?? new Date()).toISOString(),
                  devices: r.cascade.devicesRevoked,
                }
              : {}),
          })}#outcome`,
        )
        .send();
    });
  }

  // ------------------------------------------------------------------------------------------ audit, expiring

  app.get('/audit', { preHandler: requireOperator }, async (req, reply) => {
    const q = req.query as Q;
    const f: Q = {};
    for (const k of ['actor', 'subject', 'action', 'from', 'to']) if (str(q[k])) f[k] = str(q[k]);
    for (const k of ['actor', 'subject', 'action'])
      if (f[k] && (f[k]!.length > 200 || /[\u0000-\u001f]/.test(f[k]!)))
        throw bad(`${k} is too long or not text`, k);
    const cursor = str(q['cursor']);
    if (cursor && !/^[0-9]{1,15}$/.test(cursor)) throw bad('bad cursor', 'cursor');
    const from = timeParam(f['from'], 'from');
    const to = timeParam(f['to'], 'to');
    const rows = await registry.listAudit({
      ...(f['actor'] ? { actor: f['actor'] } : {}),
      ...(f['subject'] ? { subject: f['subject'] } : {}),
      ...(f['action'] ? { action: f['action'] } : {}),
      ...(from ? { from } : {}),
      ...(to ? { to } : {}),
      ...(cursor ? { cursor } : {}),
      limit: 50,
    });
    return send(reply, req, 'Audit log', v.auditBody(f, rows.items, rows.nextCursor));
  });

  const daysParam = (q: Q) => {
    const raw = str(q['days']) ?? '30';
    const days = Number(raw);
    if (!Number.isFinite(days) || days < 0 || days > 36_500)
      throw bad('days is a number from 0 to 36500', 'days');
    return days;
  };

  app.get('/expiring', { preHandler: requireOperator }, async (req, reply) => {
    const q = req.query as Q;
    const days = daysParam(q);
    const cursor = str(q['cursor']);
    if (cursor && !/^[0-9a-f]{1,40}$/.test(cursor)) throw bad('bad cursor', 'cursor');
    const [list, total] = await Promise.all([
      registry.expiringCertificates({ withinDays: days, limit: 50, ...(cursor ? { cursor } : {}) }),
      expiringCount(db(), days),
    ]);
    return send(
      reply,
      req,
      'Expiring certificates',
      v.expiringBody(days, list.items, list.nextCursor, total),
    );
  });

  /** Every certificate in the window as CSV, streamed page by page (1,000 rows a query). */
  app.get('/expiring.csv', { preHandler: requireOperator }, async (req, reply) => {
    const days = daysParam(req.query as Q);
    async function* rows() {
      yield 'subject_kind,subject_id,serial,not_before,not_after,days_left,issuer_ca\n';
      let cursor: string | undefined;
      do {
        const page = await registry.expiringCertificates({
          withinDays: days,
          limit: 1000,
          ...(cursor ? { cursor } : {}),
        });
        let chunk = '';
        for (const c of page.items) {
          const left = Math.floor((c.notAfter.getTime() - Date.now()) / 86_400_000);
          chunk += `${c.subjectKind},${c.subjectId},${c.serial},${c.notBefore.toISOString()},${c.notAfter.toISOString()},${left},${c.issuerCa}\n`;
        }
        yield chunk;
        cursor = page.nextCursor;
      } while (cursor);
    }
    const { Readable } = await import('node:stream');
    return reply
      .type('text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="fleet-expiring-${days}d.csv"`)
      .send(Readable.from(rows()));
  });

  // ------------------------------------------------------------------------------------------ errors

  app.setNotFoundHandler(async (req, reply) => {
    // Unknown paths say nothing more to a stranger than known ones do.
    try {
      await requireOperator(req);
    } catch (e) {
      return errorReply(req, reply, e);
    }
    return errorReply(req, reply, new ConsoleError('CONSOLE_NOT_FOUND', `no page ${req.url.split('?')[0]}`));
  });
  app.setErrorHandler(async (err, req, reply) => errorReply(req, reply, err));
}

function errorReply(req: FastifyRequest, reply: FastifyReply, err: unknown) {
  let fe: FleetError;
  if (err instanceof FleetError) fe = err;
  else if ((err as { statusCode?: number }).statusCode && (err as { statusCode: number }).statusCode < 500)
    fe = new ConsoleError('CONSOLE_INPUT_INVALID', 'the request is malformed', { cause: err });
  else fe = new ConsoleError('INTERNAL', 'internal error', { cause: err });
  if (fe.httpStatus >= 500)
    req.log.error({ event: 'console_request_failed', code: fe.code, err }, 'console request failed');
  else req.log.info({ event: 'console_request_refused', code: fe.code }, fe.message);
  const signIn = fe.code === 'CONSOLE_SIGN_IN_REQUIRED' || fe.code === 'CONSOLE_OPERATOR_INACTIVE';
  if (signIn) clearSessionCookie(reply);
  reply.code(fe.httpStatus);
  const path = req.url.split('?')[0]!;
  if (path.endsWith('.json') || path.endsWith('.csv') || req.headers.accept === 'application/json')
    return reply.type('application/json; charset=utf-8').send({ error: fe.toPublic() });
  return reply.type('text/html; charset=utf-8').send(
    v.page({
      title: signIn ? 'Sign in required' : 'Refused',
      path,
      op: signIn ? null : req.operator,
      body: v.messageBody(
        fe.message,
        signIn
          ? html`<p>Run <code>npx fleet console</code> on a machine with the operator credential and open the link it prints.</p>`
          : undefined,
      ),
    }),
  );
}
