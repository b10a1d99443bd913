/**
 * The `fleet` commands: name, one-line summary for the usage text, and the module that runs it (one file
 * per command under cli/commands/), loaded only when that command runs.
 */
import type { Command } from './command.ts';

export interface CommandEntry {
  summary: string;
  load(): Promise<{ command: Command }>;
}

export const COMMANDS: Record<string, CommandEntry> = {
  up: {
    summary: 'run the whole system: provisioning and the broker (what `npm start` runs)',
    load: () => import('./commands/up.ts'),
  },
  init: {
    summary: 'create the CA hierarchy, the registry and the local operator credential (idempotent)',
    load: () => import('./commands/init.ts'),
  },
  device: {
    summary: 'devices: issue|list|show|revoke|suspend|reinstate|reset',
    load: () => import('./commands/device.ts'),
  },
  station: {
    summary: 'factory stations: create|issue|scope|list|show|revoke|suspend|reinstate',
    load: () => import('./commands/station.ts'),
  },
  service: {
    summary: 'backend services (MQTT clients): create|issue|list|show|revoke|suspend|reinstate',
    load: () => import('./commands/service.ts'),
  },
  operator: {
    summary: 'operators (API clients): create|issue|list|show|revoke|suspend|reinstate',
    load: () => import('./commands/operator.ts'),
  },
  console: {
    summary: 'a one-time sign-in link to the browser console; its sessions (sessions, revoke-sessions)',
    load: () => import('./commands/console.ts'),
  },
  audit: {
    summary: 'the audit log: who did what, refused or not',
    load: () => import('./commands/audit.ts'),
  },
  expiring: {
    summary: 'active certificates that expire soon (exit 3 when any: alert on it)',
    load: () => import('./commands/expiring.ts'),
  },
  crl: {
    summary: 'the current CRL of the device or infrastructure CA',
    load: () => import('./commands/crl.ts'),
  },
  sim: {
    summary: 'the device simulator: load test a broker with real certificates',
    load: () => import('./commands/sim.ts'),
  },
  broker: {
    summary: 'run the MQTT broker alone',
    load: () => import('./commands/broker.ts'),
  },
  provisioning: {
    summary: 'run the provisioning service alone (API, EST, CRL and OCSP)',
    load: () => import('./commands/provisioning.ts'),
  },
};

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(14)} ${c.summary}`);
  return [
    'usage: fleet <command> [arguments] [flags]',
    '',
    'commands',
    ...lines,
    '',
    'every command takes',
    '  --data DIR     the data directory (default ./data, or FLEET_DATA_DIR)',
    '  --json         answer in JSON on stdout (errors too)',
    '  -h, --help     its help: every flag, with an example (`fleet device issue --help`)',
    '',
    'exit codes: 0 ok, 1 refused (a typed error code on stderr), 2 bad command line, 3 `expiring` found some,',
    '70 internal error',
    '',
  ].join('\n');
}
