-- Every status change is announced on channel fleet_status, from whichever connection or process wrote it.
-- NOTIFY inside the writing transaction is delivered on commit only, so listeners never see a change that
-- rolled back. Payload: {"seq":…,"kind":…,"id":…,"serial":…|null,"status":…} (well under the 8000-byte limit).
CREATE FUNCTION fleet_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('fleet_status', json_build_object(
    'seq', NEW.seq, 'kind', NEW.kind, 'id', NEW.id, 'serial', NEW.serial, 'status', NEW.status
  )::text);
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER status_changes_notify AFTER INSERT ON status_changes
  FOR EACH ROW EXECUTE FUNCTION fleet_status_notify();
