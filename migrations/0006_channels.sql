CREATE TABLE "held_deliveries" (
	"id" text PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" text NOT NULL,
	"reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "thread_cursors" (
	"conversation" text PRIMARY KEY NOT NULL,
	"cursor" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "turn_feedback" (
	"event_id" text NOT NULL,
	"platform" text NOT NULL,
	"user_id" text NOT NULL,
	"value" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "turn_feedback_event_id_user_id_pk" PRIMARY KEY("event_id","user_id")
);
--> statement-breakpoint
CREATE INDEX "held_deliveries_status" ON "held_deliveries" USING btree ("platform","status","created_at");--> statement-breakpoint
CREATE INDEX "turn_feedback_updated" ON "turn_feedback" USING btree ("updated_at");