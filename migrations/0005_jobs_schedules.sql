CREATE TABLE "jobs" (
	"id" text PRIMARY KEY NOT NULL,
	"profile" text NOT NULL,
	"requested_by" text NOT NULL,
	"conversation" text,
	"turn_id" text,
	"command" jsonb NOT NULL,
	"command_hash" text NOT NULL,
	"inputs" jsonb NOT NULL,
	"outputs" jsonb NOT NULL,
	"timeout_seconds" integer NOT NULL,
	"status" text NOT NULL,
	"sandbox" text NOT NULL,
	"runtime" text,
	"exit_code" integer,
	"stdout" text,
	"stderr" text,
	"bytes_in" integer DEFAULT 0 NOT NULL,
	"bytes_out" integer DEFAULT 0 NOT NULL,
	"results" jsonb,
	"error" text,
	"teardown" text DEFAULT 'pending' NOT NULL,
	"teardown_detail" text,
	"teardown_attempts" integer DEFAULT 0 NOT NULL,
	"cancel_requested" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "schedule_runs" (
	"profile" text NOT NULL,
	"schedule" text NOT NULL,
	"tick" timestamp with time zone NOT NULL,
	"status" text NOT NULL,
	"event_id" text,
	"conversation" text,
	"reason" text,
	"catch_up" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "schedule_runs_profile_schedule_tick_pk" PRIMARY KEY("profile","schedule","tick")
);
--> statement-breakpoint
CREATE INDEX "jobs_profile_created" ON "jobs" USING btree ("profile","created_at");--> statement-breakpoint
CREATE INDEX "jobs_teardown" ON "jobs" USING btree ("teardown");