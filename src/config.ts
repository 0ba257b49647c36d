/**
 * The only module that reads the environment. Everything else receives a typed `Config`.
 * A wrong value is a startup error that names the setting; a missing optional one takes the
 * documented default (README: settings).
 */
import path from 'node:path';
import { z } from 'zod';
import { AgentVmError } from './errors.js';
import { RUNTIME_SETTINGS } from './sandbox/spec.js';
import type { SnapshotSettings } from './sandbox/snapshots/index.js';

export type RuntimeSetting = 'kata' | 'runsc' | 'runc' | 'auto';

export type DockerConnection =
  | { socketPath: string }
  | { protocol: 'http' | 'https'; host: string; port: number };

export interface Config {
  dataDir: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  docker: DockerConnection;
  runtime: RuntimeSetting;
  allowRunc: boolean;
  image: string;
  profilesDir: string;
  http: { host: string; port: number };
  /** Bearer token for the local HTTP API (`POST /v1/messages`); unset → that API refuses every call. */
  apiToken: string | undefined;
  /** Token for operators: the dashboard (`/ui`) and the operator API (`/v1/…` but messages); unset → /ui is off (see notes/operator.md). */
  adminToken: string | undefined;
  /** How long a tool call waits for a person's approval before it is denied (the one approval timer). */
  approvalTimeoutSeconds: number;
  /** Gateway-side secrets: `secret://<name>` resolves from AGENTVM_SECRET_<NAME> or this file. */
  secrets: { file: string | undefined; env: Record<string, string> };
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  outbox: { maxFileBytes: number; maxTotalBytes: number; maxFiles: number };
  /** Longest reply text sent as a message; a longer answer also goes out whole as a file. */
  replyMaxBytes: number;
  /** How much of a platform thread's history a turn gets (first turn; later turns: what is new, at most this). */
  threadContext: { maxMessages: number; maxChars: number };
  /** Tries per message (unit crashes, transient failures) before the person is told it failed. */
  maxAttempts: number;
  /** How long a stopping unit waits for running turns before leaving them open for recovery. */
  stopGraceSeconds: number;
  /** Agents without a sandbox yet that get one prepared (created and started) ahead of their first message. */
  warmPool: number;
  /** Healthy turns a canary release serves before it is promoted (L3 and above; AGENTVM_CANARY_TURNS). */
  canaryTurns: number;
  slack: { signingSecret?: string; botToken?: string; appToken?: string; apiUrl: string };
  discord: { publicKey?: string; botToken?: string; applicationId?: string; apiUrl: string };
  clickup: { webhookSecret?: string; token?: string; apiUrl: string; progressAfterSeconds: number };
  /** Provider API base URLs the model relay forwards to (proxies, tests); keys come only from `secret://`. */
  modelApis: { anthropic: string; openai: string; gemini: string };
  /** Workspace snapshot generations: AGENTVM_SNAPSHOT_URL (s3://… or file:///…; unset → `<dataDir>/snapshots`), AGENTVM_SNAPSHOT_KEEP, AWS_* for S3. */
  snapshots: SnapshotSettings;
}

const bool = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no', ''])
  .transform((v) => v === '1' || v === 'true' || v === 'yes');

