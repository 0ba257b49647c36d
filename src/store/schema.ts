import { bigint, bigserial, customType, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

const bytea = customType<{ data: Buffer; driverData: Buffer | Uint8Array }>({
  dataType: () => 'bytea',
  fromDriver: (v) => (Buffer.isBuffer(v) ? v : Buffer.from(v)),
});

// `enum` on text only narrows the TypeScript type; the column stays plain text so adding a
// runtime or state later needs no migration.
export const agentRuntimes = ['kata', 'runsc', 'runc'] as const;
export const agentStates = ['running', 'sleeping', 'destroyed'] as const;

/** One row per agent sandbox, written by the sandbox service on wake, sleep and destroy. */
export const agents = pgTable('agents', {
  id: text('id').primaryKey(),
  profile: text('profile'),
  runtime: text('runtime', { enum: agentRuntimes }).notNull(),
  engineRuntime: text('engine_runtime').notNull(),
  image: text('image').notNull(),
  specHash: text('spec_hash').notNull(),
  containerId: text('container_id'),
  state: text('state', { enum: agentStates }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  lastWakeAt: timestamp('last_wake_at', { withTimezone: true }),
  lastWakeMs: integer('last_wake_ms'),
});

export const eventStatuses = ['queued', 'running', 'replied', 'delivered', 'failed', 'rejected'] as const;
/** Statuses after which an event never runs again. */
export const terminalEventStatuses = ['delivered', 'failed', 'rejected'] as const;

/**
 * Every inbound event, stored before the platform is acknowledged. The primary key is the
 * platform's own event id, so a redelivery cannot insert a second row. `seq` orders the turns of
 * one conversation.
 */
export const events = pgTable(
  'events',
  {
    id: text('id').primaryKey(),
    seq: bigserial('seq', { mode: 'number' }).notNull(),
    platform: text('platform').notNull(),
    profile: text('profile'),
    conversation: text('conversation').notNull(),
    status: text('status', { enum: eventStatuses }).notNull(),
    /** The InboundEvent as received (text included); the transcript keeps the prompt too. */
    payload: jsonb('payload').notNull(),
    attempts: integer('attempts').notNull().default(0),
    /** Why the event was rejected or failed, in words a user can act on. */
    error: text('error'),
    /** Set once the reply is stored: the text to deliver (delivery may be retried after a crash). */
    reply: text('reply'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('events_conversation_seq').on(t.conversation, t.seq),
    index('events_profile_status').on(t.profile, t.status),
  ],
);

export const transcriptKinds = ['prompt', 'progress', 'reply', 'file', 'notice'] as const;

/** The conversation as it happened: prompts, progress summaries, replies, produced files, notices. */
export const transcripts = pgTable(
  'transcripts',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    conversation: text('conversation').notNull(),
    profile: text('profile').notNull(),
    eventId: text('event_id').notNull(),
    kind: text('kind', { enum: transcriptKinds }).notNull(),
    text: text('text').notNull(),
    meta: jsonb('meta'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('transcripts_conversation_id').on(t.conversation, t.id), index('transcripts_event').on(t.eventId)],
);

/** Files a turn produced, kept so that delivery can be retried after a crash and the local channel can fetch them. */
export const turnFiles = pgTable(
  'turn_files',
  {
    eventId: text('event_id').notNull(),
    name: text('name').notNull(),
    size: integer('size').notNull(),
    sha256: text('sha256').notNull(),
    data: bytea('data').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.eventId, t.name] })],
);

