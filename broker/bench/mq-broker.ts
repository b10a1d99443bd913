/**
 * Benchmark broker process (started by mq-throughput.ts): plain aedes on plain TCP, 127.0.0.1, an
 * ephemeral port. `--mq default` uses aedes' own mqemitter; `--mq fleet` uses FleetMq with backpressure;
 * `--mq fleet-nobp` uses FleetMq alone. Prints one JSON line `{ "port": … }` when listening.
 */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';
import { attachBackpressure } from '../aedes/backpressure.ts';
import { createMq } from '../mq.ts';

const mode = process.argv[process.argv.indexOf('--mq') + 1] ?? 'fleet';
const hwm = Number(process.env.MQ_BENCH_HWM ?? 0) || undefined;
const mq = mode === 'default' ? undefined : createMq({ concurrency: 100, highWaterMark: hwm });
const broker = await Aedes.createBroker(mq ? { mq } : {});
let bp: ReturnType<typeof attachBackpressure> | undefined;
if (mq && mode === 'fleet')
  bp = attachBackpressure(broker as never, mq, { coalesceWrites: process.env.MQ_BENCH_COALESCE !== '0' });

const server = createServer({ noDelay: true }, broker.handle);
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof addr === 'object' && addr ? addr.port : 0 })}\n`);
});
process.on('message', (m) => {
  if (m === 'stats') process.send?.({ mq: mq?.stats, bp: bp?.stats });
});
process.on('SIGTERM', () => process.exit(0));
if (process.env.MQ_BENCH_DEBUG) {
  setInterval(() => {
    const m = process.memoryUsage();
    let maxW = 0;
    for (const c of Object.values(
      (broker as unknown as { clients: Record<string, { conn: { writableLength: number } }> }).clients,
    ))
      maxW = Math.max(maxW, c.conn.writableLength ?? 0);
    process.stderr.write(
      `rss ${(m.rss / 2 ** 20).toFixed(0)} heap ${(m.heapUsed / 2 ** 20).toFixed(0)}/${(m.heapTotal / 2 ** 20).toFixed(0)} ext ${(m.external / 2 ** 20).toFixed(0)} ab ${(m.arrayBuffers / 2 ** 20).toFixed(0)} pending ${mq?.pending} maxW ${maxW} bp ${JSON.stringify(bp?.stats)}\n`,
    );
  }, 250).unref();
}
