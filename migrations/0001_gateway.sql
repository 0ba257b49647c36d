CREATE TABLE "audit" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"profile" text,
	"action" text NOT NULL,
	"decision" text NOT NULL,
	"reason" text,
	"subject" text,
	"data" jsonb,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "events" (
	"id" text PRIMARY KEY NOT NULL,
	"seq" bigserial NOT NULL,
	"platform" text NOT NULL,
	"profile" text,
	"conversation" text NOT NULL,
	"status" text NOT NULL,
	"payload" jsonb NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"error" text,
	"reply" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "sessions" (
	"profile" text NOT NULL,
	"conversation" text NOT NULL,
	"session_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "sessions_profile_conversation_pk" PRIMARY KEY("profile","conversation")
);
--> statement-breakpoint
CREATE TABLE "tool_pins" (
	"profile" text NOT NULL,
	"tool" text NOT NULL,
	"hash" text NOT NULL,
	"pinned_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tool_pins_profile_tool_pk" PRIMARY KEY("profile","tool")
);
--> statement-breakpoint
CREATE TABLE "transcripts" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"conversation" text NOT NULL,
	"profile" text NOT NULL,
	"event_id" text NOT NULL,
	"kind" text NOT NULL,
	"text" text NOT NULL,
	"meta" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "turn_files" (
	"event_id" text NOT NULL,
	"name" text NOT NULL,
	"size" integer NOT NULL,
	"sha256" text NOT NULL,
	"data" "bytea" NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "turn_files_event_id_name_pk" PRIMARY KEY("event_id","name")
);
--> statement-breakpoint
CREATE TABLE "webhooks" (
	"id" text PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"scope" text NOT NULL,
	"endpoint" text NOT NULL,
	"secret" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "events_conversation_seq" ON "events" USING btree ("conversation","seq");--> statement-breakpoint
CREATE INDEX "events_profile_status" ON "events" USING btree ("profile","status");--> statement-breakpoint
CREATE INDEX "transcripts_conversation_id" ON "transcripts" USING btree ("conversation","id");--> statement-breakpoint
CREATE INDEX "transcripts_event" ON "transcripts" USING btree ("event_id");