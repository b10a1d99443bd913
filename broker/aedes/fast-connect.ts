/**
 * The common CONNECT (MQTT 3.1.1, clean session, no will, in-memory persistence, an id that never held a
 * persistent session here) without aedes' generic machinery: the same steps in the same order, minus
 * what cannot do anything for such a client.
 *
 * aedes 1.x runs every CONNECT through nine chained actions with a promise per persistence call, a
 * setImmediate per write, and a stream pipeline (Readable + Transform + AbortController, and an AbortError
 * with a stack trace when it ends) to replay the session's queued messages. For a clean session with
 * nothing persisted, the steps that read persistence find nothing: there are no stored subscriptions to
 * restore or clean [MQTT-3.1.2-6] and no queued messages to replay or clear, because this id never held a
 * persistent session on this broker (`persistentIds`, kept by the caller, says so; every other CONNECT
 * takes aedes' own path). What remains is done here exactly as aedes does it (node_modules/aedes/lib/
 * handlers/connect.js): preConnect, the deferred init, client id and flags, pause, authenticate and its
 * refusal (CONNACK with the return code, then close), keepalive [MQTT-3.1.2-24], the will's removal from
 * persistence, registerClient (the takeover of the same id [MQTT-3.1.4-2]), the inbound QoS 2 store's
 * cleanup, CONNACK 0 with session present 0 [MQTT-3.2.2-1], resume, then 'clientReady' and 'connected'.
 */
import type { Duplex } from 'node:stream';

interface ConnectPacket {
  cmd: string;
  topic?: string;
  payload?: Buffer;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  protocolVersion?: number;
  clientId?: string;
  clean?: boolean;
  will?: unknown;
  keepalive?: number;
  username?: string;
  password?: Buffer;
}

type Done = (err?: (Error & { returnCode?: number; errorCode?: number }) | null, ok?: boolean | null) => void;

interface BrokerLike {
  id: string;
  counter: number;
  maxTopicLevels: number;
  mq: { emit(packet: object, cb: (err?: Error | null) => void): unknown };
  authorizePublish(client: never, packet: ConnectPacket, cb: (err?: Error | null) => void): void;
  published(packet: ConnectPacket, client: never, cb: (err?: Error | null) => void): void;
  closed: boolean;
  keepaliveLimit?: number;
  persistence: {
    delWill(client: unknown): Promise<unknown>;
    cleanIncoming?(client: unknown): Promise<unknown>;
  };
  preConnect(client: never, packet: ConnectPacket, cb: Done): void;
  authenticate(client: never, username: string | undefined, password: Buffer | undefined, cb: Done): void;
  registerClient(client: never): void;
  emit(event: string, ...args: unknown[]): boolean;
  listenerCount(event: string): number;
}

/** The parts of an aedes 1.x Client this touches (node_modules/aedes/lib/client.js). */
export interface FastConnectClient {
  id: string | null;
  clean: boolean;
  version: number | null;
  closed: boolean;
  connecting: boolean;
  connected: boolean;
  connackSent: boolean;
  errored: boolean;
  will: unknown;
  _will: unknown;
  _authorized: boolean;
  _parsingBatch: number;
  _connectTimer: NodeJS.Timeout | null;
  _keepaliveTimer: NodeJS.Timeout | null;
  _keepaliveInterval: number;
  _nextBatch: (err?: Error | null) => void;
  _parser: {
    listeners(event: 'packet'): ((this: unknown, packet: ConnectPacket) => void)[];
    removeListener(event: 'packet', fn: (packet: ConnectPacket) => void): unknown;
    on(event: 'packet', fn: (packet: ConnectPacket) => void): unknown;
  };
  conn: Duplex;
  broker: BrokerLike;
  pause(): void;
  resume(): void;
  close(done?: () => void): void;
  emit(event: string, ...args: unknown[]): boolean;
  waitForDrain(cb: (err: Error | null) => void): void;
}

const CONNACK_OK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const noop = () => {};

/**
 * Routes the client's CONNECT through `fastConnect` when `eligible` says so, a connected client's plain
 * QoS 0 PUBLISH through `fastPublish`, and every other packet to aedes as before. Call right after
 * `aedes.handle()`.
 */
