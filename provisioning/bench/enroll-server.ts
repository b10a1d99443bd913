/**
 * The server side of `npm run bench:enroll`, in its own process: a throwaway CA, the registry on the
 * PostgreSQL database named by DATABASE_URL, the provisioning service on a loopback port, and BENCH_STATIONS
 * stations whose credentials it writes to BENCH_DIR. Prints one JSON line `{ "apiPort": … }` when ready and
 * runs until SIGTERM.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { createCa, DEFAULT_CA_CONFIG } from '../../pki/ca.ts';
import { FileKeyStore } from '../../pki/keystore.ts';
import { certToPem } from '../../pki/x509.ts';
import { openRegistry } from '../../registry/index.ts';
import { buildProvisioning } from '../index.ts';
import { Issuance } from '../issuance.ts';

const dir = process.env['BENCH_DIR']!;
const stations = Number(process.env['BENCH_STATIONS'] ?? 4);
const databaseUrl = process.env['DATABASE_URL']!;

const ca = await createCa(
  join(dir, 'ca'),
  new FileKeyStore(join(dir, 'keys'), 'bench-passphrase-0123456789abc'),
  {
    ...DEFAULT_CA_CONFIG,
    organization: 'Fleet Bench',
  },
);
const registry = await openRegistry({ databaseUrl, poolSize: 10 });
const prov = await buildProvisioning(
  {
    host: 'localhost',
    listenHost: '127.0.0.1',
    apiPort: 0,
    publicPort: 0,
    brokerUrl: 'mqtts://localhost:8883',
  },
  { ca, registry, logger: pino({ level: 'warn' }) },
);
const issuance = new Issuance(ca, registry);
for (let i = 0; i < stations; i++) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const r = await issuance.issuePrincipal(
    { kind: 'station', id: `bench-station-${i}`, products: ['bench'] },
    { spki: publicKey.export({ type: 'spki', format: 'der' }) },
    'system:bench',
  );
  await writeFile(join(dir, `station-${i}.crt.pem`), certToPem(r.der) + r.chain.map(certToPem).join(''));
  await writeFile(
    join(dir, `station-${i}.key.pem`),
    privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  );
}
await writeFile(join(dir, 'root.pem'), ca.rootPem);
const { apiPort } = await prov.listen();
process.stdout.write(`${JSON.stringify({ apiPort })}\n`);

process.once('SIGTERM', async () => {
  await prov.close();
  await registry.close();
  process.exit(0);
});
