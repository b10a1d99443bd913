/**
 * The mTLS refusal matrix: every identity that must not get a session, tried over real TLS with MQTT.js
 * against a broker on the fleet's CA made now. The rule: only a current, valid device or service
 * certificate of this fleet, known to the registry and active, presenting its own client id, gets CONNACK 0;
 * everything else is refused (in the handshake or with a CONNACK refusal) and no session exists after.
 * One identity that must connect is tried too, so that a broker refusing everyone cannot pass.
 *
 * Superseded certificates follow the rotation rule (registry/rotation.ts): refused once the successor
 * connected, once the grace period ended, and at once after an operator reset. A TLS session resumed from a
 * ticket issued while the certificate was valid is refused at CONNECT after each refusal cause (revoked,
 * suspended, superseded), over TLS 1.2 and 1.3: nothing is re-verified on resumption, so only the check at
 * CONNECT stands between the ticket and a session. A case where the session did not resume is a failure
 * (it would not test resumption).
 */
import {
  type BrokerFixture,
  brokerFixture,
  type ConnectOutcome,
  type Credentials,
  caCertificateAsClient,
  issue,
  rawConnect,
} from '../../helpers/broker.ts';
import type { AdversarialArea, AreaContext } from '../harness.ts';

const DAY = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const refused = (o: ConnectOutcome): boolean | string => {
  if (o.outcome === 'connected') {
    o.client.end(true);
    return 'connected (CONNACK 0)';
  }
  return true;
};

export const mtlsRefusal: AdversarialArea = {
  name: 'mtls-refusal',
  description: 'identities that must not connect, over real TLS: each refused, one valid device admitted',
  fullCount: 1,
  boundedCount: 1,
  async run(ctx: AreaContext) {
    const f: BrokerFixture = await brokerFixture({ prefix: 'fleet-adv-mtls-' });
    try {
      const now = Date.now();
      const other = await f.makeCa('other', 'Other');
      const twin = await f.makeCa('twin', 'Fleet');
      const c: Record<string, Credentials | undefined> = {
        valid: await f.enroll('device', 'adv-ok'),
        revoked: await f.enroll('device', 'adv-revoked'),
        suspended: await f.enroll('device', 'adv-suspended'),
        expired: await f.enroll('device', 'adv-expired', {
          notBefore: new Date(now - 3 * DAY),
          notAfter: new Date(now - DAY),
        }),
        future: await f.enroll('device', 'adv-future', {
          notBefore: new Date(now + DAY),
          notAfter: new Date(now + 3 * DAY),
        }),
        station: await f.enroll('station', 'adv-line'),
        operator: await f.enroll('operator', 'adv-alice'),
      };
      await f.setStatus('device', 'adv-revoked', 'revoked');
      await f.setStatus('device', 'adv-suspended', 'suspended');
      c.unknown = f.issue('device', 'adv-unknown');
      c.otherCa = issue(other, 'device', 'adv-ok');
      c.twinCa = issue(twin, 'device', 'adv-ok');
      c.serverEku = f.issue('broker', 'adv-ok', { dns: ['adv-ok.example'] });
      c.caAsClient = caCertificateAsClient(f.ca);
      // Superseded: by a re-enrollment whose successor then connects, by a grace period that ended, by a reset.
      const rotated = await f.enroll('device', 'adv-rotated');
      const rotatedNext = await f.reenroll(rotated);
      c.supersededConnected = rotated;
      c.supersededDeadline = await f.enroll('device', 'adv-deadline');
      await f.reenroll(c.supersededDeadline, { graceMs: 200 });
      c.supersededReset = await f.enroll('device', 'adv-reset');
      await f.registry.allowReenroll('adv-reset', 'operator:adversarial');
      await f.start();
      const successor = await f.tryConnect(rotatedNext);
      if (successor.outcome === 'connected') successor.client.end(true);
      await ctx.check("a re-enrolled device's new certificate connects (control)", () =>
        successor.outcome === 'connected' ? true : `successor refused: ${JSON.stringify(successor)}`,
      );
      await sleep(250);

      await ctx.check('a valid device with its own client id connects (control)', async () => {
        const o = await f.tryConnect(c.valid);
        if (o.outcome !== 'connected') return `control device refused: ${JSON.stringify(o)}`;
        o.client.end(true);
        return true;
      });
      const cells: [string, Credentials | undefined, string | undefined][] = [
        ['no client certificate', undefined, 'adv-ok'],
        ['a certificate from another CA', c.otherCa, undefined],
        ["another CA with the fleet's exact names", c.twinCa, undefined],
        ['a server-only (wrong EKU) certificate', c.serverEku, 'adv-ok'],
        ['a CA certificate as client', c.caAsClient, 'adv-ok'],
        ['an expired certificate', c.expired, undefined],
        ['a not-yet-valid certificate', c.future, undefined],
        ['a certificate the registry does not know', c.unknown, undefined],
        ['a revoked device', c.revoked, undefined],
        ['a suspended device', c.suspended, undefined],
        ['a superseded certificate after its successor connected', c.supersededConnected, undefined],
        ['a superseded certificate after its grace period ended', c.supersededDeadline, undefined],
        ['the old certificate after an operator reset', c.supersededReset, undefined],
        ['a station certificate on MQTT', c.station, undefined],
        ['an operator certificate on MQTT', c.operator, undefined],
        ["a valid device presenting another device's client id", c.valid, 'adv-revoked'],
        ['a valid device with an empty client id', c.valid, ''],
        ['a valid device with its id in another case', c.valid, 'ADV-OK'],
        ['a valid device with its id and a trailing NUL', c.valid, 'adv-ok\u0000'],
        ['a valid device with its id as a prefix', c.valid, 'adv-ok-2'],
      ];
      for (const [name, creds, clientId] of cells) {
        await ctx.check(name, async () =>
          refused(await f.tryConnect(creds, clientId === undefined ? {} : { clientId })),
        );
      }

      // Resumed TLS sessions: a ticket issued while the certificate was valid, used after each refusal cause.
      const causes: [string, (d: Credentials) => Promise<unknown>][] = [
        ['revoked', (d) => f.setStatus('device', d.id, 'revoked')],
        ['suspended', (d) => f.setStatus('device', d.id, 'suspended')],
        [
          'superseded',
          async (d) => {
            const next = await f.reenroll(d);
            const r = await rawConnect(f.port, f.ca, next);
            if (r.returnCode !== 0) throw new Error(`successor refused: ${r.returnCode}`);
          },
        ],
      ];
      for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
        for (const [cause, apply] of causes) {
          await ctx.check(
            `a TLS ${version.slice(4)} session resumed after the device was ${cause}`,
            async () => {
              const d = await f.enroll('device', `adv-res-${cause}-${version.slice(5)}`);
              const first = await rawConnect(f.port, f.ca, d, { maxVersion: version });
              if (first.returnCode !== 0) return `control connect refused: ${first.returnCode}`;
              if (!first.session) return 'no session ticket to resume';
              await apply(d);
              // The change reaches the node over the feed; give it a moment as a device's reconnect would.
              await sleep(100);
              const again = await rawConnect(f.port, f.ca, d, {
                maxVersion: version,
                session: first.session,
              });
              if (!again.reused) return 'the TLS session was not resumed (the case tests nothing)';
              return again.returnCode === 0 ? 'CONNACK 0 on a resumed session' : true;
            },
          );
        }
      }
    } finally {
      await f.cleanup();
    }
  },
};