const positiveInt = z.coerce.number().int().positive();
const url = z.string().url();
const postgresUrl = z
  .string()
  .url()
  .refine((v) => /^postgres(ql)?:\/\//.test(v), 'must start with postgres:// or postgresql://');
const redisUrl = z
  .string()
  .url()
  .refine((v) => /^rediss?:\/\//.test(v), 'must start with redis:// or rediss://');
const secret = z.string().min(1);

const schema = z.object({
  AGENTVM_DATA_DIR: z.string().min(1).default('./.agent-vm'),
  DATABASE_URL: postgresUrl.optional(),
  REDIS_URL: redisUrl.optional(),
  DOCKER_HOST: z
    .string()
    .refine((v) => {
      try {
        parseDockerHost(v);
        return true;
      } catch {
        return false;
      }
    }, 'must be unix:///path/to/docker.sock or tcp://host:port')
    .optional(),
  AGENTVM_RUNTIME: z.enum(RUNTIME_SETTINGS).default('auto'),
  AGENTVM_ALLOW_RUNC: bool.default(false),
  AGENTVM_IMAGE: z.string().min(1).default('agent-vm/agent:latest'),
  AGENTVM_PROFILES_DIR: z.string().min(1).default('./profiles'),
  AGENTVM_HOST: z.string().min(1).default('127.0.0.1'),
  AGENTVM_API_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  AGENTVM_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  AGENTVM_APPROVAL_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  AGENTVM_SECRETS_FILE: z.string().min(1).optional(),
  AGENTVM_PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  AGENTVM_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  AGENTVM_OUTBOX_MAX_FILE_BYTES: positiveInt.default(25 * 1024 * 1024),
  AGENTVM_OUTBOX_MAX_TOTAL_BYTES: positiveInt.default(100 * 1024 * 1024),
  AGENTVM_OUTBOX_MAX_FILES: positiveInt.default(20),
  AGENTVM_REPLY_MAX_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
  AGENTVM_THREAD_CONTEXT_MESSAGES: z.coerce.number().int().min(0).max(1000).default(50),
  AGENTVM_THREAD_CONTEXT_CHARS: z.coerce.number().int().min(0).max(1_000_000).default(20_000),
  AGENTVM_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(3),
  AGENTVM_STOP_GRACE_SECONDS: z.coerce.number().int().min(0).max(3600).default(30),
  AGENTVM_WARM_POOL: z.coerce.number().int().min(0).max(64).default(0),
  AGENTVM_CANARY_TURNS: z.coerce.number().int().min(1).max(1000).default(5),
  SLACK_SIGNING_SECRET: secret.optional(),
  SLACK_BOT_TOKEN: secret.optional(),
  SLACK_APP_TOKEN: secret.optional(),
  SLACK_API_URL: url.default('https://slack.com/api/'),
  DISCORD_PUBLIC_KEY: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters').optional(),
  DISCORD_BOT_TOKEN: secret.optional(),
  DISCORD_APPLICATION_ID: z.string().regex(/^\d+$/, 'must be a numeric snowflake').optional(),
  DISCORD_API_URL: url.default('https://discord.com/api'),
  CLICKUP_WEBHOOK_SECRET: secret.optional(),
  CLICKUP_TOKEN: secret.optional(),
  CLICKUP_API_URL: url.default('https://api.clickup.com/api/v2'),
  CLICKUP_PROGRESS_AFTER_SECONDS: z.coerce.number().int().min(0).max(86_400).default(60),
  AGENTVM_ANTHROPIC_API_URL: url.default('https://api.anthropic.com'),
  AGENTVM_OPENAI_API_URL: url.default('https://api.openai.com'),
  AGENTVM_GEMINI_API_URL: url.default('https://generativelanguage.googleapis.com'),
  AGENTVM_SNAPSHOT_URL: z.string().regex(/^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.+)$/, 'must be s3://bucket[/prefix] or file:///absolute/dir').optional(),
  AGENTVM_SNAPSHOT_KEEP: z.coerce.number().int().min(1).max(1000).default(5),
  AWS_ENDPOINT_URL_S3: url.optional(),
  AWS_ENDPOINT_URL: url.optional(),
  AWS_REGION: z.string().min(1).optional(),
  AWS_DEFAULT_REGION: z.string().min(1).optional(),
  AWS_ACCESS_KEY_ID: secret.optional(),
  AWS_SECRET_ACCESS_KEY: secret.optional(),
  AWS_SESSION_TOKEN: secret.optional(),
  AGENTVM_S3_FORCE_PATH_STYLE: bool.optional(),
}).superRefine((e, ctx) => {
  if (e.AGENTVM_RUNTIME === 'runc' && !e.AGENTVM_ALLOW_RUNC) {
    ctx.addIssue({
      code: 'custom',
      path: ['AGENTVM_RUNTIME'],
      message: 'runc gives agents no kernel isolation; set AGENTVM_ALLOW_RUNC=1 to use it for development',
    });
  }
});

/** Parses DOCKER_HOST the way the Docker CLI does, for the forms agent-vm supports. */
export function parseDockerHost(value: string | undefined): DockerConnection {
  if (value === undefined) return { socketPath: '/var/run/docker.sock' };
  if (value.startsWith('unix://') && value.length > 'unix://'.length) return { socketPath: value.slice('unix://'.length) };
  const m = /^(tcp|http|https):\/\/([^:/]+)(?::(\d+))?\/?$/.exec(value);
  const port = m?.[3] ? Number(m[3]) : undefined;
  if (m && (port === undefined || (port > 0 && port <= 65535))) {
    const protocol = m[1] === 'https' ? 'https' : 'http';
    return { protocol, host: m[2]!, port: port ?? (protocol === 'https' ? 2376 : 2375) };
  }
  throw new Error('must be unix:///path/to/docker.sock or tcp://host:port');
}

/** Secret values passed as AGENTVM_SECRET_<NAME>; the name is kept as written after the prefix. */
function secretsFromEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith(SECRET_ENV_PREFIX) && k.length > SECRET_ENV_PREFIX.length && v) out[k.slice(SECRET_ENV_PREFIX.length)] = v;
  }
  return out;
}

