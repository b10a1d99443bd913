/**
 * Who may connect: the refusal matrix, over real TLS with MQTT.js, against certificates made at test time
 * by the project's CA code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BrokerFixture,
  brokerFixture,
  type Credentials,
  caCertificateAsClient,
  issue,
} from './helpers/broker.ts';

const DAY = 86_400_000;
let f: BrokerFixture;
const creds: Record<string, Credentials> = {};

beforeAll(async () => {
  f = await brokerFixture();
  const other = await f.makeCa('other', 'Other');
  const now = Date.now();
  creds.device = await f.enroll('device', 'dev-1');
  creds.revoked = await f.enroll('device', 'dev-revoked');
  creds.suspended = await f.enroll('device', 'dev-suspended');
  creds.serial = await f.enroll('device', 'dev-serial');
  creds.expired = await f.enroll('device', 'dev-expired', {
    notBefore: new Date(now - 3 * DAY),
    notAfter: new Date(now - DAY),
  });
  creds.future = await f.enroll('device', 'dev-future', {
    notBefore: new Date(now + DAY),
    notAfter: new Date(now + 3 * DAY),
  });
  creds.service = await f.enroll('service', 'ingest');
  creds.station = await f.enroll('station', 'line-1');
  creds.operator = await f.enroll('operator', 'alice');
  await f.setStatus('device', 'dev-revoked', 'revoked');
  await f.setStatus('device', 'dev-suspended', 'suspended');
  await f.registry.revokeCertificate({ serial: creds.serial.serial, actor: 'operator:test' });
  // Not in the registry, or not from this fleet's CA:
  creds.unknown = f.issue('device', 'dev-unknown');
  creds.otherCa = issue(other, 'device', 'dev-1');
  creds.serverOnly = f.issue('broker', 'dev-1', { dns: ['dev-1.example'] });
  creds.caCert = caCertificateAsClient(f.ca);
  await f.start();
});

afterAll(async () => {
  await f?.cleanup();
});

type Expect = 'connected' | 'tls_refused' | 5;

const table: [string, () => Credentials | undefined, string | undefined, Expect][] = [
  ['a device with its own certificate and client id connects', () => creds.device, undefined, 'connected'],
  ['a service with its own certificate connects', () => creds.service, undefined, 'connected'],
  ['no client certificate is refused in the handshake', () => undefined, 'dev-1', 'tls_refused'],
  [
    'a certificate from another CA is refused in the handshake',
    () => creds.otherCa,
    undefined,
    'tls_refused',
  ],
  ['an expired certificate is refused in the handshake', () => creds.expired, undefined, 'tls_refused'],
  ['a not yet valid certificate is refused in the handshake', () => creds.future, undefined, 'tls_refused'],
  ['a serverAuth-only certificate is refused', () => creds.serverOnly, 'dev-1', 'tls_refused'],
  ['a CA certificate as a client gets CONNACK 5', () => creds.caCert, 'rogue', 5],
  ['a revoked device gets CONNACK 5', () => creds.revoked, undefined, 5],
  ['a suspended device gets CONNACK 5', () => creds.suspended, undefined, 5],
  ['a device whose certificate serial is revoked gets CONNACK 5', () => creds.serial, undefined, 5],
  ['a device not in the registry gets CONNACK 5', () => creds.unknown, undefined, 5],
  ['a station certificate on MQTT gets CONNACK 5', () => creds.station, undefined, 5],
  ['an operator certificate on MQTT gets CONNACK 5', () => creds.operator, undefined, 5],
  ["a client id other than the certificate's id gets CONNACK 5", () => creds.device, 'dev-2', 5],
  ['an empty client id gets CONNACK 5', () => creds.device, '', 5],
];

describe('mTLS CONNECT', () => {
  it.each(table)('%s', async (_name, who, clientId, expected) => {
    const c = who();
    const r = await f.tryConnect(c, clientId === undefined ? {} : { clientId });
    if (r.outcome === 'connected') await r.client.endAsync();
    if (expected === 'connected') expect(r.outcome).toBe('connected');
    else if (expected === 'tls_refused') expect(r.outcome).toBe('closed');
    else expect(r).toEqual({ outcome: 'connack', code: expected });
  });

  it('counts refusals by reason and handshakes by outcome', async () => {
    const text = await f.broker.metrics.registry.metrics();
    expect(text).toMatch(/fleet_mqtt_auth_failures_total\{reason="(certificate_)?revoked"\} [1-9]/);
    expect(text).toMatch(/fleet_mqtt_auth_failures_total\{reason="suspended"\} [1-9]/);
    expect(text).toMatch(/fleet_mqtt_auth_failures_total\{reason="kind_not_allowed"\} [1-9]/);
    expect(text).toMatch(/fleet_mqtt_auth_failures_total\{reason="client_id_mismatch"\} [1-9]/);
    expect(text).toMatch(/fleet_tls_handshakes_total\{outcome="ok"\} [1-9]/);
    expect(text).toMatch(/fleet_tls_handshakes_total\{outcome="(no_certificate|unknown_ca)"\} [1-9]/);
  });
});

describe('one live connection per identity', () => {
  it('a second connection of the same device takes over the first, and the takeover is counted', async () => {
    const a = await f.tryConnect(creds.device);
    expect(a.outcome).toBe('connected');
    const first = (a as { client: import('mqtt').MqttClient }).client;
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const b = await f.tryConnect(creds.device);
    expect(b.outcome).toBe('connected');
    await closed;
    const text = await f.broker.metrics.registry.metrics();
    expect(text).toMatch(/fleet_mqtt_takeovers_total [1-9]/);
    if (b.outcome === 'connected') await b.client.endAsync();
  });
});
