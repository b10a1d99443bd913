/**
 * The ACL matrix, attacked over real mTLS with hand-built MQTT packets (so that a topic can carry what a
 * well-behaved client library refuses to send: NUL, invalid or overlong UTF-8, wildcards in a PUBLISH).
 *
 * The attacker is an authenticated device (adv-acl-a, fleet f1). Its victims: another device of its fleet
 * (adv-acl-b), a device of another fleet (adv-acl-c, f2), and whatever services read. The rule (the
 * default policy, broker/default-policy.yaml): a device reads only its own commands and its fleet's
 * broadcasts, and writes only its own telemetry and state; nobody touches `$SYS`. So:
 *   - subscriptions (wildcards, `$SYS`, `$share`, `$queue`, NUL, invalid UTF-8, `..`, look-alikes): whatever
 *     SUBACK says, the attacker receives none of the probes then published on its victims' topics (their
 *     commands, telemetry, state, another fleet's broadcast, a `$SYS` denial notice), nor their retained
 *     messages;
 *   - publishes, retained messages and wills on others' topics: nothing reaches anyone on a topic outside
 *     the attacker's own tree (`devices/adv-acl-a/…`), and nothing retained is left there.
 * Controls that must be delivered (so that an area refusing everything fails): the attacker's own
 * telemetry and its will on its own topic reach a service, a command reaches the attacker, and the
 * victim's own retained state reaches a fresh subscriber.
 *
 * The fixed matrix runs in both forms; the count adds seeded random filters built from hostile levels.
 * Disconnecting after repeated denials is turned off here (aclDenialLimit 0): it is tested in
 * broker-acl.test.ts, and here each case must reach the policy itself.
 */
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type { CertificateAuthority } from '../../../pki/ca.ts';
import { brokerFixture, type Credentials } from '../../helpers/broker.ts';
import type { AdversarialArea, AreaContext } from '../harness.ts';

const A = 'adv-acl-a';
const B = 'adv-acl-b';
const OWN = `devices/${A}/`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}
const packet = (first: number, body: Buffer) =>
  Buffer.concat([Buffer.from([first]), varint(body.length), body]);
const mqttString = (b: Buffer) => Buffer.concat([u16(b.length), b]);

interface Received {
  readonly topic: string;
  readonly payload: string;
}

/** A device speaking MQTT 3.1.1 by hand over mTLS. */
class RawClient {
  readonly received: Received[] = [];
  closed = false;
  private nextId = 1;
  private readonly waiting = new Map<number, (v: number | 'ack') => void>();
  private onConnack?: (code: number) => void;

  private constructor(private readonly sock: TLSSocket) {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') this.onConnack?.(p.returnCode ?? -1);
      else if (p.cmd === 'suback') this.waiting.get(p.messageId ?? 0)?.(p.granted[0] as number);
      else if (p.cmd === 'puback') this.waiting.get(p.messageId ?? 0)?.('ack');
      else if (p.cmd === 'publish') {
        this.received.push({ topic: String(p.topic), payload: p.payload.toString() });
        if (p.qos === 1) sock.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId ?? 0 }));
      }
    });
    parser.on('error', () => sock.destroy());
    sock.on('data', (d) => parser.parse(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w(-1);
    });
  }

  /** Connects; resolves with the client and the CONNACK code (-1: closed without one). */
  static open(
    port: number,
    ca: CertificateAuthority,
    creds: Credentials,
    will?: { topic: string; payload: string; retain: boolean },
  ): Promise<{ c: RawClient; code: number }> {
    return new Promise((resolve) => {
      const sock = tlsConnect({
        host: '127.0.0.1',
        servername: 'localhost',
        port,
        ca: ca.rootPem,
        cert: creds.cert,
        key: creds.key,
      });
      const c = new RawClient(sock);
      const timer = setTimeout(() => resolve({ c, code: -1 }), 5000);
      c.onConnack = (code) => {
        clearTimeout(timer);
        resolve({ c, code });
      };
      sock.on('close', () => {
        clearTimeout(timer);
        resolve({ c, code: -1 });
      });
      sock.on('secureConnect', () =>
        sock.write(
          mqttPacket.generate({
            cmd: 'connect',
            protocolId: 'MQTT',
            protocolVersion: 4,
            clean: true,
            clientId: creds.id,
            keepalive: 30,
            ...(will
              ? {
                  will: {
                    topic: will.topic,
                    payload: Buffer.from(will.payload),
                    qos: 1,
                    retain: will.retain,
                  },
                }
              : {}),
          }),
        ),
      );
    });
  }

  private ask(first: number, body: (id: number) => Buffer): Promise<number | 'ack' | 'timeout'> {
    if (this.closed) return Promise.resolve(-1);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve('timeout');
      }, 1000);
      this.waiting.set(id, (v) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(v);
      });
      this.sock.write(packet(first, body(id)));
    });
  }

  /** SUBACK's code for `filter` at QoS 1 (128 refused), -1 when the connection closed, or 'timeout'. */
  subscribe(filter: Buffer) {
    return this.ask(0x82, (id) => Buffer.concat([u16(id), mqttString(filter), Buffer.from([1])]));
  }

  /** A QoS 1 PUBLISH: 'ack' when PUBACKed, -1 when the connection closed, or 'timeout'. */
  publish(topic: Buffer, payload: string, retain = false) {
    return this.ask(0x32 | (retain ? 1 : 0), (id) =>
      Buffer.concat([mqttString(topic), u16(id), Buffer.from(payload)]),
    );
  }

  /** Gone without DISCONNECT: the broker publishes the will. */
  kill(): void {
    this.sock.destroy();
  }
}

