CREATE TABLE "model_usage" (
	"profile" text NOT NULL,
	"day" text NOT NULL,
	"provider" text NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	"input_tokens" bigint DEFAULT 0 NOT NULL,
	"output_tokens" bigint DEFAULT 0 NOT NULL,
	"cache_read_tokens" bigint DEFAULT 0 NOT NULL,
	"cache_write_tokens" bigint DEFAULT 0 NOT NULL,
	"calls" integer DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "model_usage_profile_day_provider_pk" PRIMARY KEY("profile","day","provider")
);
