/**
 * Admission in a reconnect storm: a connection past the handshakes-in-flight cap is closed at accept,
 * before any TLS byte (a fast refusal the device retries), and the count of handshakes in flight comes
 * back down whether a handshake succeeds, fails or is abandoned, so the cap never leaks shut.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrokerFixture, brokerFixture, type Credentials } from './helpers/broker.ts';

let f: BrokerFixture;
let device: Credentials;

beforeAll(async () => {
  f = await brokerFixture();
  device = await f.enroll('device', 'adm-1');
  await f.start({ limits: { maxHandshakesInFlight: 2, connectRatePerS: 0 } });
});

afterAll(async () => {
  await f?.cleanup();
});

/** A TCP connection that never starts TLS; resolves once connected, with a promise of its close. */
function idleTcp(): Promise<{ sock: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = netConnect({ host: '127.0.0.1', port: f.port }, () => {
      resolve({ sock, closed: new Promise<void>((res) => sock.once('close', () => res())) });
    });
    sock.once('error', reject);
  });
}

/** Whether the server closes a fresh idle TCP connection within `ms` (refused at accept). */
async function refusedAtAccept(ms = 1000): Promise<boolean> {
  const { sock, closed } = await idleTcp();
  const r = await Promise.race([
    closed.then(() => 'closed' as const),
    new Promise<'open'>((res) => setTimeout(() => res('open'), ms)),
  ]);
  sock.destroy();
  return r === 'closed';
}

const metric = async (reason: string) =>
  (await f.broker.metrics.admissionRefused.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

describe('handshakes in flight are capped at accept', () => {
  it('a connection past the cap is closed before any TLS byte, and counted', async () => {
    const a = await idleTcp();
    const b = await idleTcp();
    // The client side is connected when the kernel answers; let the broker accept both first.
    await new Promise((r) => setTimeout(r, 100));
    const before = await metric('handshakes_in_flight');
    expect(await refusedAtAccept()).toBe(true);
    expect(await metric('handshakes_in_flight')).toBe(before + 1);
    a.sock.destroy();
    b.sock.destroy();
    await Promise.all([a.closed, b.closed]);
  });

  it('the count comes back down after handshakes that succeed, fail and are abandoned', async () => {
    for (let i = 0; i < 4; i++) {
      const ok = await f.tryConnect(device);
      expect(ok.outcome).toBe('connected');
      if (ok.outcome === 'connected') await ok.client.endAsync();
      // No client certificate: the handshake or the CONNECT is refused.
      const refused = await f.tryConnect(undefined, { clientId: 'adm-1' });
      expect(refused.outcome).not.toBe('connected');
      const abandoned = await idleTcp();
      abandoned.sock.destroy();
      await abandoned.closed;
    }
    // Were anything leaked, the cap of 2 would now refuse a fresh connection.
    await new Promise((r) => setTimeout(r, 100));
    expect(await refusedAtAccept(300)).toBe(false);
    const again = await f.tryConnect(device);
    expect(again.outcome).toBe('connected');
    if (again.outcome === 'connected') await again.client.endAsync();
  });
});