/** An MQTT.js observer that keeps what it receives. */
function observe(client: MqttClient): Received[] {
  const got: Received[] = [];
  client.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }));
  return got;
}

const until = async (ok: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!ok() && Date.now() < end) await sleep(10);
  return ok();
};

/** Hostile filters: wildcards over others, `$SYS`, `$share`, `$queue`, NUL, bad UTF-8, `..`, look-alikes. */
const FILTERS: [string, Buffer][] = [
  ...[
    '#',
    '+',
    '+/#',
    '+/+/+',
    '+/+/commands/#',
    'devices/#',
    'devices/+',
    'devices/+/#',
    'devices/+/+',
    'devices/+/telemetry',
    'devices/+/telemetry/#',
    'devices/+/state',
    'devices/+/commands/#',
    `devices/${B}/#`,
    `devices/${B}/+`,
    `devices/${B}/commands/#`,
    `devices/${B}/commands/+`,
    `devices/${B}/telemetry`,
    `devices/${B}/state`,
    'fleets/#',
    'fleets/+/broadcast/#',
    'fleets/f2/broadcast/#',
    '$SYS/#',
    '$SYS/+/fleet/denied',
    '$SYS/adv-acl/fleet/denied',
    '$share/g/#',
    `$share/g/devices/${B}/commands/#`,
    `$share/${A}/devices/+/commands/#`,
    `$share//devices/${B}/commands/#`,
    '$share/g/devices/+/telemetry/#',
    `$queue/devices/${B}/commands/#`,
    `devices/${A}/commands/../../${B}/commands/#`,
    `devices/${A}/../${B}/commands/#`,
    `../${B}/commands/#`,
    `devices/./${B}/commands/#`,
    `devices//${B}/commands/#`,
    `/devices/${B}/commands/#`,
    `devices/${B.toUpperCase()}/commands/#`,
    `devices/${B} /commands/#`,
    `devices/${B}\u0000/commands/#`,
    `devices/${A}\u0000/../../${B}/commands/#`,
    `devices/${A}/commands/\u0000#`,
    '#\u0000',
    'devices/\uff0b/commands/#',
    `devices/adv\u2010acl\u2010b/commands/#`,
  ].map((f): [string, Buffer] => [JSON.stringify(f), Buffer.from(f, 'utf8')]),
  ['invalid UTF-8 level (0xff)', bytes('devices/', [0xff], '/commands/#')],
  [
    'overlong "/" (0xc0 0xaf)',
    bytes('devices', [0xc0, 0xaf], B, [0xc0, 0xaf], 'commands', [0xc0, 0xaf], '#'),
  ],
  ['overlong "#" (0xc0 0xa3)', bytes([0xc0, 0xa3])],
  ['overlong "+" (0xc0 0xab)', bytes('devices/', [0xc0, 0xab], '/commands/#')],
  ['a UTF-16 surrogate (0xed 0xa0 0x80)', bytes(`devices/${B}`, [0xed, 0xa0, 0x80], '/commands/#')],
  ['invalid UTF-8 inside its own tree', bytes(`devices/${A}/commands/`, [0xff, 0xfe])],
  ['a truncated UTF-8 sequence', bytes(`devices/${B}/commands/`, [0xe2, 0x82])],
];

