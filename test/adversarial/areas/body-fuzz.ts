/**
 * Body fuzz against the running provisioning service over real mTLS: CSRs (mutated DER, sent as PEM in
 * JSON and as base64 EST bodies), JSON enrollment and operator bodies (mutated text), and NDJSON batches
 * (mutated text). The rule: every refusal is a 4xx with a code and writes no row (devices and certificates
 * counted in the registry before and after each case); an answer that accepts must be an input that is
 * still valid (the counts grow by exactly the certificates answered); never a 500; a control enrollment
 * still succeeds during and after.
 */
import { sql } from 'drizzle-orm';
import { csrToDer } from '../../../pki/csr.ts';
import { dbOf } from '../../../registry/console.ts';
import {
  type Creds,
  createStation,
  type Harness,
  pgliteBackend,
  type Reply,
  startHarness,
} from '../../helpers/provisioning.ts';
import type { AdversarialArea, AreaContext } from '../harness.ts';
import { mutate } from '../mutate.ts';

async function counts(h: Harness): Promise<{ devices: number; certificates: number }> {
  const r = await dbOf(h.registry).execute(
    sql`select (select count(*) from devices)::int as d, (select count(*) from certificates)::int as c`,
  );
  const row = ((r as { rows?: unknown[] }).rows ?? (r as unknown as unknown[]))[0] as {
    d: number;
    c: number;
  };
  return { devices: Number(row.d), certificates: Number(row.c) };
}

const pemOf = (d: Buffer) =>
  `-----BEGIN CERTIFICATE REQUEST-----\n${d.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;

type Family = 'json-csr' | 'json-text' | 'operator-csr' | 'ndjson' | 'est-csr' | 'est-text';
const FAMILIES: Family[] = ['json-csr', 'json-text', 'operator-csr', 'ndjson', 'est-csr', 'est-text'];

export const bodyFuzz: AdversarialArea = {
  name: 'body-fuzz',
  description:
    'mutated CSR, JSON, NDJSON and EST bodies over mTLS: a 4xx with a code and no row, or a valid input accepted; never a 500',
  fullCount: 5000,
  boundedCount: 60,
  async run(ctx: AreaContext) {
    const h = await startHarness(pgliteBackend());
    try {
      const station: Creds = await createStation(h, { products: ['thermo'] });
      let n = 0;
      const fresh = () => {
        n++;
        const id = `adv-body-${ctx.seed.toString(36)}-${n}`;
        return { id, csr: h.keyAndCsr(id).csrPem };
      };
      const controlOk = async (): Promise<true | string> => {
        const { id, csr } = fresh();
        const r = await h.call(station, 'POST', '/v1/enrollments', { deviceId: id, product: 'thermo', csr });
        return r.status === 201 ? true : `control enrollment: ${r.status} ${r.text.slice(0, 160)}`;
      };
      await ctx.check('control: a valid enrollment succeeds', controlOk);

      const tally: Record<string, number> = { refused: 0, accepted: 0 };
      for (let i = 0; i < ctx.count; i++) {
        const family = FAMILIES[ctx.int(FAMILIES.length)]!;
        const { id, csr } = fresh();
        const der = csrToDer(csr);
        let reply: (() => Promise<Reply>) | undefined;
        let batch = false;
        switch (family) {
          case 'json-csr':
            reply = () =>
              h.call(station, 'POST', '/v1/enrollments', {
                deviceId: id,
                product: 'thermo',
                csr: pemOf(mutate(der, ctx)),
              });
            break;
          case 'operator-csr':
            reply = () =>
              h.call(h.operator, 'POST', '/v1/devices', {
                id,
                product: 'thermo',
                csr: ctx.int(2) ? pemOf(mutate(der, ctx)) : mutate(der, ctx).toString('base64'),
              });
            break;
          case 'json-text': {
            const text = Buffer.from(JSON.stringify({ deviceId: id, product: 'thermo', csr }));
            const m = mutate(text, ctx);
            reply = () =>
              h.call(station, 'POST', '/v1/enrollments', m, { 'content-type': 'application/json' });
            break;
          }
          case 'ndjson': {
            const second = fresh();
            const text = Buffer.from(
              `${JSON.stringify({ deviceId: id, product: 'thermo', csr })}\n${JSON.stringify({ deviceId: second.id, product: 'thermo', csr: second.csr })}\n`,
            );
            const m = mutate(text, ctx);
            batch = true;
            reply = () =>
              h.call(station, 'POST', '/v1/enrollments/batch', m, { 'content-type': 'application/x-ndjson' });
            break;
          }
          case 'est-csr': {
            const m = mutate(der, ctx).toString('base64');
            reply = () =>
              h.call(station, 'POST', '/.well-known/est/thermo/simpleenroll', m, {
                'content-type': 'application/pkcs10',
              });
            break;
          }
          case 'est-text': {
            const m = mutate(Buffer.from(der.toString('base64')), ctx);
            reply = () =>
              h.call(station, 'POST', '/.well-known/est/thermo/simpleenroll', m, {
                'content-type': 'application/pkcs10',
              });
            break;
          }
        }
        await ctx.check(`${family} mutant ${i}`, async () => {
          const before = await counts(h);
          const r = await reply!();
          const after = await counts(h);
          const grew = after.certificates - before.certificates;
          if (r.status >= 500) return `HTTP ${r.status} ${r.text.slice(0, 160)}`;
          if (r.status >= 400) {
            tally['refused']!++;
            if (!r.json?.error?.code) return `HTTP ${r.status} without a code: ${r.text.slice(0, 120)}`;
            return grew === 0 && after.devices === before.devices
              ? true
              : `refused ${r.json.error.code} but wrote ${grew} certificate(s)`;
          }
          if (batch) {
            // 200 with one result a line: each ok line has its certificate, each refused one its code.
            const lines = r.text.split('\n').filter((l) => l.trim());
            let ok = 0;
            for (const l of lines) {
              const j = JSON.parse(l) as { ok?: boolean; certificate?: string; error?: { code?: string } };
              if (j.ok && j.certificate) ok++;
              else if (!j.error?.code)
                return `a batch line without a certificate or a code: ${l.slice(0, 120)}`;
              else tally['refused']!++;
            }
            tally['accepted']! += ok;
            return grew === ok ? true : `batch answered ${ok} certificate(s) but wrote ${grew}`;
          }
          tally['accepted']!++;
          return grew === 1 ? true : `accepted (${r.status}) but wrote ${grew} certificate(s)`;
        });
        if (i % 50 === 49) await ctx.check(`control after ${i + 1} mutants`, controlOk);
      }
      await ctx.check('control at the end: a valid enrollment still succeeds', controlOk);
      ctx.figure('refused_with_code', tally['refused']!);
      ctx.figure('accepted_valid', tally['accepted']!);
    } finally {
      await h.close();
    }
  },
};
