/**
 * Small patches and readers of aedes 1.x' and mqtt-packet's private fields, each standing in for one
 * piece of their behaviour, with the single version guard that decides whether the fast paths run.
 * Everything in Fleet that reads or writes an underscore field of a library lives in this folder.
 */
import type { TLSSocket } from 'node:tls';
import type { Aedes, Client } from 'aedes';

/**
 * The fast paths (fast-connect.ts, fast-deliver.ts, watchCloseCheaply) stand in for parts of aedes'
 * internals and were written and tested against aedes 1.2: with any other version aedes runs its own.
 */
export function fastPathsSupported(aedes: Aedes): boolean {
  return /^1\.2\./.test(String(aedesVersion(aedes)));
}

export function aedesVersion(aedes: Aedes): unknown {
  return (aedes as unknown as { version?: string }).version;
}

/** The parts of an aedes Client read below (node_modules/aedes/lib/client.js). */
type ClientInternals = Client & {
  will?: unknown;
  _will?: { topic: string } | null;
  _eos?: () => void;
  _parser?: { _parseLength(): boolean; packet: { length: number }; _emitError(e: Error): void };
};

/** The will a CONNECT brought, before aedes stores it (`client._will`), or undefined. */
export function pendingWill(client: Client): { topic: string } | undefined {
  return (client as ClientInternals)._will ?? undefined;
}

/** Whether aedes is publishing `packet` as this client's last will (it passes `client.will` itself). */
export function isLastWill(client: Client, packet: unknown): boolean {
  return packet === (client as ClientInternals).will;
}

/** The client aedes holds under this client id (its `clients` table), if any. */
export function clientById(aedes: Aedes, id: string): Client | undefined {
  return (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[id];
}

/** aedes' `keepaliveLimit` option as the instance holds it. */
export function keepaliveLimitOf(aedes: Aedes): number | undefined {
  return (aedes as unknown as { keepaliveLimit?: number }).keepaliveLimit;
}

/**
 * aedes watches each socket with stream.finished(), which builds an ERR_STREAM_PREMATURE_CLOSE error, stack
 * trace and all, whenever a socket closes before its writable side was ended: every DISCONNECT (aedes
 * destroys the socket) and every drop. Its callback, client.close(), ignores that argument, and aedes
 * already closes the client on 'end' and 'error'; a 'close' listener does the rest for the price of a call.
 */
export function watchCloseCheaply(client: Client, sock: TLSSocket): void {
  const c = client as ClientInternals;
  if (typeof c._eos !== 'function') return;
  c._eos();
  const onClose = () => client.close();
  sock.on('close', onClose);
  c._eos = () => sock.removeListener('close', onClose);
}

/**
 * Refuses a packet whose declared length is over the limit as soon as its fixed header is read, before
 * its body is buffered (mqtt-packet's parser).
 */
export function limitPacketSize(client: Client, max: number): void {
  const parser = (client as ClientInternals)._parser;
  if (!parser || max <= 0) return;
  const parseLength = parser._parseLength;
  parser._parseLength = function (this: typeof parser) {
    const ok = parseLength.call(this);
    if (ok && this.packet.length > max) {
      this._emitError(new Error(`packet of ${this.packet.length} bytes is over the ${max}-byte limit`));
      return false;
    }
    return ok;
  };
}

/**
 * Drops aedes' per-connect and per-disconnect `$SYS` notices (see BrokerConfig.skipSysConnectNotices).
 * Each is a Packet allocation plus an emitter round trip on the connect path, for nobody.
 */
export function skipSysNotices(aedes: Aedes): void {
  const a = aedes as unknown as {
    id: string;
    publish(p: { topic: string }, cb?: unknown, cb2?: unknown): void;
  };
  const newClients = `$SYS/${a.id}/new/clients`;
  const disconnects = `$SYS/${a.id}/disconnect/clients`;
  const publish = a.publish;
  a.publish = function (this: unknown, packet: { topic: string }, client?: unknown, done?: unknown) {
    if (packet.topic === newClients || packet.topic === disconnects) {
      const cb = typeof client === 'function' ? client : done;
      if (typeof cb === 'function') cb();
      return;
    }
    publish.call(this, packet, client, done);
  };
}
