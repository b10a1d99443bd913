ALTER TABLE "audit_log" ADD COLUMN "count" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_log" ADD COLUMN "last_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "audit_log" ADD COLUMN "agg_key" text;--> statement-breakpoint
ALTER TABLE "certificates" ADD COLUMN "grace_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "status_changes" ADD COLUMN "grace_until" timestamp with time zone;--> statement-breakpoint
CREATE UNIQUE INDEX "audit_agg_key_idx" ON "audit_log" USING btree ("agg_key") WHERE "audit_log"."agg_key" is not null;--> statement-breakpoint
CREATE INDEX "certificates_grace_idx" ON "certificates" USING btree ("grace_until") WHERE "certificates"."status" = 'superseded';--> statement-breakpoint
ALTER TABLE "audit_log" ADD CONSTRAINT "audit_count_check" CHECK ("audit_log"."count" >= 1);--> statement-breakpoint
-- Certificates superseded before the rotation rule existed have no deadline: they get the default grace
-- from now (24 hours), so an upgrade locks out no device that has not connected with its new certificate yet.
UPDATE "certificates" SET "grace_until" = now() + interval '24 hours'
  WHERE "status" = 'superseded' AND "grace_until" IS NULL;
--> statement-breakpoint
-- The feed now carries a superseded certificate's deadline, so every broker node refuses it when the grace
-- ends, whether or not the sweep has run yet, and a revocation's reason (superseded: retired by rotation).
-- Payload: {"seq","kind","id","serial","status","reason","grace_until"}.
CREATE OR REPLACE FUNCTION fleet_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('fleet_status', json_build_object(
    'seq', NEW.seq, 'kind', NEW.kind, 'id', NEW.id, 'serial', NEW.serial, 'status', NEW.status,
    'reason', NEW.reason, 'grace_until', NEW.grace_until
  )::text);
  RETURN NULL;
END;
$$;
