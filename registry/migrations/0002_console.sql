CREATE TABLE "console_links" (
	"token_sha256" text PRIMARY KEY NOT NULL,
	"operator" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"used_at" timestamp with time zone,
	CONSTRAINT "console_links_token_check" CHECK ("console_links"."token_sha256" ~ '^[0-9a-f]{64}$')
);
--> statement-breakpoint
CREATE TABLE "console_sessions" (
	"id_sha256" text PRIMARY KEY NOT NULL,
	"operator" text NOT NULL,
	"csrf" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"last_seen_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	"revoked_by" text,
	"address" text,
	"user_agent" text,
	CONSTRAINT "console_sessions_id_check" CHECK ("console_sessions"."id_sha256" ~ '^[0-9a-f]{64}$')
);
--> statement-breakpoint
CREATE TABLE "counters" (
	"key" text NOT NULL,
	"shard" integer NOT NULL,
	"n" bigint NOT NULL,
	CONSTRAINT "counters_key_shard_pk" PRIMARY KEY("key","shard")
);
--> statement-breakpoint
CREATE TABLE "presence_history" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"id" text NOT NULL,
	"broker_node" text,
	"remote_address" text,
	"connected_at" timestamp with time zone NOT NULL,
	"disconnected_at" timestamp with time zone,
	CONSTRAINT "presence_history_kind_check" CHECK ("presence_history"."kind" in ('device', 'service', 'station', 'operator'))
);
--> statement-breakpoint
DROP INDEX "certificates_not_after_idx";--> statement-breakpoint
DROP INDEX "devices_product_idx";--> statement-breakpoint
DROP INDEX "devices_not_active_idx";--> statement-breakpoint
CREATE INDEX "console_links_expires_idx" ON "console_links" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "console_sessions_operator_idx" ON "console_sessions" USING btree ("operator","created_at");--> statement-breakpoint
CREATE INDEX "console_sessions_expires_idx" ON "console_sessions" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "presence_history_subject_idx" ON "presence_history" USING btree ("kind","id","connected_at");--> statement-breakpoint
CREATE INDEX "presence_history_connected_at_idx" ON "presence_history" USING btree ("connected_at");--> statement-breakpoint
CREATE INDEX "certificates_active_not_after_idx" ON "certificates" USING btree ("not_after") WHERE "certificates"."status" = 'active';--> statement-breakpoint
CREATE INDEX "devices_id_c_idx" ON "devices" USING btree ("id" collate "C");--> statement-breakpoint
CREATE INDEX "devices_product_id_idx" ON "devices" USING btree ("product","id" collate "C");--> statement-breakpoint
CREATE INDEX "devices_fleet_id_idx" ON "devices" USING btree ("fleet","id" collate "C");--> statement-breakpoint
CREATE INDEX "devices_station_id_idx" ON "devices" USING btree ("enrolled_by","id" collate "C");--> statement-breakpoint
CREATE INDEX "presence_connected_idx" ON "presence" USING btree ("id" collate "C") WHERE "presence"."kind" = 'device' and "presence"."connected";--> statement-breakpoint
CREATE INDEX "status_changes_revoked_at_idx" ON "status_changes" USING btree ("at") WHERE "status_changes"."status" = 'revoked';--> statement-breakpoint
CREATE INDEX "devices_not_active_idx" ON "devices" USING btree ("status","id" collate "C") WHERE "devices"."status" <> 'active';