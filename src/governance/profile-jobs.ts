/**
 * The `jobs:` and `schedules:` parts of a profile manifest (profile.ts includes them).
 *
 * `jobs` lets the profile's agent (and operators, `agent-vm jobs run`) run untrusted work in a
 * one-shot sandbox of its own: the built-in tool `agentvm.run_job`, listed and allowed like any
 * MCP tool while `jobs.enabled` is true (the tier's approval rules apply to it as to any tool).
 * A job gets no network unless `jobs.egress.allow` names targets, and those must be a subset of
 * the profile's own `egress.allow`; its limits are its own, capped by the profile's risk tier.
 *
 * `schedules` wake the agent on a cron: each tick is a message (`prompt`) posted where `post`
 * says, which must be a place one of the profile's own bindings covers.
 *
 * Deliberately left out: per-job secrets (a job never gets any), job-to-job chaining, and
 * schedules that post to a channel the profile is not bound to.
 */
import { Cron } from 'croner';
import { z } from 'zod';
import { DEFAULT_LIMITS, LIMIT_BOUNDS } from '../sandbox/spec.js';
import { TIERS, type TierViolation } from './tiers.js';

/** The built-in tool server the gateway serves itself; no manifest may declare a server by this name. */
export const BUILTIN_SERVER = 'agentvm';
/** `<server>.<tool>` of the job tool. */
export const RUN_JOB_TOOL = `${BUILTIN_SERVER}.run_job`;

export const JOB_DEFAULTS = Object.freeze({ maxConcurrent: 2, timeoutSeconds: 60, maxTimeoutSeconds: 600 });
export const JOB_MIN_PIDS = 128;
export const OVERLAP_MODES = ['allow', 'skip', 'queue'] as const;
export const CATCH_UP_MODES = ['none', 'latest'] as const;

const nonEmpty = z.string().min(1, 'must not be empty');
const whole = (min: number, max: number) => z.number().int('must be a whole number').min(min).max(max);
const hostPort = z.string().refine((v) => {
  const m = /^([a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*):(\d{1,5})$/.exec(v);
  return m !== null && Number(m[5]) >= 1 && Number(m[5]) <= 65535;
}, 'must be <lowercase host>:<port>, e.g. api.github.com:443');

export const jobsSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /** Image jobs run in; default the agent's image. */
  image: nonEmpty.optional(),
  limits: z
    .strictObject({
      cpus: z.number().positive().max(LIMIT_BOUNDS.cpus.max).default(DEFAULT_LIMITS.cpus),
      memoryMiB: whole(LIMIT_BOUNDS.memoryMiB.min, LIMIT_BOUNDS.memoryMiB.max).default(DEFAULT_LIMITS.memoryMiB),
      // Under runsc the sandbox's own threads count against the limit: measured, a job sandbox
      // with 64 dies on its first command, with 128 it runs.
      pids: z.number().int('must be a whole number').min(JOB_MIN_PIDS, `must be at least ${JOB_MIN_PIDS}: the sandbox runtime's own threads count against it`).max(LIMIT_BOUNDS.pids.max).default(DEFAULT_LIMITS.pids),
    })
    .prefault({}),
  /** Targets a job may reach through its own egress relay: a subset of the profile's egress.allow. */
  egress: z.strictObject({ allow: z.array(hostPort).default([]) }).prefault({}),
  /** Jobs of this profile running at once; more wait in the queue. */
  maxConcurrent: whole(1, 64).default(JOB_DEFAULTS.maxConcurrent),
  /** A job's deadline when its caller names none. */
  timeoutSeconds: whole(1, 86_400).default(JOB_DEFAULTS.timeoutSeconds),
  /** The longest deadline a caller may ask for. */
  maxTimeoutSeconds: whole(1, 86_400).default(JOB_DEFAULTS.maxTimeoutSeconds),
});

/** True for 5-field cron (minute first) or 6-field (seconds first) that croner accepts in `timezone`. */
export function cronProblem(pattern: string, timezone: string): string | undefined {
  const fields = pattern.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) return `must have 5 fields (minute hour day month weekday) or 6 (seconds first), not ${fields.length}`;
  try {
    new Cron(pattern, { timezone, paused: true }).stop();
    return undefined;
  } catch (err) {
    return `is not a valid cron pattern: ${err instanceof Error ? err.message : String(err)}`;
  }
}

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const idPart = z.string().regex(/^[^\s:]{1,128}$/, 'must be a platform id (no spaces or ":")');

/** Where a scheduled run posts: an address in the terms bindings use, plus an existing thread if any. */
export const postSchema = z.strictObject({
  platform: z.enum(['local', 'slack', 'discord', 'clickup']),
  channel: idPart.optional(),
  team: idPart.optional(),
  guild: idPart.optional(),
  space: idPart.optional(),
  folder: idPart.optional(),
  list: idPart.optional(),
  /** An existing thread (a Slack ts, a Discord thread id, a ClickUp task id); absent: a new thread per run. */
  thread: idPart.optional(),
});

export const scheduleSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'must be 1-40 lowercase letters, digits or "-"'),
    cron: nonEmpty,
    timezone: z.string().refine(validTimeZone, 'must be an IANA time zone, e.g. Europe/Paris').default('UTC'),
    prompt: z.string().min(1, 'must not be empty').max(16_000),
    post: postSchema,
    /** While the previous run is still going: run anyway, skip this tick, or run after it. */
    overlap: z.enum(OVERLAP_MODES).default('skip'),
    /** Ticks missed while no gateway ran: forget them, or run the latest one at start. */
    catchUp: z.enum(CATCH_UP_MODES).default('none'),
  })
  .superRefine((s, ctx) => {
    const why = cronProblem(s.cron, s.timezone);
    if (why) ctx.addIssue({ code: 'custom', path: ['cron'], message: why });
  });

