/**
 * Incidents peers suffered, replayed against Fleet's real broker, registry and CA:
 *
 * - Mosquitto #1826: once the CRL file passed its nextUpdate, OpenSSL refused every client: the whole fleet
 *   was locked out by stale revocation data. Fleet's broker reads no CRL (it holds the revoked set from the
 *   registry); the same failure would be a broker that refuses everyone when its revocation source goes
 *   stale. The rule: with the registry unreachable for the resync, valid devices still connect and the
 *   revoked set it last loaded still refuses the revoked ones (neither locked out nor let in).
 * - EMQX #10992: a revoked device kept its live session. The rule: its live session is closed on every node
 *   through the change feed, and its reconnect is refused on every node.
 *
 * Each incident has a control that must succeed, so that an area refusing everything cannot pass.
 */
import type { BrokerRegistry } from '../../../broker/registry.ts';
import { fromRegistry } from '../../../broker/registry.ts';
import { brokerFixture, closedWithin } from '../../helpers/broker.ts';
import type { AdversarialArea, AreaContext } from '../harness.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const incidents: AdversarialArea = {
  name: 'incidents',
  description:
    "peers' incidents replayed: stale revocation data locks nobody out, a revoked live session is closed",
  fullCount: 1,
  boundedCount: 1,
  async run(ctx: AreaContext) {
    const f = await brokerFixture({ prefix: 'fleet-adv-incidents-' });
    try {
      const ok = await f.enroll('device', 'inc-ok');
      const gone = await f.enroll('device', 'inc-gone');
      const live = await f.enroll('device', 'inc-live');
      await f.setStatus('device', 'inc-gone', 'revoked');
      // A node whose registry stops answering the revoked-set read (the source of revocation data is stale).
      let stale = false;
      const real = fromRegistry(f.registry);
      const flaky: BrokerRegistry = {
        ...real,
        revokedSet: () =>
          stale ? Promise.reject(new Error('registry unreachable (test)')) : real.revokedSet(),
      };
      const a = await f.start({ revocation: { resyncMs: 600_000 } }, { registry: flaky });
      const b = await f.start({ revocation: { resyncMs: 600_000 } });

      await ctx.check('a valid device connects (control)', async () => {
        const o = await a.tryConnect(ok);
        if (o.outcome !== 'connected') return `control refused: ${JSON.stringify(o)}`;
        o.client.end(true);
        return true;
      });

      stale = true;
      await a.broker.resync();
      await ctx.check(
        'Mosquitto #1826: revocation data gone stale does not lock valid devices out',
        async () => {
          const o = await a.tryConnect(ok);
          if (o.outcome !== 'connected') return `valid device refused: ${JSON.stringify(o)}`;
          o.client.end(true);
          return true;
        },
      );
      await ctx.check('Mosquitto #1826: ...nor lets a revoked device in', async () => {
        const o = await a.tryConnect(gone);
        if (o.outcome === 'connected') {
          o.client.end(true);
          return 'revoked device connected';
        }
        return true;
      });

      await ctx.check(
        "EMQX #10992: a revoked device's live session is closed on every node, and it cannot come back",
        async () => {
          const onA = await a.connect(live);
          const onB = await b.connect(live, { clientId: 'inc-live' }).catch(() => undefined);
          // One session per client id across the fleet is not this incident's rule; what matters is that
          // whatever session the device holds anywhere is closed.
          const closing = [closedWithin(onA, 10_000), ...(onB ? [closedWithin(onB, 10_000)] : [])];
          await f.setStatus('device', 'inc-live', 'revoked');
          try {
            await Promise.all(closing);
          } catch (e) {
            return `live session still open: ${(e as Error).message}`;
          }
          await sleep(50);
          for (const node of [a, b]) {
            const o = await node.tryConnect(live);
            if (o.outcome === 'connected') {
              o.client.end(true);
              return 'reconnect admitted after revocation';
            }
          }
          return true;
        },
      );
    } finally {
      await f.cleanup();
    }
  },
};
