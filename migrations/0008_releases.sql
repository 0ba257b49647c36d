CREATE TABLE "agent_slots" (
	"agent" text PRIMARY KEY NOT NULL,
	"active" text NOT NULL,
	"release" text,
	"standby" text,
	"canary" jsonb,
	"containers" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"version" integer DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "releases" (
	"id" text PRIMARY KEY NOT NULL,
	"profile" text NOT NULL,
	"number" integer NOT NULL,
	"status" text NOT NULL,
	"image_ref" text NOT NULL,
	"image_digest" text NOT NULL,
	"agent_program" text NOT NULL,
	"agent_version" text,
	"manifest_hash" text NOT NULL,
	"manifest" jsonb NOT NULL,
	"runtime" text NOT NULL,
	"spec_hash" text NOT NULL,
	"spec" jsonb NOT NULL,
	"slot" text NOT NULL,
	"rollback_target" text,
	"created_by" text NOT NULL,
	"reason" text,
	"outcome" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "releases_profile_number" ON "releases" USING btree ("profile","number");--> statement-breakpoint
CREATE INDEX "releases_profile_status" ON "releases" USING btree ("profile","status");