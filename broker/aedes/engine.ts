/**
 * aedes as the broker runs it: the instance with Fleet's hooks, the version guard, and every patch of its
 * internals (the fast CONNECT and publish path, batched delivery, backpressure, the packet-size guard,
 * the `$SYS` notices, the cheap close watch), applied in one place. The rest of the broker hands it
 * admitted TLS sockets and reads a client by id; it never touches an aedes internal itself.
 */
import type { TLSSocket } from 'node:tls';
import { Aedes, type AedesOptions, type Client } from 'aedes';
import type { Logger } from 'pino';
import type { FleetMq } from '../mq.ts';
import { attachBackpressure, type Backpressure, type BackpressureOptions } from './backpressure.ts';
import { type FastConnectClient, installFastConnect, plainCleanConnect } from './fast-connect.ts';
import { type FastDeliverClient, installFastDeliver } from './fast-deliver.ts';
import {
  aedesVersion,
  clientById,
  fastPathsSupported,
  keepaliveLimitOf,
  limitPacketSize,
  skipSysNotices,
  watchCloseCheaply,
} from './patches.ts';

/** aedes' hooks; aedes' defaults let everyone in, so the broker gives every one of them. */
export type Hooks = Required<
  Pick<
    AedesOptions,
    'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'
  >
>;

export interface EngineOptions {
  /** aedes' id: the node id, or a random UUID when it is empty (aedes' own rule). */
  readonly id: string;
  readonly mq: AedesOptions['mq'];
  /** A persistence other than aedes' in-memory default (Redis); the fast paths step aside for it. */
  readonly persistence: AedesOptions['persistence'];
  readonly connectTimeoutMs: number;
  readonly maxPacketBytes: number;
  /** See BrokerConfig.skipSysConnectNotices. */
  readonly skipSysConnectNotices: boolean;
  /** Gate reading from publishers on FleetMq's load and subscribers' backlogs (backpressure.ts). */
  readonly backpressure?: ({ readonly mq: FleetMq } & BackpressureOptions) | undefined;
  readonly hooks: Hooks;
  readonly log: Logger;
}

export interface Engine {
  readonly aedes: Aedes;
  /** Whether the fast paths run (aedes 1.2 only). */
  readonly fastPaths: boolean;
  readonly backpressure: Backpressure | undefined;
  /** Hands a TLS socket whose peer was admitted to aedes, with the per-connection patches. */
  handle(sock: TLSSocket): void;
  /** The client aedes holds under this client id, if any. */
  clientById(id: string): Client | undefined;
}

export function createEngine(o: EngineOptions): Engine {
  const { hooks, log, maxPacketBytes } = o;
  // Client ids that ever connected with a persistent session (clean 0): their CONNECTs, and everyone's
  // when persistence is not aedes' in-memory default, take aedes' own path (fast-connect.ts says why).
  const persistentIds = new Set<string>();
  const preConnect = hooks.preConnect;
  const aedes = new Aedes({
    id: o.id,
    mq: o.mq,
    persistence: o.persistence,
    connectTimeout: o.connectTimeoutMs,
    maxClientsIdLength: 64,
    preConnect: (client, packet, done) => {
      if (!packet.clean && packet.clientId) persistentIds.add(packet.clientId);
      preConnect(client, packet, done);
    },
    authenticate: hooks.authenticate,
    authorizePublish: hooks.authorizePublish,
    authorizeSubscribe: hooks.authorizeSubscribe,
    authorizeForward: hooks.authorizeForward,
  });
  const customPersistence = Boolean(o.persistence);
  const fastConnectEligible = (p: Parameters<typeof plainCleanConnect>[0]) =>
    !customPersistence && !keepaliveLimitOf(aedes) && plainCleanConnect(p) && !persistentIds.has(p.clientId!);
  const noPersistedSubscriptions = () => !customPersistence && persistentIds.size === 0;

  const fastPaths = fastPathsSupported(aedes);
  if (!fastPaths) log.warn({ event: 'aedes_fast_paths_off', aedes_version: aedesVersion(aedes) });
  if (o.skipSysConnectNotices) skipSysNotices(aedes);
  const bp = o.backpressure;
  const backpressure = bp
    ? attachBackpressure(aedes as never, bp.mq, {
        maxSubscriberBacklogBytes: bp.maxSubscriberBacklogBytes,
        slowSubscriberTimeoutMs: bp.slowSubscriberTimeoutMs,
        onEvent: bp.onEvent,
      })
    : undefined;
  aedes.on('clientError', (client, err) =>
    log.debug({ event: 'mqtt_client_error', client_id: client.id, err: err.message }),
  );
  aedes.on('connectionError', (_client, err) =>
    log.debug({ event: 'mqtt_connection_error', err: err.message }),
  );
  (aedes as unknown as NodeJS.EventEmitter).on('error', (err: Error) =>
    log.error({ event: 'aedes_error', err }, 'aedes error'),
  );

  return {
    aedes,
    fastPaths,
    backpressure,
    handle(sock) {
      // aedes.handle is read here, not earlier: backpressure wraps it.
      const client = aedes.handle(sock);
      if (fastPaths) {
        installFastDeliver(client as unknown as FastDeliverClient);
        installFastConnect(
          client as unknown as FastConnectClient,
          fastConnectEligible,
          noPersistedSubscriptions,
        );
        watchCloseCheaply(client, sock);
      }
      limitPacketSize(client, maxPacketBytes);
    },
    clientById: (id) => clientById(aedes, id),
  };
}
