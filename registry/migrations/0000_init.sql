CREATE TABLE "audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor" text NOT NULL,
	"action" text NOT NULL,
	"subject" text,
	"outcome" text NOT NULL,
	"details" jsonb,
	CONSTRAINT "audit_outcome_check" CHECK ("audit_log"."outcome" in ('success', 'failure', 'denied'))
);
--> statement-breakpoint
CREATE TABLE "certificates" (
	"serial" text PRIMARY KEY NOT NULL,
	"subject_kind" text NOT NULL,
	"subject_id" text NOT NULL,
	"issuer_ca" text NOT NULL,
	"der" "bytea" NOT NULL,
	"fingerprint_sha256" text NOT NULL,
	"spki_sha256" text NOT NULL,
	"not_before" timestamp with time zone NOT NULL,
	"not_after" timestamp with time zone NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"revocation_reason" text,
	"revoked_at" timestamp with time zone,
	"superseded_by" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"enrolled_by" text,
	CONSTRAINT "certificates_serial_check" CHECK ("certificates"."serial" ~ '^[0-9a-f]{1,40}$'),
	CONSTRAINT "certificates_fingerprint_check" CHECK ("certificates"."fingerprint_sha256" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "certificates_spki_check" CHECK ("certificates"."spki_sha256" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "certificates_subject_kind_check" CHECK ("certificates"."subject_kind" in ('device', 'service', 'station', 'operator')),
	CONSTRAINT "certificates_status_check" CHECK ("certificates"."status" in ('active', 'superseded', 'revoked')),
	CONSTRAINT "certificates_revocation_reason_check" CHECK ("certificates"."revocation_reason" is null or "certificates"."revocation_reason" in ('unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'certificateHold', 'removeFromCRL', 'privilegeWithdrawn', 'aACompromise'))
);
--> statement-breakpoint
CREATE TABLE "devices" (
	"id" text PRIMARY KEY NOT NULL,
	"product" text NOT NULL,
	"fleet" text NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"revocation_reason" text,
	"revoked_at" timestamp with time zone,
	"status_changed_at" timestamp with time zone,
	"enrolled_by" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"reenroll_allowed" boolean DEFAULT false NOT NULL,
	CONSTRAINT "devices_status_check" CHECK ("devices"."status" in ('active', 'suspended', 'revoked')),
	CONSTRAINT "devices_revocation_reason_check" CHECK ("devices"."revocation_reason" is null or "devices"."revocation_reason" in ('unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'certificateHold', 'removeFromCRL', 'privilegeWithdrawn', 'aACompromise'))
);
--> statement-breakpoint
CREATE TABLE "presence" (
	"kind" text NOT NULL,
	"id" text NOT NULL,
	"connected" boolean NOT NULL,
	"last_seen" timestamp with time zone NOT NULL,
	"remote_address" text,
	"broker_node" text,
	"connected_at" timestamp with time zone,
	"disconnected_at" timestamp with time zone,
	CONSTRAINT "presence_kind_id_pk" PRIMARY KEY("kind","id"),
	CONSTRAINT "presence_kind_check" CHECK ("presence"."kind" in ('device', 'service', 'station', 'operator'))
);
--> statement-breakpoint
CREATE TABLE "principals" (
	"kind" text NOT NULL,
	"id" text NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"revocation_reason" text,
	"revoked_at" timestamp with time zone,
	"status_changed_at" timestamp with time zone,
	"products" text[],
	"hourly_quota" integer,
	"role" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "principals_kind_id_pk" PRIMARY KEY("kind","id"),
	CONSTRAINT "principals_kind_check" CHECK ("principals"."kind" in ('service', 'station', 'operator')),
	CONSTRAINT "principals_status_check" CHECK ("principals"."status" in ('active', 'suspended', 'revoked')),
	CONSTRAINT "principals_revocation_reason_check" CHECK ("principals"."revocation_reason" is null or "principals"."revocation_reason" in ('unspecified', 'keyCompromise', 'cACompromise', 'affiliationChanged', 'superseded', 'cessationOfOperation', 'certificateHold', 'removeFromCRL', 'privilegeWithdrawn', 'aACompromise')),
	CONSTRAINT "principals_quota_check" CHECK ("principals"."hourly_quota" is null or "principals"."hourly_quota" >= 0)
);
--> statement-breakpoint
CREATE TABLE "status_changes" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"id" text NOT NULL,
	"serial" text,
	"status" text NOT NULL,
	"reason" text,
	"actor" text NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "status_changes_status_check" CHECK ("status_changes"."status" in ('active', 'suspended', 'revoked', 'superseded'))
);
--> statement-breakpoint
CREATE INDEX "audit_actor_idx" ON "audit_log" USING btree ("actor","id");--> statement-breakpoint
CREATE INDEX "audit_subject_idx" ON "audit_log" USING btree ("subject","id");--> statement-breakpoint
CREATE INDEX "audit_action_idx" ON "audit_log" USING btree ("action","id");--> statement-breakpoint
CREATE INDEX "audit_at_idx" ON "audit_log" USING btree ("at");--> statement-breakpoint
CREATE UNIQUE INDEX "certificates_fingerprint_idx" ON "certificates" USING btree ("fingerprint_sha256");--> statement-breakpoint
CREATE INDEX "certificates_subject_idx" ON "certificates" USING btree ("subject_kind","subject_id","spki_sha256");--> statement-breakpoint
CREATE INDEX "certificates_enrolled_by_created_idx" ON "certificates" USING btree ("enrolled_by","created_at");--> statement-breakpoint
CREATE INDEX "certificates_not_after_idx" ON "certificates" USING btree ("not_after");--> statement-breakpoint
CREATE INDEX "certificates_revoked_idx" ON "certificates" USING btree ("issuer_ca") WHERE "certificates"."status" = 'revoked';--> statement-breakpoint
CREATE INDEX "devices_enrolled_by_created_idx" ON "devices" USING btree ("enrolled_by","created_at");--> statement-breakpoint
CREATE INDEX "devices_product_idx" ON "devices" USING btree ("product");--> statement-breakpoint
CREATE INDEX "devices_created_idx" ON "devices" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "devices_not_active_idx" ON "devices" USING btree ("status") WHERE "devices"."status" <> 'active';--> statement-breakpoint
CREATE INDEX "principals_not_active_idx" ON "principals" USING btree ("status") WHERE "principals"."status" <> 'active';--> statement-breakpoint
CREATE INDEX "status_changes_subject_idx" ON "status_changes" USING btree ("kind","id");