/** Topics the attacker must not reach anyone on (publishes, retained, wills). */
const TOPICS: [string, Buffer][] = [
  ...[
    `devices/${B}/telemetry`,
    `devices/${B}/telemetry/x`,
    `devices/${B}/state`,
    `devices/${B}/commands/reboot`,
    'fleets/f1/broadcast/x',
    'fleets/f2/broadcast/x',
    '$SYS/adv-acl/fleet/denied',
    `$share/g/devices/${B}/commands/x`,
    'devices/+/commands/x',
    'devices/#',
    `devices/${A}/telemetry/../../${B}/commands/x`,
    `devices/${B}\u0000/telemetry`,
    `devices/${A}\u0000/telemetry`,
    `devices/${B.toUpperCase()}/telemetry`,
  ].map((t): [string, Buffer] => [JSON.stringify(t), Buffer.from(t, 'utf8')]),
  ['invalid UTF-8 in the id level', bytes('devices/adv-acl-', [0xff], '/telemetry')],
  ['overlong "/" into the victim', bytes('devices', [0xc0, 0xaf], B, [0xc0, 0xaf], 'telemetry')],
];

const LEVELS = [
  'devices',
  A,
  B,
  'adv-acl-c',
  'commands',
  'telemetry',
  'state',
  'fleets',
  'f1',
  'f2',
  'broadcast',
  '+',
  '#',
  '$SYS',
  '$share',
  'g',
  '..',
  '.',
  '',
  '\u0000',
  'x',
];