export function installFastConnect(
  client: FastConnectClient,
  eligible: (p: ConnectPacket) => boolean,
  /** True while no persisted subscription can exist (in-memory persistence, no persistent session yet). */
  noPersistedSubscriptions: () => boolean = () => false,
): void {
  const parser = client._parser;
  const listeners = parser.listeners('packet');
  if (listeners.length !== 1) return; // not the aedes this was written against: leave it alone
  const enqueue = listeners[0]!;
  parser.removeListener('packet', enqueue);
  parser.on('packet', function (this: unknown, packet: ConnectPacket) {
    if (
      packet.cmd === 'connect' &&
      client._parsingBatch === 0 &&
      !client.connecting &&
      !client.connected &&
      !client.closed &&
      eligible(packet)
    ) {
      client._parsingBatch++; // as aedes' enqueue
      fastConnect(client, packet);
      return;
    }
    if (
      packet.cmd === 'publish' &&
      (packet.qos === 0 || (packet.qos === 1 && noPersistedSubscriptions())) &&
      !packet.retain &&
      client.connackSent &&
      client.connected
    ) {
      const topic = packet.topic;
      if (typeof topic === 'string' && plainTopic(topic, client.broker.maxTopicLevels)) {
        client._parsingBatch++; // as aedes' enqueue
        if (packet.qos === 0) fastPublish(client, packet);
        else fastPublishQos1(client, packet);
        if (client._keepaliveInterval > 0) client._keepaliveTimer?.refresh(); // as aedes' handle()
        return;
      }
    }
    enqueue.call(this, packet);
  });
}

/** Non-empty, no wildcard, not too deep: what aedes' handlePublish checks before anything else. */
function plainTopic(topic: string, maxLevels: number): boolean {
  if (topic.length === 0) return false;
  let levels = 1;
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    if (c === 47)
      levels++; // '/'
    else if (c === 35 || c === 43) return false; // '#', '+'
  }
  return levels <= maxLevels;
}

/**
 * A plain QoS 0 PUBLISH (not retained) as aedes' handlePublish and broker.publish do it, without their two
 * series runners (a bound function each) and the packet wrapper: authorizePublish, then the message (the
 * fields of an aedes-packet, with this broker's id and next counter, and the publisher's client id) to the
 * emitter, then `published` and the 'publish' event. Retained, QoS 1 and 2 messages take aedes' path.
 */
function fastPublish(client: FastConnectClient, packet: ConnectPacket): void {
  const broker = client.broker;
  const done = client._nextBatch;
  broker.authorizePublish(client as never, packet, (err) => {
    if (err) return done(err);
    const message = {
      cmd: 'publish',
      brokerId: broker.id,
      brokerCounter: ++broker.counter,
      topic: packet.topic!,
      payload: packet.payload ?? EMPTY,
      qos: 0,
      retain: false,
      dup: packet.dup ?? false,
      clientId: client.id,
    };
    broker.mq.emit(message, (e) => {
      if (e) return done(e);
      broker.published(packet, client as never, done);
      broker.emit('publish', packet, client);
    });
  });
}
const EMPTY = Buffer.alloc(0);

/**
 * A plain QoS 1 PUBLISH as aedes does it (handlers/publish.js, aedes.js publish with publishFuncsQoS):
 * authorizePublish, PUBACK written [MQTT-4.3.2-2], then, once written, the message to the emitter. aedes
 * also asks persistence for offline subscribers to queue it for; the caller takes this path only while no
 * subscription can be persisted (in-memory persistence and no persistent session ever), when that query
 * finds nobody.
 */