export type JobsConfig = z.output<typeof jobsSchema>;
export type Schedule = z.output<typeof scheduleSchema>;
export type PostTarget = z.output<typeof postSchema>;

/** The parts of a manifest the cross-field checks read (a subset of Profile; profile.ts calls this before the type exists). */
export interface JobsRequest {
  risk: keyof typeof TIERS;
  egress: { allow: string[] };
  bindings: ReadonlyArray<Record<string, unknown> & { platform: string }>;
  tools: { servers: ReadonlyArray<{ name: string }> };
  jobs: JobsConfig;
  schedules: Schedule[];
}

/** Whether `server` is the built-in one and this profile serves it. */
export function isBuiltinServer(p: Pick<JobsRequest, 'jobs'>, server: string): boolean {
  return server === BUILTIN_SERVER && jobsEnabled(p);
}

/** Fail closed on a profile object that did not come through the schema (no `jobs` at all). */
export function jobsEnabled(p: Pick<JobsRequest, 'jobs'>): boolean {
  return (p as { jobs?: { enabled?: unknown } }).jobs?.enabled === true;
}

/** The built-in tools this profile's policy allows without listing them. */
export function builtinTools(p: Pick<JobsRequest, 'jobs'>): string[] {
  return jobsEnabled(p) ? [RUN_JOB_TOOL] : [];
}

const FIELDS: Record<string, readonly string[]> = {
  local: ['channel'],
  slack: ['team', 'channel'],
  discord: ['guild', 'channel'],
  clickup: ['team', 'thread'],
};
const ALLOWED_FIELDS: Record<string, readonly string[]> = {
  local: ['channel', 'thread'],
  slack: ['team', 'channel', 'thread'],
  discord: ['guild', 'channel', 'thread'],
  clickup: ['team', 'space', 'folder', 'list', 'thread'],
};

/** Whether a binding covers the place `post` names (the router's matching, without text). */
export function bindingCovers(b: Record<string, unknown> & { platform: string }, post: PostTarget): boolean {
  if (b.platform !== post.platform) return false;
  const channels = b.channels as string[] | undefined;
  switch (post.platform) {
    case 'local':
      return channels !== undefined && (channels.includes(post.channel!) || channels.includes('*'));
    case 'slack':
      return b.team === post.team && (channels === undefined || channels.includes(post.channel!));
    case 'discord':
      return b.guild === post.guild && (channels === undefined || channels.includes(post.channel!));
    case 'clickup':
      return b.team === post.team && (['space', 'folder', 'list'] as const).every((k) => b[k] === undefined || b[k] === post[k]);
  }
}

/** Everything wrong across fields of `jobs` and `schedules`; empty when they fit. */
export function jobsViolations(p: JobsRequest): TierViolation[] {
  const out: TierViolation[] = [];
  p.tools.servers.forEach((s, i) => {
    if (s.name === BUILTIN_SERVER) out.push({ path: ['tools', 'servers', i, 'name'], message: `"${BUILTIN_SERVER}" is the gateway's built-in tool server; pick another name` });
  });
  const j = p.jobs;
  const profileEgress = new Set(p.egress.allow);
  j.egress.allow.forEach((t, i) => {
    if (!profileEgress.has(t)) out.push({ path: ['jobs', 'egress', 'allow', i], message: `${t} is not in the profile's egress.allow; a job may reach only a subset of what its agent may` });
  });
  const tier = TIERS[p.risk];
  if (tier) {
    for (const k of ['cpus', 'memoryMiB', 'pids'] as const) {
      if (j.limits[k] > tier.limits[k]) out.push({ path: ['jobs', 'limits', k], message: `${k} ${j.limits[k]} is more than risk ${tier.tier} allows (at most ${tier.limits[k]})` });
    }
  }
  if (j.timeoutSeconds > j.maxTimeoutSeconds) {
    out.push({ path: ['jobs', 'timeoutSeconds'], message: `the default deadline (${j.timeoutSeconds} s) is longer than jobs.maxTimeoutSeconds (${j.maxTimeoutSeconds} s)` });
  }
  const names = new Set<string>();
  p.schedules.forEach((s, i) => {
    if (names.has(s.name)) out.push({ path: ['schedules', i, 'name'], message: `duplicate schedule name "${s.name}"` });
    names.add(s.name);
    const post = s.post;
    for (const f of FIELDS[post.platform] ?? []) {
      if (post[f as keyof PostTarget] === undefined) out.push({ path: ['schedules', i, 'post', f], message: `required to post on ${post.platform}` });
    }
    for (const f of Object.keys(post)) {
      if (f !== 'platform' && !(ALLOWED_FIELDS[post.platform] ?? []).includes(f)) out.push({ path: ['schedules', i, 'post', f], message: `does not apply to ${post.platform}` });
    }
    if ((FIELDS[post.platform] ?? []).every((f) => post[f as keyof PostTarget] !== undefined) && !p.bindings.some((b) => bindingCovers(b, post))) {
      out.push({ path: ['schedules', i, 'post'], message: `no binding of this profile covers ${describePost(post)}; a schedule posts only where its profile is bound` });
    }
  });
  return out;
}

/** `slack T1/C2 (thread 17.1)`, for listings and messages. */
export function describePost(p: PostTarget): string {
  const where = [p.team, p.guild, p.space, p.folder, p.list, p.channel].filter((x) => x !== undefined).join('/');
  return `${p.platform} ${where}${p.thread ? ` (thread ${p.thread})` : ''}`;
}