export const SECRET_ENV_PREFIX = 'AGENTVM_SECRET_';

/** Reads and validates the environment. Throws an AgentVmError naming every bad setting. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Treat empty strings as unset: `FOO= agent-vm up` should mean "default", not "invalid".
  const raw = Object.fromEntries(
    Object.keys(schema.shape)
      .map((k) => [k, env[k]] as const)
      .filter(([, v]) => v !== undefined && v !== ''),
  );
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new AgentVmError('config_invalid', `invalid configuration:\n${lines.join('\n')}`, { status: 400 });
  }
  const e = parsed.data;
  const docker = parseDockerHost(e.DOCKER_HOST);
  return {
    dataDir: path.resolve(e.AGENTVM_DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    docker,
    runtime: e.AGENTVM_RUNTIME,
    allowRunc: e.AGENTVM_ALLOW_RUNC,
    image: e.AGENTVM_IMAGE,
    profilesDir: path.resolve(e.AGENTVM_PROFILES_DIR),
    http: { host: e.AGENTVM_HOST, port: e.AGENTVM_PORT },
    apiToken: e.AGENTVM_API_TOKEN,
    adminToken: e.AGENTVM_ADMIN_TOKEN,
    approvalTimeoutSeconds: e.AGENTVM_APPROVAL_TIMEOUT_SECONDS,
    secrets: {
      file: e.AGENTVM_SECRETS_FILE === undefined ? undefined : path.resolve(e.AGENTVM_SECRETS_FILE),
      env: secretsFromEnv(env),
    },
    logLevel: e.AGENTVM_LOG_LEVEL,
    outbox: {
      maxFileBytes: e.AGENTVM_OUTBOX_MAX_FILE_BYTES,
      maxTotalBytes: e.AGENTVM_OUTBOX_MAX_TOTAL_BYTES,
      maxFiles: e.AGENTVM_OUTBOX_MAX_FILES,
    },
    replyMaxBytes: e.AGENTVM_REPLY_MAX_BYTES,
    threadContext: { maxMessages: e.AGENTVM_THREAD_CONTEXT_MESSAGES, maxChars: e.AGENTVM_THREAD_CONTEXT_CHARS },
    maxAttempts: e.AGENTVM_MAX_ATTEMPTS,
    stopGraceSeconds: e.AGENTVM_STOP_GRACE_SECONDS,
    warmPool: e.AGENTVM_WARM_POOL,
    canaryTurns: e.AGENTVM_CANARY_TURNS,
    slack: {
      signingSecret: e.SLACK_SIGNING_SECRET,
      botToken: e.SLACK_BOT_TOKEN,
      appToken: e.SLACK_APP_TOKEN,
      apiUrl: e.SLACK_API_URL,
    },
    discord: {
      publicKey: e.DISCORD_PUBLIC_KEY,
      botToken: e.DISCORD_BOT_TOKEN,
      applicationId: e.DISCORD_APPLICATION_ID,
      apiUrl: e.DISCORD_API_URL,
    },
    clickup: { webhookSecret: e.CLICKUP_WEBHOOK_SECRET, token: e.CLICKUP_TOKEN, apiUrl: e.CLICKUP_API_URL, progressAfterSeconds: e.CLICKUP_PROGRESS_AFTER_SECONDS },
    modelApis: { anthropic: e.AGENTVM_ANTHROPIC_API_URL, openai: e.AGENTVM_OPENAI_API_URL, gemini: e.AGENTVM_GEMINI_API_URL },
    snapshots: {
      url: e.AGENTVM_SNAPSHOT_URL,
      keep: e.AGENTVM_SNAPSHOT_KEEP,
      s3: {
        endpoint: e.AWS_ENDPOINT_URL_S3 ?? e.AWS_ENDPOINT_URL,
        region: e.AWS_REGION ?? e.AWS_DEFAULT_REGION ?? 'us-east-1',
        accessKeyId: e.AWS_ACCESS_KEY_ID,
        secretAccessKey: e.AWS_SECRET_ACCESS_KEY,
        sessionToken: e.AWS_SESSION_TOKEN,
        forcePathStyle: e.AGENTVM_S3_FORCE_PATH_STYLE,
      },
    },
  };
}