function fastPublishQos1(client: FastConnectClient, packet: ConnectPacket & { messageId?: number }): void {
  const broker = client.broker;
  const done = client._nextBatch;
  broker.authorizePublish(client as never, packet, (err) => {
    if (err) return done(err);
    const afterAck = (e: Error | null) => {
      if (e) return done(e);
      const message = {
        cmd: 'publish',
        brokerId: broker.id,
        brokerCounter: ++broker.counter,
        topic: packet.topic!,
        payload: packet.payload ?? EMPTY,
        qos: 1,
        retain: false,
        dup: packet.dup ?? false,
        messageId: undefined,
        clientId: client.id,
      };
      broker.mq.emit(message, (e2) => {
        if (e2) return done(e2);
        broker.published(packet, client as never, done);
        broker.emit('publish', packet, client);
      });
    };
    // aedes' write(): only while connected, then the callback on the next turn (or after 'drain').
    if (!(client.connecting || client.connected)) {
      setImmediate(afterAck, new Error('connection closed'));
      return;
    }
    const id = packet.messageId ?? 0;
    const ok = client.conn.write(Buffer.from([0x40, 0x02, id >> 8, id & 0xff]));
    if (!ok && !client.errored) client.waitForDrain((e) => afterAck(e));
    else setImmediate(afterAck, null);
  });
}

/** Whether a CONNECT can take the fast path (given the broker's own conditions, checked by the caller). */
export function plainCleanConnect(p: ConnectPacket): boolean {
  return (
    p.protocolVersion === 4 &&
    p.clean === true &&
    !p.will &&
    typeof p.clientId === 'string' &&
    p.clientId.length > 0
  );
}

function fastConnect(client: FastConnectClient, packet: ConnectPacket): void {
  const broker = client.broker;
  const done = client._nextBatch;
  if (client._connectTimer) clearTimeout(client._connectTimer);
  client._connectTimer = null;
  client.connecting = true;
  broker.preConnect(client as never, packet, (err, ok) => {
    if (!err && ok === true) setImmediate(init);
    else {
      client.connecting = false;
      done(err);
    }
  });

  function init(): void {
    client.id = packet.clientId!;
    client.clean = true;
    client.version = packet.protocolVersion!;
    client._will = packet.will;
    client.pause();
    broker.authenticate(client as never, packet.username, packet.password, (err, ok) => {
      if (client.closed || broker.closed) return; // as aedes: closed while authenticating
      if (!err && ok) {
        client._authorized = true;
        return admitted();
      }
      let e = err;
      let returnCode = 5;
      if (e) {
        const code = e.returnCode;
        if (code && code >= 2 && code <= 5) returnCode = code;
      } else e = new Error('not authorized');
      e.errorCode = returnCode;
      const refused = e;
      // [MQTT-3.2.2-5] CONNACK with the return code, then close.
      connack(returnCode, () => client.close(() => finish(refused)));
    });
  }

  function admitted(): void {
    if (packet.keepalive && packet.keepalive > 0) {
      // [MQTT-3.1.2-24]
      client._keepaliveInterval = packet.keepalive * 1500 + 1;
      client._keepaliveTimer = setTimeout(() => {
        broker.emit('keepaliveTimeout', client);
        client.emit('error', new Error('keep alive timeout'));
      }, client._keepaliveInterval);
    }
    client.will = client._will;
    // A will left in persistence by an earlier connection of this id goes (aedes' storeWill); this id
    // brings none.
    broker.persistence.delWill(client).then(noop, noop);
    broker.registerClient(client as never);
    broker.persistence.cleanIncoming?.(client).then(noop, noop);
    connack(0, (err) => {
      if (err) return finish(err);
      client.resume();
      finish(null);
    });
  }

  /** aedes' doConnack through its write(): CONNACK, then 'connackSent' once written. */
  function connack(returnCode: number, cb: (err: Error | null) => void): void {
    const after = (err: Error | null) => {
      if (!err) {
        if (broker.listenerCount('connackSent') > 0) {
          broker.emit('connackSent', { cmd: 'connack', returnCode, sessionPresent: false }, client);
        }
        client.connackSent = true;
      }
      cb(err);
    };
    if (!(client.connecting || client.connected)) {
      setImmediate(after, new Error('connection closed'));
      return;
    }
    const ok = client.conn.write(returnCode === 0 ? CONNACK_OK : Buffer.from([0x20, 0x02, 0x00, returnCode]));
    if (!ok && !client.errored) client.waitForDrain((err) => after(err));
    else setImmediate(after, null);
  }

  function finish(err: Error | null): void {
    client.connecting = false;
    if (!err) {
      client.connected = true;
      broker.emit('clientReady', client);
      client.emit('connected');
    }
    done(err);
  }
}
