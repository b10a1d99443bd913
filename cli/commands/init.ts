/** `fleet init`: create the CA hierarchy, the registry and the local operator credential (idempotent). */
import { initDataDir } from '../../runtime/index.ts';
import { simple } from '../command.ts';
import { print } from '../output.ts';

export const command = simple(
  {
    name: 'init',
    summary: 'create the CA hierarchy, the registry and the local operator credential (idempotent)',
    description:
      'Creates under DATA: ca/ (root, device CA, infrastructure CA; keys encrypted), secrets/ (a generated\n' +
      'CA passphrase unless FLEET_CA_PASSPHRASE_FILE is set), registry/ (PGlite, unless DATABASE_URL) and\n' +
      'operator/ (the credential the CLI uses). It never overwrites a CA; `fleet up` runs it too.',
    examples: ['fleet init', 'FLEET_CA_PASSPHRASE_FILE=/run/secrets/ca fleet init --data /var/lib/fleet'],
  },
  async (ctx) => {
    const r = await initDataDir(ctx.config);
    const lines = [
      r.created.length
        ? `fleet: initialised ${r.dataDir}`
        : `fleet: ${r.dataDir} is already initialised; nothing changed`,
      ...r.created.map((c) => `  created ${c}`),
      `  root CA:   ${r.ca.root}  (embed this in device firmware)`,
      `  registry:  ${r.registry}`,
      `  operator:  ${r.operator.cert}`,
    ];
    if (r.ca.passphraseSource === 'generated') {
      lines.push(
        '',
        'WARNING: the CA key passphrase was generated into data/secrets/ca-passphrase for this embedded setup.',
        '         In production supply your own with FLEET_CA_PASSPHRASE_FILE and keep the root key offline.',
      );
    }
    print(ctx, r, lines.join('\n'));
    return 0;
  },
);