/** The agent's ACP session for a conversation, so later turns continue it (session/load). */
export const sessions = pgTable(
  'sessions',
  {
    profile: text('profile').notNull(),
    conversation: text('conversation').notNull(),
    sessionId: text('session_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.profile, t.conversation] })],
);

/**
 * Append-only record of every decision. Each row carries the hash of the previous row, so an
 * edit or a deletion breaks the chain at that row (`agent-vm audit verify`).
 */
export const audit = pgTable('audit', {
  seq: bigserial('seq', { mode: 'number' }).primaryKey(),
  at: timestamp('at', { withTimezone: true, mode: 'string' }).notNull(),
  profile: text('profile'),
  action: text('action').notNull(),
  decision: text('decision').notNull(),
  reason: text('reason'),
  subject: text('subject'),
  data: jsonb('data'),
  prevHash: text('prev_hash').notNull(),
  hash: text('hash').notNull(),
});

/**
 * Tool definitions pinned when a profile is approved; a changed definition is hidden until re-pinned.
 * The pinned definition is kept beside its hash, and the last definition seen that differs from it
 * (`seen_*`, "quarantined"), so an operator can read the difference before re-pinning.
 */
export const toolPins = pgTable(
  'tool_pins',
  {
    profile: text('profile').notNull(),
    tool: text('tool').notNull(),
    hash: text('hash').notNull(),
    pinnedAt: timestamp('pinned_at', { withTimezone: true }).notNull().defaultNow(),
    /** name, description and input schema as pinned (made storable); null for pins taken before it was kept. */
    definition: jsonb('definition'),
    /** Who re-pinned (`cli:<user>`, `local:api`); null for the first, automatic pin. */
    pinnedBy: text('pinned_by'),
    /** The differing definition last seen, hidden until someone re-pins it; null when none. */
    seenHash: text('seen_hash'),
    seenDefinition: jsonb('seen_definition'),
    seenAt: timestamp('seen_at', { withTimezone: true }),
  },
  (t) => [primaryKey({ columns: [t.profile, t.tool] })],
);

/** Webhooks agent-vm registered on a platform, with the secret it verifies their deliveries with. */
export const webhooks = pgTable('webhooks', {
  id: text('id').primaryKey(),
  platform: text('platform').notNull(),
  scope: text('scope').notNull(),
  endpoint: text('endpoint').notNull(),
  secret: text('secret').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

export const approvalStatuses = ['pending', 'approved', 'denied', 'timeout'] as const;

/**
 * Tool calls waiting for a person. Kept here, not in memory, so the process that serves the
 * channel (where the button is pressed) and the unit that holds the call can be different
 * processes, and a restart settles what it dropped. The arguments themselves are never stored:
 * only their hash, as in the audit trail.
 */
export const approvals = pgTable(
  'approvals',
  {
    id: text('id').primaryKey(),
    profile: text('profile').notNull(),
    sessionKey: text('session_key').notNull(),
    /** The turn the call belongs to, when the gateway could tell. */
    eventId: text('event_id'),
    tool: text('tool').notNull(),
    argsHash: text('args_hash').notNull(),
    /** `<platform>:<user id>` of the people who may answer; empty means the operator API only. */
    approvers: jsonb('approvers').$type<string[]>().notNull(),
    status: text('status', { enum: approvalStatuses }).notNull(),
    /** `<platform>:<user id>` of who answered, or `local:api` for the operator API. */
    answeredBy: text('answered_by'),
    requestedAt: timestamp('requested_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    settledAt: timestamp('settled_at', { withTimezone: true }),
  },
  (t) => [index('approvals_status_idx').on(t.status, t.requestedAt)],
);

/**
 * Who serves a profile: a lease with fencing. A unit serves only while its lease is valid; it
 * renews it well before expiry and stops taking turns on its own before the expiry it last
 * secured. Another unit may take a lease only once it has expired (or its holder is provably
 * dead), so two units never serve one profile at once, whatever happens to connections.
 */
export const unitLeases = pgTable('unit_leases', {
  key: text('key').primaryKey(),
  /** `<host>:<pid>:<random>` of the unit instance holding it. */
  holder: text('holder').notNull(),
  /** Incremented each time the lease changes hands. */
  epoch: integer('epoch').notNull(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** Files a turn's agent produced that were not sent, and why (one row each). */
export const heldBackFiles = pgTable(
  'held_back_files',
  {
    eventId: text('event_id').notNull(),
    name: text('name').notNull(),
    reason: text('reason').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.eventId, t.name] })],
);

export const jobStatuses = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'error'] as const;
/** Statuses after which a job never runs again. */
export const terminalJobStatuses = ['succeeded', 'failed', 'timed_out', 'cancelled', 'error'] as const;
export const teardownStates = ['pending', 'verified', 'failed'] as const;

/**
 * Tier-2 jobs: one-shot sandboxes for untrusted work (src/jobs). One row per job, written before
 * it is queued; `teardown` stays `pending` until the engine has been seen holding nothing of the
 * job's sandbox, and a job whose teardown is not `verified` is retried and alarmed, never dropped.
 * The command is stored made storable (its hash beside it), outputs only capped.
 */
export const jobs = pgTable(
  'jobs',
  {
    id: text('id').primaryKey(),
    profile: text('profile').notNull(),
    /** `agent:<conversation>` for the built-in tool, `cli:<user>` for an operator. */
    requestedBy: text('requested_by').notNull(),
    conversation: text('conversation'),
    turnId: text('turn_id'),
    command: jsonb('command').$type<string[]>().notNull(),
    commandHash: text('command_hash').notNull(),
    inputs: jsonb('inputs').$type<string[]>().notNull(),
    outputs: jsonb('outputs').$type<string[]>().notNull(),
    timeoutSeconds: integer('timeout_seconds').notNull(),
    status: text('status', { enum: jobStatuses }).notNull(),
    /** The job sandbox's agent id (its container, volume and network carry it as a label). */
    sandbox: text('sandbox').notNull(),
    runtime: text('runtime'),
    exitCode: integer('exit_code'),
    stdout: text('stdout'),
    stderr: text('stderr'),
    bytesIn: integer('bytes_in').notNull().default(0),
    bytesOut: integer('bytes_out').notNull().default(0),
    /** Files copied back (`written`) and refused (`refused`, with reasons). */
    results: jsonb('results'),
    error: text('error'),
    teardown: text('teardown', { enum: teardownStates }).notNull().default('pending'),
    teardownDetail: text('teardown_detail'),
    teardownAttempts: integer('teardown_attempts').notNull().default(0),
    /** Set by whoever wants the job stopped (its turn ended); the runner polls it. */
    cancelRequested: timestamp('cancel_requested', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('jobs_profile_created').on(t.profile, t.createdAt), index('jobs_teardown').on(t.teardown)],
);

export const scheduleRunStatuses = ['waiting', 'started', 'skipped', 'rejected', 'failed'] as const;

/**
 * One row per schedule tick that fired (profile, schedule, tick time): the claim that makes a
 * tick run once however many gateways saw it, and `agent-vm schedules ls`'s last result. A
 * started run names the event (and so the conversation and transcript) it became.
 */
export const scheduleRuns = pgTable(
  'schedule_runs',
  {
    profile: text('profile').notNull(),
    schedule: text('schedule').notNull(),
    tick: timestamp('tick', { withTimezone: true }).notNull(),
    status: text('status', { enum: scheduleRunStatuses }).notNull(),
    eventId: text('event_id'),
    conversation: text('conversation'),
    reason: text('reason'),
    /** A tick run at start for one missed while no gateway ran (catchUp: latest). */
    catchUp: integer('catch_up').notNull().default(0),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.profile, t.schedule, t.tick] })],
);

export const heldDeliveryStatuses = ['held', 'routed', 'dropped'] as const;

/**
 * Platform deliveries stored before they can be routed (their address needs a platform API call
 * after the acknowledgement, e.g. a ClickUp comment's task). The primary key is the platform's
 * event id, so a redelivery is recognised without any API call; rows stay after routing for
 * exactly that reason. `payload` is the event without its address.
 */
export const heldDeliveries = pgTable(
  'held_deliveries',
  {
    id: text('id').primaryKey(),
    platform: text('platform').notNull(),
    payload: jsonb('payload').notNull(),
    status: text('status', { enum: heldDeliveryStatuses }).notNull(),
    /** Why it was dropped (the task is gone, a comment of agent-vm's own). */
    reason: text('reason'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('held_deliveries_status').on(t.platform, t.status, t.createdAt)],
);

/**
 * How far an agent has read a platform thread: the platform's own position (a Slack `ts`, a
 * Discord message id, a ClickUp comment date) of the last message given to it, so a later turn
 * in the same thread gets only what is new.
 */
export const threadCursors = pgTable('thread_cursors', {
  conversation: text('conversation').primaryKey(),
  cursor: text('cursor').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

export const feedbackValues = ['positive', 'negative'] as const;

/** A person's 👍/👎 on an answer (Slack feedback buttons), one per person and turn; the last press wins. */
export const turnFeedback = pgTable(
  'turn_feedback',
  {
    eventId: text('event_id').notNull(),
    platform: text('platform').notNull(),
    userId: text('user_id').notNull(),
    value: text('value', { enum: feedbackValues }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.eventId, t.userId] }), index('turn_feedback_updated').on(t.updatedAt)],
);

/**
 * Model tokens counted by the model relay, per profile, UTC day and provider: the daily budget
 * (`models[].dailyTokens`, all providers of a profile together) reads the day's sum before a call
 * and adds each call's usage after it. Survives restarts and is shared by every gateway process.
 */
export const modelUsage = pgTable(
  'model_usage',
  {
    profile: text('profile').notNull(),
    /** `YYYY-MM-DD`, UTC. */
    day: text('day').notNull(),
    provider: text('provider').notNull(),
    /** What the budget counts: input + output + cache reads and writes. */
    tokens: bigint('tokens', { mode: 'number' }).notNull().default(0),
    inputTokens: bigint('input_tokens', { mode: 'number' }).notNull().default(0),
    outputTokens: bigint('output_tokens', { mode: 'number' }).notNull().default(0),
    cacheReadTokens: bigint('cache_read_tokens', { mode: 'number' }).notNull().default(0),
    cacheWriteTokens: bigint('cache_write_tokens', { mode: 'number' }).notNull().default(0),
    calls: integer('calls').notNull().default(0),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.profile, t.day, t.provider] })],
);

