/**
 * The data directory's bootstrap (`fleet init`, and the first thing `fleet up` and `fleet broker` do):
 * the CA hierarchy, the registry and the local operator credential. Idempotent.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { caConfigFrom, type FleetConfig, keyStoreFor, LOCAL_OPERATOR, paths } from '../config/index.ts';
import { caExists, openCa } from '../pki/ca.ts';
import { isFleetError } from '../pki/errors.ts';
import { exists } from '../pki/files.ts';
import { certToPem } from '../pki/x509.ts';
import { Issuance } from '../provisioning/issuance.ts';
import type { Registry } from '../registry/index.ts';
import { withRegistry } from './open.ts';

export interface InitResult {
  dataDir: string;
  created: string[];
  ca: { dir: string; root: string; passphraseSource: string };
  registry: string;
  operator: { cert: string; key: string };
}

/** Creates (or finds) the CA, the registry and the local operator credential. Idempotent. */
export async function initDataDir(config: FleetConfig): Promise<InitResult> {
  const p = paths(config.dataDir);
  await mkdir(config.dataDir, { recursive: true });
  const created: string[] = [];
  const hadCa = await caExists(p.ca);
  // A passphrase is generated only for a brand-new CA: an existing one must be opened with its own.
  const { keys, passphraseSource } = await keyStoreFor(config, !hadCa);
  if (passphraseSource === 'generated') created.push(p.passphrase);
  const { ca, created: caCreated } = await openCa(p.ca, keys, caConfigFrom(config));
  if (caCreated) created.push(p.ca);
  const opCert = p.operatorCert;
  const opKey = p.operatorKey;
  const issueOperator = async (registry: Registry) => {
    if (!(await exists(opCert))) {
      // The operator key is made here and never leaves the data dir (0600), like an SSH identity.
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
      const issued = await new Issuance(ca, registry).issuePrincipal(
        { kind: 'operator', id: LOCAL_OPERATOR },
        { spki: publicKey.export({ type: 'spki', format: 'der' }) },
        'system:init',
      );
      await mkdir(p.operator, { recursive: true, mode: 0o700 });
      await writeFile(opKey, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      await writeFile(opCert, certToPem(issued.der) + issued.chain.map(certToPem).join(''), { mode: 0o644 });
      created.push(opCert);
    }
  };
  let inUseBy: number | undefined;
  try {
    await withRegistry(config, issueOperator);
  } catch (e) {
    // `fleet init` while `fleet up` runs on this data dir: nothing left to do in the registry, so it is
    // initialised; say so rather than refuse. (With something to do, REGISTRY_LOCKED stands.)
    if (!isFleetError(e, 'REGISTRY_LOCKED') || !(await exists(opCert))) throw e;
    inUseBy = (e.details as { pid?: number } | undefined)?.pid;
  }
  return {
    dataDir: config.dataDir,
    created,
    ca: { dir: p.ca, root: p.rootCert, passphraseSource },
    registry: config.databaseUrl
      ? 'postgresql (DATABASE_URL)'
      : `${join(config.dataDir, 'registry')}${inUseBy ? ` (in use by process ${inUseBy}: a running fleet)` : ''}`,
    operator: { cert: opCert, key: opKey },
  };
}
