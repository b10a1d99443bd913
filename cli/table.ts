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
  init: {
    summary: 'create the CA hierarchy, the registry and the local operator credential (idempotent)',
    load: () => import('./commands/init.ts'),
  },
  device: {
    summary: 'device issue|list|show|revoke|suspend|reinstate|reset',
    load: () => import('./commands/device.ts'),
  },
  crl: {
    summary: 'crl [--ca device|infrastructure] [--out FILE(.pem|.der|.crl)]: the current CRL',
    load: () => import('./commands/crl.ts'),
  },
  up: {
    summary: 'run the whole system (what `npm start` runs)',
    load: () => import('./commands/up.ts'),
  },
  broker: {
    summary: 'run the MQTT broker alone',
    load: () => import('./commands/broker.ts'),
  },
  sim: { summary: 'simulated devices load test', load: () => import('./commands/sim.ts') },
  provisioning: {
    summary:
      'provisioning: run the provisioning service (mTLS API on FLEET_API_PORT, CRL/OCSP on FLEET_PUBLIC_PORT)',
    load: () => import('./commands/provisioning.ts'),
  },
  station: {
    summary:
      'station create|issue|scope|list|show|revoke|suspend|reinstate (revoke --cascade-from T: its devices too)',
    load: () => import('./commands/station.ts'),
  },
  service: {
    summary: 'service create|issue|list|show|revoke|suspend|reinstate',
    load: () => import('./commands/service.ts'),
  },
  operator: {
    summary: 'operator create|issue|list|show|revoke|suspend|reinstate',
    load: () => import('./commands/operator.ts'),
  },
  audit: {
    summary:
      'audit [--actor K:ID] [--subject K:ID] [--action A] [--from T] [--to T] [--limit N]: the audit log',
    load: () => import('./commands/audit.ts'),
  },
  console: {
    summary:
      'console [sessions | revoke-sessions [--operator ID]]: a one-time sign-in link for the browser console',
    load: () => import('./commands/console.ts'),
  },
  expiring: {
    summary: 'expiring [--days 30] [--limit N]: active certificates that expire soon (exit 3 when any)',
    load: () => import('./commands/expiring.ts'),
  },
};

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(14)} ${c.summary}`);
  return `usage: fleet <command> [--data DIR] [--json]\n\ncommands:\n${lines.join('\n')}\n`;
}
