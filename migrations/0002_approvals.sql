CREATE TABLE "approvals" (
	"id" text PRIMARY KEY NOT NULL,
	"profile" text NOT NULL,
	"session_key" text NOT NULL,
	"event_id" text,
	"tool" text NOT NULL,
	"args_hash" text NOT NULL,
	"approvers" jsonb NOT NULL,
	"status" text NOT NULL,
	"answered_by" text,
	"requested_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"settled_at" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "approvals_status_idx" ON "approvals" USING btree ("status","requested_at");