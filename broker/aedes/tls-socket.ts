/**
 * The one private field of Node's own that the broker reads: a server-side TLSSocket's `_parent`, the raw
 * TCP socket `tls.Server` built it on (lib/_tls_wrap.js, TLSSocket.prototype._init). Node offers no
 * public way from the TLS socket back to the socket its 'connection' event carried, and admission
 * (tls-admission.ts) and the PROXY listener (proxy-protocol.ts) mark that raw socket at accept and read
 * the mark when the handshake ends. Kept here with aedes' private fields so that one folder holds every
 * private field the broker depends on.
 */
import type { Socket } from 'node:net';

/** The raw socket a server-side TLS socket was built on, or undefined. */
export function rawSocketOf<T extends Socket = Socket>(sock: Socket): T | undefined {
  return (sock as { _parent?: T })._parent;
}
