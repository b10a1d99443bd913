/**
 * What the console's triggers and indexes cost the write paths they sit on, beside a baseline in the same
 * run: the same registry with the 0003 triggers dropped and the console's extra device indexes dropped.
 *
 *   - issuing: recordIssuedBatch of `--batch` devices (a station's batch enrollment), `--batches` times;
 *   - presence: the broker's flushes, recordPresence of `--batch` connects then `--batch` disconnects.
 *
 * Alternates the two registries round by round (`--rounds`), prints the median per round and the ratio.
 *   npx tsx console/bench/write-cost.bench.ts [--batch 500] [--batches 4] [--rounds 5]
 */
import { createHash, randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import { dbOf } from '../../registry/console.ts';
import { type IssueRecord, openRegistry, type PresenceUpdate, type Registry } from '../../registry/index.ts';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '500' },
    batches: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '5' },
  },
});
const BATCH = Number(values.batch);
const BATCHES = Number(values.batches);
const ROUNDS = Number(values.rounds);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function records(prefix: string): IssueRecord[] {
  return Array.from({ length: BATCH }, (_, i) => {
    const der = randomBytes(300);
    return {
      subject: { kind: 'device', id: `${prefix}-${i}`, product: ['thermo', 'meter'][i % 2]!, fleet: 'eu' },
      certificate: {
        // A canonical serial, as the CA writes one: a leading zero octet is not canonical (1 in 256 of random ones).
        serial: `7${randomBytes(16).toString('hex').slice(1)}`,
        issuerCa: 'device',
        der,
        fingerprintSha256: sha(der),
        spkiSha256: sha(randomBytes(32)),
        notBefore: new Date(),
        notAfter: new Date(Date.now() + 7300 * 86_400_000),
      },
      enrolledBy: 'line-1',
      actor: 'station:line-1',
    };
  });
}

async function withoutConsole(reg: Registry): Promise<void> {
  const db = dbOf(reg);
  for (const t of [
    'devices_count_insert',
    'devices_count_update',
    'devices_count_delete',
    'devices_count_truncate',
  ])
    await db.execute(sql.raw(`drop trigger ${t} on devices`));
  for (const t of [
    'presence_track_insert',
    'presence_track_update',
    'presence_track_delete',
    'presence_track_truncate',
  ])
    await db.execute(sql.raw(`drop trigger ${t} on presence`));
  for (const i of [
    'devices_id_c_idx',
    'devices_fleet_id_idx',
    'devices_station_id_idx',
    'presence_connected_idx',
  ])
    await db.execute(sql.raw(`drop index ${i}`));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const url = process.env['DATABASE_URL'];
  const open = () => openRegistry(url ? { databaseUrl: url } : {});
  if (url)
    throw new Error('run on PGlite (the embedded default): both registries must be separate databases');
  const withC = await open();
  const base = await open();
  await withoutConsole(base);
  console.log(
    `PGlite in memory; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const issue: Record<string, number[]> = { console: [], baseline: [] };
  const pres: Record<string, number[]> = { console: [], baseline: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, reg] of [
      ['console', withC],
      ['baseline', base],
    ] as const) {
      const prefix = `r${round}-${randomBytes(3).toString('hex')}`;
      let t = performance.now();
      for (let b = 0; b < BATCHES; b++) await reg.recordIssuedBatch(records(`${prefix}-${b}`));
      issue[name]!.push((performance.now() - t) / (BATCH * BATCHES));
      const ids = Array.from(
        { length: BATCH * BATCHES },
        (_, i) => `${prefix}-${Math.floor(i / BATCH)}-${i % BATCH}`,
      );
      const at = new Date();
      const ev = (event: 'connect' | 'disconnect', i: number): PresenceUpdate => ({
        kind: 'device',
        id: ids[i]!,
        event,
        at: new Date(at.getTime() + (event === 'disconnect' ? 1000 : 0)),
        brokerNode: 'n1',
        remoteAddress: '10.0.0.1',
      });
      t = performance.now();
      for (let b = 0; b < BATCHES; b++)
        await reg.recordPresence(Array.from({ length: BATCH }, (_, i) => ev('connect', b * BATCH + i)));
      for (let b = 0; b < BATCHES; b++)
        await reg.recordPresence(Array.from({ length: BATCH }, (_, i) => ev('disconnect', b * BATCH + i)));
      pres[name]!.push((performance.now() - t) / (2 * BATCH * BATCHES));
    }
  }
  const line = (what: string, m: Record<string, number[]>) =>
    console.log(
      `${what.padEnd(34)} console ${(median(m['console']!) * 1000).toFixed(0).padStart(5)} µs   baseline ${(median(m['baseline']!) * 1000).toFixed(0).padStart(5)} µs   ratio ${(median(m['console']!) / median(m['baseline']!)).toFixed(2)}   (rounds: ${m['console']!.map((x) => (x * 1000).toFixed(0)).join('/')} vs ${m['baseline']!.map((x) => (x * 1000).toFixed(0)).join('/')})`,
    );
  console.log(`median per record over ${ROUNDS} rounds of ${BATCHES} x ${BATCH}:`);
  line('issuing (recordIssuedBatch)', issue);
  line('presence (recordPresence)', pres);
  await withC.close();
  await base.close();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
