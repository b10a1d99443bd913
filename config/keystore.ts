/**
 * The CA key store this configuration chooses, and its passphrase. The embedded default keeps a generated
 * CA passphrase in data/secrets/ (0600); production supplies its own through FLEET_CA_PASSPHRASE or
 * FLEET_CA_PASSPHRASE_FILE. Today the only key store is the encrypted-file one (pki/keystore.ts).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { PkiError } from '../pki/errors.ts';
import { FileKeyStore } from '../pki/keystore.ts';
import { ConfigError } from './errors.ts';
import type { FleetConfig } from './load.ts';
import { paths } from './paths.ts';

export interface PassphraseResult {
  passphrase: string;
  /** Where it came from; 'generated' means this call created data/secrets/ca-passphrase. */
  source: 'env' | 'file' | 'data-dir' | 'generated';
}

/** Finds the CA passphrase; with `generate`, creates one in the data dir when none is supplied. */
export async function caPassphrase(config: FleetConfig, generate = false): Promise<PassphraseResult> {
  if (config.caPassphrase) return { passphrase: config.caPassphrase, source: 'env' };
  if (config.caPassphraseFile) {
    try {
      return { passphrase: (await readFile(config.caPassphraseFile, 'utf8')).trim(), source: 'file' };
    } catch (cause) {
      throw new ConfigError(
        `FLEET_CA_PASSPHRASE_FILE ${config.caPassphraseFile} cannot be read`,
        undefined,
        cause,
      );
    }
  }
  const p = paths(config.dataDir);
  try {
    return { passphrase: (await readFile(p.passphrase, 'utf8')).trim(), source: 'data-dir' };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (!generate) {
    throw new PkiError(
      'CA_MISSING',
      `no CA passphrase: set FLEET_CA_PASSPHRASE(_FILE) or run \`fleet init\` (data: ${config.dataDir})`,
    );
  }
  await mkdir(p.secrets, { recursive: true, mode: 0o700 });
  const passphrase = randomBytes(32).toString('base64url');
  await writeFile(p.passphrase, `${passphrase}\n`, { mode: 0o600, flag: 'wx' });
  await chmod(p.passphrase, 0o600);
  return { passphrase, source: 'generated' };
}

export async function keyStoreFor(config: FleetConfig, generate = false) {
  const pass = await caPassphrase(config, generate);
  return {
    keys: new FileKeyStore(paths(config.dataDir).caKeys, pass.passphrase),
    passphraseSource: pass.source,
  };
}