export const acl: AdversarialArea = {
  name: 'acl',
  description:
    "wildcards, $SYS, $share, NUL, invalid UTF-8, '..', wills and retained messages on others' topics: nothing reaches the attacker or its victims",
  fullCount: 500,
  boundedCount: 10,
  async run(ctx: AreaContext) {
    const t0 = performance.now();
    const f = await brokerFixture({ prefix: 'fleet-adv-acl-' });
    const clients: MqttClient[] = [];
    try {
      const a = await f.enroll('device', A, { fleet: 'f1' });
      const b = await f.enroll('device', B, { fleet: 'f1' });
      const c = await f.enroll('device', 'adv-acl-c', { fleet: 'f2' });
      const svcCreds = await f.enroll('service', 'adv-acl-svc');
      const svc2Creds = await f.enroll('service', 'adv-acl-svc2');
      ctx.log(`fixture and enrollment took ${Math.round(performance.now() - t0)} ms`);
      const sb = await f.start({ nodeId: 'adv-acl', limits: { aclDenialLimit: 0 } });
      const port = sb.port;

      // Observers: a service reading every device's output, the victim, a device of another fleet.
      const svc = await f.connect(svcCreds);
      const victim = await f.connect(b);
      const other = await f.connect(c);
      clients.push(svc, victim, other);
      await svc.subscribeAsync(['devices/+/telemetry/#', 'devices/+/state'], { qos: 1 });
      await victim.subscribeAsync([`devices/${B}/commands/#`, 'fleets/f1/broadcast/#'], { qos: 1 });
      await other.subscribeAsync('fleets/f2/broadcast/#', { qos: 1 });
      const seen = { svc: observe(svc), victim: observe(victim), other: observe(other) };
      const retainedState = `retained-b-state-${ctx.int(1e9)}`;
      await victim.publishAsync(`devices/${B}/state`, retainedState, { qos: 1, retain: true });

      let n = 0;
      /** Waits until a fresh control message reached each observer: what was sent before has been routed. */
      const flush = async () => {
        const m = `flush-${n++}`;
        await svc.publishAsync(`devices/${B}/commands/flush`, m, { qos: 1 });
        await svc.publishAsync('fleets/f2/broadcast/flush', m, { qos: 1 });
        await victim.publishAsync(`devices/${B}/telemetry`, m, { qos: 1 });
        const ok = await until(
          () =>
            seen.victim.some((r) => r.payload === m) &&
            seen.other.some((r) => r.payload === m) &&
            seen.svc.some((r) => r.payload === m),
        );
        if (!ok) throw new Error('observers stopped receiving (flush lost)');
        await sleep(20);
      };
      /** Where `marker` reached an observer on a topic outside the attacker's own tree. */
      const breach = (marker: string): string | undefined => {
        for (const [who, got] of Object.entries(seen)) {
          const r = got.find((x) => x.payload === marker && !x.topic.startsWith(OWN));
          if (r) return `${who} received it on ${JSON.stringify(r.topic)}`;
        }
        return undefined;
      };

      // ------------------------------------------------------------------------------ controls
      await ctx.check('control: the attacker’s own telemetry reaches a service', async () => {
        const { c: att, code } = await RawClient.open(port, f.ca, a);
        if (code !== 0) return `CONNACK ${code}`;
        const m = `ctl-telemetry-${n++}`;
        const r = await att.publish(Buffer.from(`devices/${A}/telemetry`), m);
        att.kill();
        return (await until(() => seen.svc.some((x) => x.payload === m))) ? true : `not delivered (${r})`;
      });
      await ctx.check('control: a service’s command reaches the attacker', async () => {
        const { c: att, code } = await RawClient.open(port, f.ca, a);
        if (code !== 0) return `CONNACK ${code}`;
        const g = await att.subscribe(Buffer.from(`devices/${A}/commands/#`));
        const m = `ctl-command-${n++}`;
        await svc.publishAsync(`devices/${A}/commands/x`, m, { qos: 1 });
        const ok = await until(() => att.received.some((x) => x.payload === m));
        att.kill();
        return ok ? true : `not delivered (SUBACK ${g})`;
      });
      await ctx.check('control: the attacker’s will on its own telemetry reaches a service', async () => {
        const m = `ctl-will-${n++}`;
        const { c: att, code } = await RawClient.open(port, f.ca, a, {
          topic: `devices/${A}/telemetry/will`,
          payload: m,
          retain: false,
        });
        if (code !== 0) return `CONNACK ${code}`;
        att.kill();
        return (await until(() => seen.svc.some((x) => x.payload === m))) ? true : 'will not delivered';
      });

      // ------------------------------------------------------------------------------ wiretaps
      /** Publishes probes on the victims' topics and waits until they were routed. */
      const probe = async () => {
        const p = `probe-${n++}`;
        await svc.publishAsync(`devices/${B}/commands/probe`, p, { qos: 1 });
        await svc.publishAsync('fleets/f2/broadcast/probe', p, { qos: 1 });
        await victim.publishAsync(`devices/${B}/telemetry`, p, { qos: 1 });
        await victim.publishAsync(`devices/${B}/state`, p, { qos: 1 });
        // A denied publish: the broker's own `$SYS/<node>/fleet/denied` notice.
        await victim.publishAsync(`devices/${A}/telemetry`, p, { qos: 1 });
        await flush();
      };
      /** What of others the attacker received: anything outside its own tree (retained messages included). */
      const leaks = (att: RawClient, granted: (number | string)[]): true | string => {
        const leaked = att.received.filter((r) => !r.topic.startsWith(OWN));
        if (leaked.length === 0) return true;
        return `SUBACK ${granted.join(',')}; the attacker received ${leaked
          .slice(0, 3)
          .map((r) => `${JSON.stringify(r.topic)}: ${JSON.stringify(r.payload)}`)
          .join('; ')}`;
      };
      /** Subscribes the attacker to `filter` alone, publishes the probes, checks it got nothing of others. */
      const wiretap = async (filter: Buffer): Promise<true | string> => {
        const { c: att, code } = await RawClient.open(port, f.ca, a);
        if (code !== 0) return `CONNACK ${code}`;
        const g = await att.subscribe(filter);
        await probe();
        att.kill();
        return leaks(att, [g]);
      };
      /**
       * Many filters on as few connections as the broker allows (it may close one, e.g. for a NUL), with
       * the probes published once per connection. A leak is then traced to its filter one by one.
       */
      const wiretaps = async (list: [string, Buffer][]) => {
        let i = 0;
        while (i < list.length) {
          const { c: att, code } = await RawClient.open(port, f.ca, a);
          if (code !== 0) {
            ctx.record(`subscribe ${list[i]![0]}`, false, `the attacker's CONNECT got ${code}`);
            i++;
            continue;
          }
          const batch: [string, Buffer][] = [];
          const granted: (number | string)[] = [];
          while (i < list.length && !att.closed) {
            batch.push(list[i]!);
            granted.push(await att.subscribe(list[i]![1]));
            i++;
          }
          await probe();
          att.kill();
          const r = leaks(att, granted);
          if (r === true || batch.length === 1) {
            for (const [name] of batch)
              ctx.record(`subscribe ${name}: nothing of others arrives`, r === true, r === true ? '' : r);
            continue;
          }
          for (const [name, filter] of batch) {
            await ctx.check(`subscribe ${name}: nothing of others arrives`, () => wiretap(filter));
          }
        }
      };
      ctx.log(`wiretaps from ${Math.round(performance.now() - t0)} ms`);
      await wiretaps(FILTERS);
      ctx.log(`random from ${Math.round(performance.now() - t0)} ms`);
      const random: [string, Buffer][] = [];
      for (let i = 0; i < ctx.count; i++) {
        const depth = 1 + ctx.int(5);
        const filter = Array.from({ length: depth }, () => LEVELS[ctx.int(LEVELS.length)]!).join('/');
        random.push([`random filter ${JSON.stringify(filter)}`, Buffer.from(filter, 'utf8')]);
      }
      await wiretaps(random);

      // ------------------------------------------------------------------------------ publishes, retained
      {
        const sent: [string, string][] = [];
        let att: RawClient | undefined;
        for (const [name, topic] of TOPICS) {
          for (const retain of [false, true]) {
            if (!att || att.closed) {
              att?.kill();
              att = (await RawClient.open(port, f.ca, a)).c;
            }
            const m = `attack-${n++}`;
            await att.publish(topic, m, retain);
            sent.push([`publish${retain ? ' retained' : ''} to ${name}: delivered to nobody`, m]);
          }
        }
        await flush();
        att?.kill();
        for (const [name, m] of sent) {
          const r = breach(m);
          ctx.record(name, r === undefined, r);
        }
      }

      ctx.log(`wills from ${Math.round(performance.now() - t0)} ms`);
      // ------------------------------------------------------------------------------ wills
      {
        const sent: [string, string][] = [];
        for (const [name, topic] of TOPICS) {
          const t = topic.toString('utf8');
          // A will's topic is a UTF-8 string in CONNECT: the invalid-UTF-8 rows are publishes only.
          if (Buffer.compare(Buffer.from(t, 'utf8'), topic) !== 0) continue;
          for (const retain of [false, true]) {
            const m = `will-${n++}`;
            const { c: att } = await RawClient.open(port, f.ca, a, { topic: t, payload: m, retain });
            att.kill();
            sent.push([`will${retain ? ' retained' : ''} on ${name}: delivered to nobody`, m]);
          }
        }
        await sleep(100);
        await flush();
        for (const [name, m] of sent) {
          const r = breach(m);
          ctx.record(name, r === undefined, r);
        }
      }

      // ------------------------------------------------------------------------------ retained, afterwards
      // Fresh subscribers get every retained message on their filters: none may be the attacker's.
      const svc2 = await f.connect(svc2Creds);
      clients.push(svc2);
      const fresh = observe(svc2);
      await svc2.subscribeAsync(['devices/+/state', 'devices/+/telemetry/#'], { qos: 1 });
      victim.end(true);
      const victim2 = await f.connect(b);
      clients.push(victim2);
      const fresh2 = observe(victim2);
      await victim2.subscribeAsync([`devices/${B}/commands/#`, 'fleets/f1/broadcast/#'], { qos: 1 });
      await ctx.check('control: the victim’s own retained state reaches a fresh subscriber', () =>
        until(() => fresh.some((r) => r.payload === retainedState)).then((ok) => ok || 'not delivered'),
      );
      await sleep(300);
      await ctx.check('no retained message or will of the attacker is left on others’ topics', () => {
        const planted = [...fresh, ...fresh2].filter(
          (r) => /^(attack|will)-/.test(r.payload) && !r.topic.startsWith(OWN),
        );
        return planted.length === 0 || `retained: ${JSON.stringify(planted.slice(0, 3))}`;
      });
    } finally {
      for (const cl of clients) cl.end(true);
      await f.cleanup();
    }
  },
};
