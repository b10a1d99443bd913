/**
 * The data directory's layout (FLEET_DATA_DIR, default ./data), in one place: every part that reads or
 * writes under it takes the path from here.
 */
import { join } from 'node:path';

export const paths = (dataDir: string) => ({
  ca: join(dataDir, 'ca'),
  caKeys: join(dataDir, 'ca', 'keys'),
  secrets: join(dataDir, 'secrets'),
  passphrase: join(dataDir, 'secrets', 'ca-passphrase'),
  operator: join(dataDir, 'operator'),
  broker: join(dataDir, 'broker'),
  crl: join(dataDir, 'crl'),
});

/** Where the embedded default keeps its generated TLS ticket keys. */
export const ticketKeysPath = (dataDir: string) => join(paths(dataDir).secrets, 'tls-ticket-keys');
