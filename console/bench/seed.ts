/**
 * Bulk test data for the console's benchmark and its query-plan tests: devices with one certificate each,
 * a share of them connected, some suspended or revoked (with their status changes), an audit entry each, written with set-based SQL (generate_series), not
 * through the issuing path: 100,000 devices take seconds, not the hours of signing and auditing each.
 * The rows are well-formed (serials, fingerprints and statuses pass the schema's checks); the DER is
 * placeholder bytes, which the registry never parses.
 */
import { sql } from 'drizzle-orm';
import type { Db } from '../../registry/db.ts';

export interface SeedOptions {
  /** Id prefix: devices are `<prefix>-000000` … (unique per seeding in one database). */
  prefix: string;
  count: number;
  products?: readonly string[];
  fleets?: readonly string[];
  stations?: readonly string[];
  /** One in `connectedEvery` is connected now (default 5: 20 %). */
  connectedEvery?: number;
  /** One in `suspendedEvery` is suspended, one in `revokedEvery` revoked (defaults 97 and 89). */
  suspendedEvery?: number;
  revokedEvery?: number;
  /** Rows per statement (default 20,000). */
  chunk?: number;
}

const list = (values: readonly string[]) =>
  sql`array[${sql.join(
    values.map((v) => sql`${v}`),
    sql`, `,
  )}]::text[]`;

/** Inserts the devices, their certificates and presence; returns the ids' first and last. */
export async function seedDevices(db: Db, o: SeedOptions): Promise<{ first: string; last: string }> {
  const products = o.products ?? ['thermo', 'meter', 'valve', 'camera'];
  const fleets = o.fleets ?? ['eu', 'us', 'apac'];
  const stations = o.stations ?? ['line-1', 'line-2', 'line-3'];
  const chunk = o.chunk ?? 20_000;
  const connectedEvery = o.connectedEvery ?? 5;
  const suspendedEvery = o.suspendedEvery ?? 97;
  const revokedEvery = o.revokedEvery ?? 89;
  const id = () => sql`${`${o.prefix}-`} || lpad(i::text, 6, '0')`;
  for (let start = 0; start < o.count; start += chunk) {
    const end = Math.min(o.count, start + chunk) - 1;
    await db.execute(sql`insert into devices (id, product, fleet, status, revocation_reason, revoked_at,
        status_changed_at, enrolled_by, created_at)
      select ${id()},
        (${list(products)})[1 + i % ${products.length}],
        (${list(fleets)})[1 + i % ${fleets.length}],
        case when i % ${revokedEvery} = 0 then 'revoked' when i % ${suspendedEvery} = 0 then 'suspended' else 'active' end,
        case when i % ${revokedEvery} = 0 then 'keyCompromise' end,
        case when i % ${revokedEvery} = 0 then now() - interval '1 day' end,
        case when i % ${revokedEvery} = 0 or i % ${suspendedEvery} = 0 then now() - interval '1 day' end,
        (${list(stations)})[1 + i % ${stations.length}],
        now() - ((${o.count} - i) * interval '1 second')
      from generate_series(${start}::int, ${end}::int) as i`);
    await db.execute(sql`insert into certificates (serial, subject_kind, subject_id, issuer_ca, der,
        fingerprint_sha256, spki_sha256, not_before, not_after, status, revocation_reason, revoked_at,
        created_at, enrolled_by)
      select md5(${o.prefix} || ':s:' || i), 'device', ${id()}, 'device', decode(md5(${o.prefix} || ':d:' || i), 'hex'),
        md5(${o.prefix} || ':f:' || i) || md5(${o.prefix} || ':F:' || i),
        md5(${o.prefix} || ':k:' || i) || md5(${o.prefix} || ':K:' || i),
        now() - interval '1 day',
        -- a few expire soon, for the 30/90-day counts
        case when i % 1000 = 0 then now() + ((i % 80) * interval '1 day') else now() + interval '7300 days' end,
        case when i % ${revokedEvery} = 0 then 'revoked' else 'active' end,
        case when i % ${revokedEvery} = 0 then 'keyCompromise' end,
        case when i % ${revokedEvery} = 0 then now() - interval '1 day' end,
        now() - ((${o.count} - i) * interval '1 second'),
        (${list(stations)})[1 + i % ${stations.length}]
      from generate_series(${start}::int, ${end}::int) as i`);
    await db.execute(sql`insert into presence (kind, id, connected, last_seen, remote_address, broker_node,
        connected_at, disconnected_at)
      select 'device', ${id()}, i % ${connectedEvery} = 0, now(),
        '10.' || (i / 65536 % 256) || '.' || (i / 256 % 256) || '.' || (i % 256), 'node-' || (i % 3),
        now() - ((i % 3600) * interval '1 second'),
        case when i % ${connectedEvery} = 0 then null else now() - ((i % 600) * interval '1 second') end
      from generate_series(${start}::int, ${end}::int) as i
      where i % 2 = 0 or i % ${connectedEvery} = 0`);
    // The status changes behind the suspended and revoked ones, and an enrollment audit entry for each.
    await db.execute(sql`insert into status_changes (kind, id, status, reason, actor, at)
      select 'device', ${id()},
        case when i % ${revokedEvery} = 0 then 'revoked' else 'suspended' end,
        case when i % ${revokedEvery} = 0 then 'keyCompromise' end,
        'operator:seed', now() - interval '2 days'
      from generate_series(${start}::int, ${end}::int) as i
      where i % ${revokedEvery} = 0 or i % ${suspendedEvery} = 0`);
    await db.execute(sql`insert into audit_log (at, actor, action, subject, outcome, details)
      select now() - ((${o.count} - i) * interval '1 second'),
        'station:' || (${list(stations)})[1 + i % ${stations.length}], 'device.enroll',
        'device:' || ${id()}, 'success', '{"seeded":true}'::jsonb
      from generate_series(${start}::int, ${end}::int) as i`);
  }
  const pad = (n: number) => `${o.prefix}-${String(n).padStart(6, '0')}`;
  return { first: pad(0), last: pad(o.count - 1) };
}
