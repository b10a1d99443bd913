/**
 * The data directory's layout (FLEET_DATA_DIR, default ./data), in one place: every part that reads or
 * writes under it takes the path from here.
 */
import { join } from 'node:path';

/** The local operator identity `fleet init` creates; the audit log names it as the actor. */
export const LOCAL_OPERATOR = 'admin';

export const paths = (dataDir: string) => ({
  ca: join(dataDir, 'ca'),
  caKeys: join(dataDir, 'ca', 'keys'),
  /** The fleet root certificate (what devices and clients trust). */
  rootCert: join(dataDir, 'ca', 'root.crt.pem'),
  secrets: join(dataDir, 'secrets'),
  passphrase: join(dataDir, 'secrets', 'ca-passphrase'),
  operator: join(dataDir, 'operator'),
  /** The local operator's credential (`fleet init`), which the CLI's operator commands use. */
  operatorCert: join(dataDir, 'operator', `${LOCAL_OPERATOR}.crt.pem`),
  operatorKey: join(dataDir, 'operator', `${LOCAL_OPERATOR}.key.pem`),
  broker: join(dataDir, 'broker'),
  crl: join(dataDir, 'crl'),
});

/** Where the embedded default keeps its generated TLS ticket keys. */
export const ticketKeysPath = (dataDir: string) => join(paths(dataDir).secrets, 'tls-ticket-keys');
