/**
 * Authenticated sessions: what a connection carries once CONNECT admitted it (identity, registry
 * attributes, bound policy), and the table of live ones by subject and by certificate serial that
 * presence and live revocation read.
 */
import type { Client } from 'aedes';
import type { Identity } from '../pki/ids.ts';
import type { WindowCounter } from './limits.ts';
import type { BoundPolicy } from './policy.ts';
import type { LiveIdentity } from './presence.ts';
import type { SubjectInfo } from './registry.ts';

/** What an authenticated connection carries: derived once at CONNECT, read by every later hook. */
export interface Session {
  readonly identity: Identity;
  readonly info: SubjectInfo;
  readonly policy: BoundPolicy;
  readonly remoteAddress: string | undefined;
  /** `kind:id` (subjectKey). */
  readonly key: string;
  readonly denials: WindowCounter;
  /** Set when the broker closes the connection for revocation: its will is not published then. */
  kicked: boolean;
}

const SESSION = Symbol('fleet.session');
type SessionClient = Client & { [SESSION]?: Session };

/** The session of an authenticated client, if any. */
export function sessionOf(client: Client | null | undefined): Session | undefined {
  return client ? (client as SessionClient)[SESSION] : undefined;
}

/** Presence's view of a session. */
export const presenceOf = (s: Session): LiveIdentity => ({
  kind: s.identity.kind,
  id: s.identity.id,
  remoteAddress: s.remoteAddress,
});

/** The live authenticated sessions, by `kind:id` and by certificate serial. */
export class SessionTable {
  /** By `kind:id`: the latest connection of each subject. */
  readonly bySubject = new Map<string, Client>();
  private readonly bySerial = new Map<string, Client>();

  /** Attaches `session` to `client` and makes it the live one of its subject and serial. */
  add(client: Client, session: Session): void {
    (client as SessionClient)[SESSION] = session;
    this.bySubject.set(session.key, client);
    this.bySerial.set(session.identity.serial, client);
  }

  /**
   * Forgets a closed connection where it is still the live one. Returns whether it was its subject's
   * live connection (then the subject went offline; otherwise a newer connection took it over).
   */
  remove(client: Client, s: Session): boolean {
    if (this.bySerial.get(s.identity.serial) === client) this.bySerial.delete(s.identity.serial);
    if (this.bySubject.get(s.key) !== client) return false;
    this.bySubject.delete(s.key);
    return true;
  }

  subject(key: string): Client | undefined {
    return this.bySubject.get(key);
  }

  serial(serial: string): Client | undefined {
    return this.bySerial.get(serial);
  }

  /** Every live session's presence (for presence's periodic "last seen"). */
  *present(): Generator<LiveIdentity> {
    for (const c of this.bySubject.values()) {
      const s = sessionOf(c);
      if (s) yield presenceOf(s);
    }
  }
}
