/**
 * What an authenticated client may do: aedes' publish, subscribe and forward hooks, each deciding by the
 * session's bound policy (policy.ts) and failing closed (no session, or a hook that throws, is refused).
 * A denied subscription gets SUBACK 0x80; a denied publish is dropped and counted, and repeated denials
 * disconnect. Delivery checks the session too: a client closed for revocation gets nothing more.
 */
import type { Client } from 'aedes';
import type { Logger } from 'pino';
import type { Hooks } from './aedes/engine.ts';
import { isLastWill } from './aedes/patches.ts';
import type { BrokerMetrics } from './metrics.ts';
import { type Session, sessionOf } from './sessions.ts';

export interface AuthorizeDeps {
  /**
   * Where a denied publish goes instead: a `$SYS` topic nobody may subscribe to (`$SYS/<aedes id>/...`).
   */
  readonly deniedTopic: string;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
}

export function authorizeHooks(
  d: AuthorizeDeps,
): Pick<Hooks, 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'> {
  const { deniedTopic, metrics, log } = d;

  /** Counts a denial; this many within the window (the session's counter) closes the connection. */
  function denied(client: Client, s: Session, action: 'publish' | 'subscribe', topic: string) {
    metrics.aclDenials.inc({ action });
    log.info({ event: 'acl_denied', action, topic, kind: s.identity.kind, id: s.identity.id });
    if (s.denials.hit(Date.now())) {
      metrics.aclDisconnects.inc();
      log.warn({ event: 'acl_denials_disconnect', kind: s.identity.kind, id: s.identity.id });
      setImmediate(() => client.close());
    }
  }

  const authorizePublish: Hooks['authorizePublish'] = (client, packet, done) => {
    try {
      const s = sessionOf(client);
      if (!client || !s) return done(new Error('no session'));
      if (isLastWill(client, packet)) {
        // The last will, published as the connection ends: not for a connection closed for revocation.
        return done(!s.kicked && s.policy.canPublish(packet.topic) ? null : new Error('will not authorized'));
      }
      if (s.policy.canPublish(packet.topic)) {
        metrics.messagesIn.inc();
        return done(null);
      }
      denied(client, s, 'publish', packet.topic);
      // aedes closes the connection on any error here; a denied publish is dropped instead: it goes to a
      // $SYS topic nobody may subscribe to, not retained, so the client's QoS flow still completes.
      packet.topic = deniedTopic;
      packet.retain = false;
      packet.payload = Buffer.alloc(0);
      done(null);
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'authorizePublish', err }, 'authorizePublish failed');
      done(err as Error);
    }
  };

  const authorizeSubscribe: Hooks['authorizeSubscribe'] = (client, sub, done) => {
    try {
      const s = sessionOf(client);
      if (!s) return done(new Error('no session'));
      if (s.policy.canSubscribe(sub.topic)) return done(null, sub);
      denied(client, s, 'subscribe', sub.topic);
      done(null, null); // SUBACK 0x80 for this filter [MQTT-3.9.3]
    } catch (err) {
      log.error({ event: 'mqtt_hook_failed', hook: 'authorizeSubscribe', err }, 'authorizeSubscribe failed');
      done(err as Error);
    }
  };

  const authorizeForward: Hooks['authorizeForward'] = (client, packet) => {
    const s = sessionOf(client);
    if (!s || s.kicked) return null;
    metrics.messagesOut.inc();
    return packet;
  };

  return { authorizePublish, authorizeSubscribe, authorizeForward };
}
