CREATE TABLE "agents" (
	"id" text PRIMARY KEY NOT NULL,
	"profile" text,
	"runtime" text NOT NULL,
	"engine_runtime" text NOT NULL,
	"image" text NOT NULL,
	"spec_hash" text NOT NULL,
	"container_id" text,
	"state" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_wake_at" timestamp with time zone,
	"last_wake_ms" integer
);
