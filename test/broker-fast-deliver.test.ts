/**
 * The batched QoS 0 delivery (broker/aedes/fast-deliver.ts) writes the very bytes mqtt-packet would, for every
 * remaining-length size class, retained or not, with multi-byte topics and string payloads.
 */
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { encodePublish, encodeQos0 } from '../broker/aedes/fast-deliver.ts';

describe('encodeQos0', () => {
  const sizes = [0, 1, 100, 123, 124, 125, 16_370, 16_379, 16_380, 16_381, 2_097_140, 2_097_145];
  const cases: [string, string, Buffer | string, boolean][] = [
    ...sizes.map((n): [string, string, Buffer, boolean] => [
      `payload ${n} B`,
      'devices/d-1/telemetry',
      Buffer.alloc(n, 7),
      false,
    ]),
    ['retained', 'devices/d-1/state', Buffer.from('on'), true],
    ['a multi-byte topic', 'devices/d-1/telemetry/température/€', Buffer.from([1, 2, 3]), false],
    ['a string payload', 'devices/d-1/telemetry', 'héllo', false],
    ['an empty topic level', 'devices//telemetry', Buffer.alloc(0), false],
  ];
  it.each(cases)('matches mqtt-packet: %s', (_name, topic, payload, retain) => {
    const expected = mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 0, retain, dup: false });
    expect(encodeQos0(topic, payload, retain).equals(expected)).toBe(true);
  });

  it('writes an absent payload as an empty one', () => {
    const expected = mqttPacket.generate({
      cmd: 'publish',
      topic: 't',
      payload: Buffer.alloc(0),
      qos: 0,
      retain: false,
      dup: false,
    });
    expect(encodeQos0('t', undefined, false).equals(expected)).toBe(true);
  });
});

describe('encodePublish', () => {
  it.each([
    ['QoS 1', 1, 1, false, false],
    ['QoS 1, the largest identifier, retained', 1, 65535, true, false],
    ['QoS 1 with DUP', 1, 300, false, true],
    ['QoS 2', 2, 42, false, false],
    ['QoS 0 ignores DUP and the identifier', 0, 7, false, true],
  ] as const)('matches mqtt-packet: %s', (_name, qos, messageId, retain, dup) => {
    const topic = 'devices/d-1/commands/reboot';
    const payload = Buffer.alloc(200, 1);
    const expected = mqttPacket.generate({
      cmd: 'publish',
      topic,
      payload,
      qos,
      retain,
      dup: qos > 0 && dup,
      ...(qos > 0 ? { messageId } : {}),
    });
    expect(encodePublish(topic, payload, retain, qos, dup, messageId).equals(expected)).toBe(true);
  });
});