export const releaseStatuses = ['applying', 'canary', 'active', 'superseded', 'failed', 'rolled_back'] as const;

/**
 * Releases (src/releases): what one profile's agent runs, pinned — the image by the engine's id,
 * the agent program and version, the manifest's hash (and the manifest itself, for diffs), the
 * runtime, and the sandbox spec it was planned with — with who made it, when, why, and the
 * release it replaced (its rollback target). Numbered per profile; never deleted.
 */
export const releases = pgTable(
  'releases',
  {
    id: text('id').primaryKey(),
    profile: text('profile').notNull(),
    number: integer('number').notNull(),
    status: text('status', { enum: releaseStatuses }).notNull(),
    imageRef: text('image_ref').notNull(),
    imageDigest: text('image_digest').notNull(),
    agentProgram: text('agent_program').notNull(),
    agentVersion: text('agent_version'),
    manifestHash: text('manifest_hash').notNull(),
    manifest: jsonb('manifest').notNull(),
    runtime: text('runtime').notNull(),
    specHash: text('spec_hash').notNull(),
    spec: jsonb('spec').notNull(),
    slot: text('slot').notNull(),
    rollbackTarget: text('rollback_target'),
    createdBy: text('created_by').notNull(),
    reason: text('reason'),
    /** Health check, canary and swap results; why it failed or was rolled back. */
    outcome: jsonb('outcome'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('releases_profile_number').on(t.profile, t.number), index('releases_profile_status').on(t.profile, t.status)],
);

/**
 * Each released agent's slots: which one serves (`active`) and its release, the release kept
 * stopped in the other slot for an instant swap back (`standby`), a canary in progress, and the
 * container each slot had when agent-vm last started it (a different one is drift).
 */
export const agentSlots = pgTable('agent_slots', {
  agent: text('agent').primaryKey(),
  active: text('active').notNull(),
  release: text('release'),
  standby: text('standby'),
  canary: jsonb('canary'),
  containers: jsonb('containers').notNull().default({}),
  version: integer('version').notNull().default(0),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
