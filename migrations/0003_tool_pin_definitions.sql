ALTER TABLE "tool_pins" ADD COLUMN "definition" jsonb;--> statement-breakpoint
ALTER TABLE "tool_pins" ADD COLUMN "pinned_by" text;--> statement-breakpoint
ALTER TABLE "tool_pins" ADD COLUMN "seen_hash" text;--> statement-breakpoint
ALTER TABLE "tool_pins" ADD COLUMN "seen_definition" jsonb;--> statement-breakpoint
ALTER TABLE "tool_pins" ADD COLUMN "seen_at" timestamp with time zone;