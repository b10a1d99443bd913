/**
 * The process's logger, as the configuration chooses: pino, on stderr (stdout is for answers and the
 * banner), in one of two formats (FleetConfig.logFormat):
 *
 * - `json`: every line a JSON object, every event at the configured level (files, journald, collectors);
 * - `pretty`: for a person at a terminal: `12:00:01 WARN  broker revocation_kick id=dev-1 …`, and quiet:
 *   the start-up and shut-down events the banner already tells are left out (at info and below).
 *
 * The pretty lines are written by a small formatter here rather than pino-pretty (no transport thread,
 * no extra dependency). Both formats are written synchronously, so the last lines before an exit are not
 * lost, and a stderr that has gone away (a closed terminal, a closed pipe) loses lines, never the process.
 */
import { writeSync } from 'node:fs';
import { isatty } from 'node:tty';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { FleetConfig } from './load.ts';

/** Start-up and shut-down events the banner covers: left out of pretty logs (kept in JSON). */
const QUIET_EVENTS = new Set([
  'registry_opened',
  'registry_migrated',
  'registry_closed',
  'provisioning_listening',
  'console_listening',
  'broker_started',
  'broker_stopped',
  'subject_cache_warmed',
  'redis_ready',
  'crl_published',
]);

const LEVELS: Record<number, [string, string]> = {
  10: ['TRACE', '\x1b[90m'],
  20: ['DEBUG', '\x1b[90m'],
  30: ['INFO ', '\x1b[36m'],
  40: ['WARN ', '\x1b[33m'],
  50: ['ERROR', '\x1b[31m'],
  60: ['FATAL', '\x1b[41m'],
};
const SKIP = new Set([
  'level',
  'time',
  'pid',
  'hostname',
  'event',
  'msg',
  'service',
  'part',
  'listener',
  'err',
]);

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line as a short human line, or '' when it is left out. */
export function prettyLine(line: string, color: boolean): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line);
  } catch {
    return line;
  }
  const level = Number(o['level']);
  const event = typeof o['event'] === 'string' ? o['event'] : undefined;
  if (level <= 30 && event && QUIET_EVENTS.has(event)) return '';
  // fastify's own start-up line: the banner gives the addresses.
  if (level <= 30 && !event && String(o['msg']).startsWith('Server listening at')) return '';
  const [name, code] = LEVELS[level] ?? ['LOG  ', ''];
  const t = new Date(Number(o['time']) || Date.now()).toTimeString().slice(0, 8);
  const where = [o['service'], o['part'], o['listener']].filter((x) => typeof x === 'string').join('/');
  const err = o['err'] as { message?: string; type?: string } | undefined;
  const fields = Object.entries(o)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${value(v)}`);
  const parts = [
    t,
    color ? `${code}${name}\x1b[0m` : name,
    where,
    event ?? '',
    typeof o['msg'] === 'string' ? o['msg'] : '',
    err ? `error=${value(err.message ?? err.type)}` : '',
    ...fields,
  ].filter((p) => p !== '');
  return `${parts.join(' ')}\n`;
}

/**
 * Writes all of `text` to `fd` now. A full pipe (EAGAIN) is waited out briefly; a closed one (EPIPE, or
 * EIO once the terminal is gone) drops the line: a log line is never a reason to die half-way through a
 * stop and leave the registry locked.
 */
function writeAll(fd: number, text: string): void {
  let buf = Buffer.from(text);
  for (let tries = 0; buf.length > 0 && tries < 1000; tries++) {
    try {
      buf = buf.subarray(writeSync(fd, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

/** A synchronous pino destination writing pretty lines to `fd`. */
export function prettyDestination(fd = 2, color = true): DestinationStream {
  return {
    write(line: string) {
      const out = prettyLine(line, color);
      if (out) writeAll(fd, out);
    },
  };
}

/** A synchronous pino destination writing the JSON lines as they are. */
function jsonDestination(fd: number): DestinationStream {
  return { write: (line: string) => writeAll(fd, line) };
}

/**
 * The logger for this process. `base` names the service (`{ service: 'broker' }`); a part below adds its
 * own `part`, never a key its parent already set (pino would write the key twice).
 */
export function createLogger(
  config: Pick<FleetConfig, 'logLevel' | 'logFormat'>,
  base: Record<string, unknown> = {},
  opts: { fd?: number; color?: boolean } = {},
): Logger {
  const fd = opts.fd ?? 2;
  const dest =
    config.logFormat === 'pretty' ? prettyDestination(fd, opts.color ?? isatty(fd)) : jsonDestination(fd);
  const logger = pino({ level: config.logLevel }, dest);
  return Object.keys(base).length ? logger.child(base) : logger;
}
