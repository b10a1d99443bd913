/** The overview's figures, for the page and its live refresh (overview.json). */
import { X509Certificate } from 'node:crypto';
import type { CertificateAuthority } from '../pki/ca.ts';
import type { CrlPublisher } from '../provisioning/crl.ts';
import {
  connectedCount,
  type DeviceCounts,
  dbOf,
  deviceCounts,
  expiringCount,
  revocationsSince,
} from '../registry/console.ts';
import type { Registry } from '../registry/index.ts';
import type { BrokerMetricsReader, BrokerRates } from './broker-metrics.ts';

/** The issuing CAs, each with its CRL (as provisioning/crl.ts publishes them). */
const ISSUING_CAS = ['device', 'infrastructure'] as const;

export interface Overview {
  at: string;
  devices: DeviceCounts;
  connected: number;
  revokedToday: number;
  expiring30: number;
  expiring90: number;
  crls: { ca: string; crlNumber: string; thisUpdate: string; nextUpdate: string; ageSeconds: number }[];
  cas: { name: string; notAfter: string; daysLeft: number }[];
  broker: BrokerRates;
}

export interface OverviewDeps {
  registry: Registry;
  ca: CertificateAuthority;
  crl: CrlPublisher;
  broker: BrokerMetricsReader;
}

/** Every figure from an index or a counter: a constant number of small queries. */
export async function overview(d: OverviewDeps): Promise<Overview> {
  const db = dbOf(d.registry);
  const now = new Date();
  const midnight = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  const [devices, connected, revoked, expiring30, expiring90, ...crls] = await Promise.all([
    deviceCounts(db),
    connectedCount(db),
    revocationsSince(db, midnight),
    expiringCount(db, 30),
    expiringCount(db, 90),
    ...ISSUING_CAS.map((c) => d.crl.get(c)),
  ]);
  const caCert = (name: string, der: Buffer) => {
    const notAfter = new Date(new X509Certificate(der).validTo);
    return {
      name,
      notAfter: notAfter.toISOString(),
      daysLeft: Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000),
    };
  };
  return {
    at: now.toISOString(),
    devices,
    connected,
    revokedToday: revoked.device,
    expiring30,
    expiring90,
    crls: crls.map((c, i) => ({
      ca: ISSUING_CAS[i]!,
      crlNumber: c.crlNumber.toString(),
      thisUpdate: c.thisUpdate.toISOString(),
      nextUpdate: c.nextUpdate.toISOString(),
      ageSeconds: Math.max(0, Math.round((now.getTime() - c.thisUpdate.getTime()) / 1000)),
    })),
    cas: [
      caCert('root', d.ca.root),
      caCert('device', d.ca.issuers.device.certificate),
      caCert('infrastructure', d.ca.issuers.infrastructure.certificate),
    ],
    broker: d.broker.rates(),
  };
}
