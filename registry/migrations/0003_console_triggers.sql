-- What the console reads without counting whole tables, kept by statement-level triggers (one statement
-- per written statement, whatever its row count: a batch enrollment or a presence flush of 500 rows adds
-- one counter upsert, not 500).
--
--   counters: devices.<status> and presence.<kind>.connected. A writer adds to the shard of its backend
--   (pg_backend_pid() % 16), so concurrent transactions rarely wait on one counter row; a counter is the
--   sum of its shards.
--   presence_history: one row per connection the broker recorded in `presence` (any node), closed by the
--   disconnect that followed it.
--
-- The triggers are created before the backfill, in this migration's one transaction: CREATE TRIGGER locks
-- each table against writes until commit, so no row is counted twice or missed.
CREATE FUNCTION fleet_devices_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'devices.' || status, pg_backend_pid() % 16, count(*) FROM new_rows GROUP BY status
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'devices.' || s, pg_backend_pid() % 16, sum(d) FROM (
        SELECT status AS s, 1 AS d FROM new_rows UNION ALL SELECT status, -1 FROM old_rows
      ) x GROUP BY s HAVING sum(d) <> 0
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'devices.' || status, pg_backend_pid() % 16, -count(*) FROM old_rows GROUP BY status
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
  ELSE -- TRUNCATE
    DELETE FROM counters WHERE key LIKE 'devices.%';
  END IF;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER devices_count_insert AFTER INSERT ON devices REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_devices_count();
--> statement-breakpoint
CREATE TRIGGER devices_count_update AFTER UPDATE ON devices REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_devices_count();
--> statement-breakpoint
CREATE TRIGGER devices_count_delete AFTER DELETE ON devices REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_devices_count();
--> statement-breakpoint
CREATE TRIGGER devices_count_truncate AFTER TRUNCATE ON devices
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_devices_count();
--> statement-breakpoint
CREATE FUNCTION fleet_presence_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'presence.' || kind || '.connected', pg_backend_pid() % 16, count(*)
      FROM new_rows WHERE connected GROUP BY kind
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
    INSERT INTO presence_history (kind, id, broker_node, remote_address, connected_at, disconnected_at)
      SELECT kind, id, broker_node, remote_address, connected_at,
             CASE WHEN connected THEN NULL ELSE disconnected_at END
      FROM new_rows WHERE connected_at IS NOT NULL;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'presence.' || k || '.connected', pg_backend_pid() % 16, sum(d) FROM (
        SELECT kind AS k, 1 AS d FROM new_rows WHERE connected
        UNION ALL SELECT kind, -1 FROM old_rows WHERE connected
      ) x GROUP BY k HAVING sum(d) <> 0
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
    -- Neither statement joins new_rows with old_rows: the transition tables have no index, and a join of
    -- two 500-row batches cost more than the flush itself. Both read the new state alone, with a
    -- primary-key or index lookup per row, and are idempotent.
    -- A connect not in the history yet starts a session (a scalar sub-select stays a per-row index
    -- lookup; NOT EXISTS could be planned as a hashed anti-join over the whole history).
    INSERT INTO presence_history (kind, id, broker_node, remote_address, connected_at, disconnected_at)
      SELECT n.kind, n.id, n.broker_node, n.remote_address, n.connected_at,
             CASE WHEN n.connected THEN NULL ELSE n.disconnected_at END
      FROM new_rows n
      WHERE n.connected_at IS NOT NULL
        AND (SELECT h.seq FROM presence_history h
             WHERE h.kind = n.kind AND h.id = n.id AND h.connected_at = n.connected_at LIMIT 1) IS NULL;
    -- A disconnect ends the open sessions that began before it: all of them when the subject is offline
    -- now, else only those older than the current connection (the node it left, after it moved).
    UPDATE presence_history h SET disconnected_at = n.disconnected_at
      FROM new_rows n
      WHERE h.kind = n.kind AND h.id = n.id AND h.disconnected_at IS NULL
        AND n.disconnected_at IS NOT NULL AND h.connected_at <= n.disconnected_at
        AND (NOT n.connected OR h.connected_at < n.connected_at);
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO counters (key, shard, n)
      SELECT 'presence.' || kind || '.connected', pg_backend_pid() % 16, -count(*)
      FROM old_rows WHERE connected GROUP BY kind
    ON CONFLICT (key, shard) DO UPDATE SET n = counters.n + excluded.n;
  ELSE -- TRUNCATE
    DELETE FROM counters WHERE key LIKE 'presence.%';
  END IF;
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER presence_track_insert AFTER INSERT ON presence REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_presence_track();
--> statement-breakpoint
CREATE TRIGGER presence_track_update AFTER UPDATE ON presence REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_presence_track();
--> statement-breakpoint
CREATE TRIGGER presence_track_delete AFTER DELETE ON presence REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_presence_track();
--> statement-breakpoint
CREATE TRIGGER presence_track_truncate AFTER TRUNCATE ON presence
  FOR EACH STATEMENT EXECUTE FUNCTION fleet_presence_track();
--> statement-breakpoint
INSERT INTO counters (key, shard, n)
  SELECT 'devices.' || status, 0, count(*) FROM devices GROUP BY status;
--> statement-breakpoint
INSERT INTO counters (key, shard, n)
  SELECT 'presence.' || kind || '.connected', 0, count(*) FROM presence WHERE connected GROUP BY kind;
--> statement-breakpoint
INSERT INTO presence_history (kind, id, broker_node, remote_address, connected_at, disconnected_at)
  SELECT kind, id, broker_node, remote_address, connected_at,
         CASE WHEN connected THEN NULL ELSE disconnected_at END
  FROM presence WHERE connected_at IS NOT NULL;
