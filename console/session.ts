/**
 * Console sign-in: one-time links and sessions.
 *
 * - A link is made for the operator whose certificate asked for it (`fleet console` over the mTLS API):
 *   32 random bytes in the URL, only their SHA-256 in the registry, usable once, for `linkTtlSeconds`.
 * - Opening the link shows a "continue" button; its POST (same origin only) redeems the link and sets the
 *   session cookie. A GET never signs in, so a link previewer or prefetcher cannot burn or use the link.
 * - The cookie `__Host-fleet_console` is HttpOnly, Secure, SameSite=Strict, Path=/, without Domain (the
 *   `__Host-` prefix makes the browser enforce the last three). It holds 32 random bytes; the registry
 *   keeps their SHA-256. A session ends at its absolute end, after `idleSeconds` without a request, when it
 *   is revoked (sign out, another operator, `fleet console revoke-sessions`), and its requests are refused
 *   while its operator is suspended or revoked.
 * - Every state-changing request must come from the console's own origin (Origin header) and carry the
 *   session's CSRF token (a hidden form field, or the X-CSRF-Token header), compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  dbOf,
  liveConsoleSession,
  type NewConsoleSession,
  redeemConsoleLink,
  touchConsoleSession,
} from '../registry/console.ts';
import type { ConsoleSessionRow } from '../registry/console-schema.ts';
import type { Registry } from '../registry/index.ts';
import { ConsoleError } from './errors.ts';

export const COOKIE = '__Host-fleet_console';
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
export const newToken = () => randomBytes(32).toString('base64url');

export interface Operator {
  /** The operator id. */
  id: string;
  /** `operator:<id>`: the audit actor of everything this session does. */
  actor: string;
  session: ConsoleSessionRow;
  /** First 16 hex digits of the session id: how the console names a session. */
  sessionRef: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    operator: Operator | null;
  }
}

export function readCookie(req: FastifyRequest, name = COOKIE): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

export function setSessionCookie(reply: FastifyReply, token: string, maxAgeSeconds: number): void {
  reply.header(
    'set-cookie',
    `${COOKIE}=${token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(maxAgeSeconds)}`,
  );
}

export function clearSessionCookie(reply: FastifyReply): void {
  reply.header('set-cookie', `${COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`);
}

export class Sessions {
  constructor(
    private readonly registry: Registry,
    private readonly opts: { sessionTtlSeconds: number; idleSeconds: number },
  ) {}

  /**
   * The signed-in operator of a request, or a typed refusal. Touches the session (its idle clock) at most
   * once a minute, and not for `touch: false`: a page's own background refresh is not the operator's
   * activity, so an open tab left alone still ends after the idle time.
   */
  async authenticate(req: FastifyRequest, opts: { touch?: boolean } = {}): Promise<Operator> {
    const token = readCookie(req);
    if (!token || !TOKEN.test(token))
      throw new ConsoleError('CONSOLE_SIGN_IN_REQUIRED', 'sign in with a link from `fleet console`');
    const id = sha256(token);
    const live = await liveConsoleSession(dbOf(this.registry), id, this.opts.idleSeconds);
    if (!live)
      throw new ConsoleError(
        'CONSOLE_SIGN_IN_REQUIRED',
        'this session has ended (signed out, expired, idle or revoked): sign in again with a link from `fleet console`',
      );
    if (live.operatorStatus !== 'active')
      throw new ConsoleError(
        'CONSOLE_OPERATOR_INACTIVE',
        `operator ${live.session.operator} is ${live.operatorStatus ?? 'unknown'}: the console refuses its sessions`,
      );
    if (opts.touch !== false && Date.now() - live.session.lastSeenAt.getTime() > 60_000)
      await touchConsoleSession(dbOf(this.registry), id);
    return {
      id: live.session.operator,
      actor: `operator:${live.session.operator}`,
      session: live.session,
      sessionRef: id.slice(0, 16),
    };
  }

  /** Redeems a link: the new session's cookie token and row, or why not. */
  async redeem(
    linkToken: string,
    meta: { address: string | null; userAgent: string | null },
  ): Promise<
    | { token: string; session: ConsoleSessionRow }
    | { refused: 'unknown' | 'expired' | 'used'; operator?: string }
  > {
    if (!TOKEN.test(linkToken)) return { refused: 'unknown' };
    const token = newToken();
    const session: NewConsoleSession = {
      idSha256: sha256(token),
      csrf: randomBytes(32).toString('base64url'),
      expiresAt: new Date(Date.now() + this.opts.sessionTtlSeconds * 1000),
      address: meta.address,
      userAgent: meta.userAgent ? meta.userAgent.slice(0, 300) : null,
    };
    const r = await redeemConsoleLink(dbOf(this.registry), sha256(linkToken), session);
    return 'session' in r ? { token, session: r.session } : r;
  }
}

/** The console's own origin must have sent this state-changing request. */
export function checkOrigin(req: FastifyRequest): void {
  const origin = req.headers.origin;
  const host = req.headers.host;
  if (!origin || !host || origin !== `https://${host}`)
    throw new ConsoleError('CONSOLE_ORIGIN_INVALID', 'this action must be sent from the console itself');
}

/** The session's CSRF token must come with the request (form field `_csrf` or header X-CSRF-Token). */
export function checkCsrf(req: FastifyRequest, op: Operator): void {
  const body = req.body as Record<string, unknown> | undefined;
  const sent =
    (typeof body?.['_csrf'] === 'string' ? body['_csrf'] : undefined) ?? req.headers['x-csrf-token'];
  const a = Buffer.from(typeof sent === 'string' ? sent : '');
  const b = Buffer.from(op.session.csrf);
  if (a.length !== b.length || !timingSafeEqual(a, b))
    throw new ConsoleError(
      'CONSOLE_CSRF_INVALID',
      'the form is stale or was not sent by the console: reload the page',
    );
}
