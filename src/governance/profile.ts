/**
 * The profile manifest: one YAML file per agent employee (DESIGN.md, "profiles"). The schema is
 * strict and fails closed: an unknown key, an unknown version, a secret that is not a
 * `secret://` reference, or a tool rule that names an undeclared server makes the whole
 * manifest invalid, and an invalid manifest never routes an event.
 */
import { z } from 'zod';
import { DEFAULT_LIMITS, LIMIT_BOUNDS, RUNTIME_SETTINGS } from '../sandbox/spec.js';
import { PRESET_NAMES, reservedEnv } from './presets.js';
import { tierViolations } from './tiers.js';
import { agentViolations, modelSchema, permissionsSchema, withPresetDefaults } from './profile-agent.js';
import { builtinTools, isBuiltinServer, jobsSchema, jobsViolations, scheduleSchema } from './profile-jobs.js';
import { healthSchema, releaseViolations } from './profile-release.js';

/** A profile id: also the manifest's file name without `.yaml`/`.yml`. */
export const PROFILE_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,39}$/;
/** A secret's name, as a key of `secrets` and after `secret://`. */
export const SECRET_NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;
/** A value of `secrets`: a reference to the secret store, never the secret itself. */
export const SECRET_REF_PATTERN = /^secret:\/\/[A-Za-z0-9_.-]+$/;

export const PROFILE_DEFAULTS = {
  limits: DEFAULT_LIMITS,
  turn: { timeoutSeconds: 300 },
  idle: { pauseAfterSeconds: 120, sleepAfterSeconds: 600 },
  snapshot: { everyMinutes: 30 },
} as const;

export const RISK_TIERS = ['L0', 'L1', 'L2', 'L3', 'L4', 'L5'] as const;
export const PLATFORMS = ['local', 'slack', 'discord', 'clickup'] as const;

/** One problem in one manifest. `path` is dotted/indexed (`bindings[1].team`); '' is the whole file. */
export interface ProfileIssue {
  file: string;
  path: string;
  message: string;
}

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name (letters, digits, "_")');
const nonEmpty = z.string().min(1, 'must not be empty');
const noWildcard = (what: string) =>
  nonEmpty.refine((v) => !v.includes('*'), `"*" is allowed only in local bindings; list ${what} ids or omit channels for a team-wide binding`);
const snowflake = z.string().regex(/^\d{1,25}$/, 'must be a numeric Discord id, quoted as a string');
const slackId = z.string().regex(/^[A-Z0-9]{2,40}$/, 'must be a Slack id (uppercase letters and digits, e.g. T0123ABC)');

const localBinding = z.strictObject({
  platform: z.literal('local'),
  channels: z.array(nonEmpty).min(1, 'list at least one channel name, or "*" for any'),
});

const slackBinding = z.strictObject({
  platform: z.literal('slack'),
  team: slackId,
  channels: z.array(slackId.pipe(noWildcard('channel'))).min(1, 'omit channels for a team-wide binding').optional(),
});

const discordBinding = z.strictObject({
  platform: z.literal('discord'),
  guild: snowflake,
  channels: z.array(snowflake.pipe(noWildcard('channel'))).min(1, 'omit channels for a guild-wide binding').optional(),
  command: z
    .string()
    .regex(/^[-_a-z0-9]{1,32}$/, 'must be a slash command name: 1-32 lowercase letters, digits, "-" or "_"')
    .optional(),
});

const clickupBinding = z.strictObject({
  platform: z.literal('clickup'),
  team: noWildcard('workspace'),
  space: noWildcard('space').optional(),
  folder: noWildcard('folder').optional(),
  list: noWildcard('list').optional(),
  trigger: z.string().regex(/^\S{2,64}$/, 'must be the mention that starts a turn, e.g. "@support" (no spaces)'),
});

export const bindingSchema = z.discriminatedUnion('platform', [localBinding, slackBinding, discordBinding, clickupBinding]);

const httpUrl = z
  .string()
  .refine((v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL');

const serverSchema = z
  .strictObject({
    // "__" separates server and tool in the names the MCP proxy exposes (`<server>__<tool>`).
    name: z
      .string()
      .regex(/^[a-z0-9_-]+$/, 'must be lowercase letters, digits, "-" or "_"')
      .refine((v) => !v.includes('__'), 'must not contain "__" (it separates server and tool in exposed tool names)'),
    url: httpUrl.optional(),
    headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, 'must be an HTTP header name'), z.string()).optional(),
    command: z.array(nonEmpty).min(1, 'must not be empty').optional(),
    env: z.record(envName, z.string()).optional(),
  })
  .superRefine((s, ctx) => {
    if ((s.url === undefined) === (s.command === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'set exactly one of url (remote MCP over http) or command (local stdio)' });
    }
    if (s.headers && s.url === undefined) ctx.addIssue({ code: 'custom', path: ['headers'], message: 'headers apply only to a url server' });
    if (s.env && s.command === undefined) ctx.addIssue({ code: 'custom', path: ['env'], message: 'env applies only to a command server' });
  });

const TOOL_REF = /^([a-z0-9_-]+)\.([A-Za-z0-9_.\/-]+)$/;
const toolRef = z.string().regex(TOOL_REF, 'must be <server>.<tool>');

const toolsSchema = z.strictObject({
  servers: z.array(serverSchema).default([]),
  /** Exact, case-sensitive `<server>.<tool>`; a server with no entry here exposes nothing. */
  allow: z.array(toolRef).default([]),
  /** Wins over allow: a quick way to switch a tool off without editing the allowlist. */
  deny: z.array(toolRef).default([]),
  /** Allowed tools whose every call waits for a person (the tier may add more, see tiers.ts). */
  approval: z.array(toolRef).default([]),
  /**
   * Who may answer approval requests in a channel, as `<platform>:<user id>` (e.g. `slack:U0123`).
   * Empty: the person whose message started the turn. The operator API may always answer.
   */
  approvers: z.array(z.string().regex(/^(slack|discord|clickup|local):[^\s:]+$/, 'must be <platform>:<user id>, e.g. slack:U0123ABCD')).default([]),
});

const hostPort = z.string().refine((v) => {
  const m = /^([a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*):(\d{1,5})$/.exec(v);
  return m !== null && Number(m[5]) >= 1 && Number(m[5]) <= 65535;
}, 'must be <lowercase host>:<port>, e.g. api.github.com:443');

const positiveInt = (min: number, max: number) => z.number().int('must be a whole number').min(min).max(max);

export const profileSchema = z
  .strictObject({
    version: z.literal(1, { error: (i) => `unsupported manifest version ${JSON.stringify(i.input)}; this agent-vm reads version 1` }),
    id: z.string().regex(PROFILE_ID_PATTERN, 'must be 1-40 lowercase letters, digits or "-", starting with a letter or digit'),
    name: z.string().min(1, 'must not be empty').max(100),
    agent: z
      .strictObject({
        /** A known agent (presets.ts): image, command, env and model relay wiring come with it. */
        preset: z.enum(PRESET_NAMES).optional(),
        /** Any other ACP-on-stdio program, run in `image` (default AGENTVM_IMAGE). */
        command: z.array(nonEmpty).min(1, 'must name the agent program, e.g. ["node", "agent.mjs"]').optional(),
        env: z.record(envName, z.string()).default({}),
      })
      .superRefine((a, ctx) => {
        if ((a.preset === undefined) === (a.command === undefined)) {
          ctx.addIssue({ code: 'custom', path: [], message: `set exactly one of preset (${PRESET_NAMES.join(', ')}) or command (any ACP program on stdio)` });
        }
        if (a.preset === undefined) return;
        const reserved = new Set(reservedEnv(a.preset));
        for (const k of Object.keys(a.env)) {
          if (reserved.has(k)) ctx.addIssue({ code: 'custom', path: ['env', k], message: `set by preset ${a.preset}; a manifest cannot change it` });
        }
      }),
    image: nonEmpty.optional(),
    runtime: z.enum(RUNTIME_SETTINGS).optional(),
    limits: z
      .strictObject({
        cpus: z.number().positive().max(LIMIT_BOUNDS.cpus.max).default(PROFILE_DEFAULTS.limits.cpus),
        memoryMiB: positiveInt(LIMIT_BOUNDS.memoryMiB.min, LIMIT_BOUNDS.memoryMiB.max).default(PROFILE_DEFAULTS.limits.memoryMiB),
        pids: positiveInt(LIMIT_BOUNDS.pids.min, LIMIT_BOUNDS.pids.max).default(PROFILE_DEFAULTS.limits.pids),
      })
      .prefault({}),
    turn: z.strictObject({ timeoutSeconds: positiveInt(1, 3600).default(PROFILE_DEFAULTS.turn.timeoutSeconds) }).prefault({}),
    idle: z
      .strictObject({
        /** Freeze the sandbox (no CPU, memory kept; wake is an unpause) after this long without turns. */
        pauseAfterSeconds: positiveInt(1, 86_400).default(PROFILE_DEFAULTS.idle.pauseAfterSeconds),
        /** Snapshot and stop it (nothing running) after this long. */
        sleepAfterSeconds: positiveInt(1, 86_400).default(PROFILE_DEFAULTS.idle.sleepAfterSeconds),
      })
      .prefault({}),
    /** Snapshots while the agent is busy, besides the ones taken before it sleeps (0: none). */
    snapshot: z.strictObject({ everyMinutes: z.number().int().min(0).max(1440).default(PROFILE_DEFAULTS.snapshot.everyMinutes) }).prefault({}),
    risk: z.enum(RISK_TIERS),
    bindings: z.array(bindingSchema).min(1, 'bind the profile to at least one channel'),
    tools: toolsSchema.prefault({}),
    egress: z.strictObject({ allow: z.array(hostPort).default([]) }).prefault({}),
    secrets: z
      .record(
        z.string().regex(SECRET_NAME_PATTERN, 'must be a secret name (letters, digits, ".", "_", "-")'),
        z.string().regex(SECRET_REF_PATTERN, 'must be a secret://<name> reference; secret values never go in a manifest'),
      )
      .default({}),
    models: z.array(modelSchema).default([]),
    permissions: permissionsSchema.default({ allow: [], ask: [], deny: [] }),
    jobs: jobsSchema.prefault({}),
    schedules: z.array(scheduleSchema).default([]),
    /** What a new release must pass before it serves anyone (profile-release.ts). */
    health: healthSchema.prefault({}),
  })
  .superRefine((p, ctx) => {
    for (const [k, v] of Object.entries(p.agent.env)) {
      if (v.includes('secret://')) {
        ctx.addIssue({ code: 'custom', path: ['agent', 'env', k], message: 'the agent never receives secrets; secret:// references belong in tool server headers or env' });
      }
    }
    const declared = new Set(Object.keys(p.secrets));
    const servers = new Map<string, number>();
    p.tools.servers.forEach((s, i) => {
      if (servers.has(s.name)) ctx.addIssue({ code: 'custom', path: ['tools', 'servers', i, 'name'], message: `duplicate server name "${s.name}"` });
      else servers.set(s.name, i);
      for (const [field, values] of [['headers', s.headers], ['env', s.env]] as const) {
        for (const [k, v] of Object.entries(values ?? {})) {
          for (const ref of v.match(/secret:\/\/[^\s"',;]*/g) ?? []) {
            const name = ref.slice('secret://'.length);
            const where = ['tools', 'servers', i, field, k];
            if (!SECRET_NAME_PATTERN.test(name)) ctx.addIssue({ code: 'custom', path: where, message: `malformed secret reference "${ref}"` });
            else if (!declared.has(name)) ctx.addIssue({ code: 'custom', path: where, message: `secret "${name}" is not declared in secrets` });
          }
        }
      }
    });
    const allowed = new Set([...p.tools.allow, ...builtinTools(p)]);
    for (const [field, list] of [['allow', p.tools.allow], ['deny', p.tools.deny], ['approval', p.tools.approval]] as const) {
      list.forEach((ref, i) => {
        const server = TOOL_REF.exec(ref)?.[1];
        if (server !== undefined && !servers.has(server) && !isBuiltinServer(p, server)) {
          ctx.addIssue({ code: 'custom', path: ['tools', field, i], message: `tool "${ref}" names server "${server}", which is not declared in tools.servers` });
        } else if (field === 'approval' && !allowed.has(ref)) {
          ctx.addIssue({ code: 'custom', path: ['tools', field, i], message: `tool "${ref}" needs approval but is not in tools.allow` });
        }
      });
    }
    for (const v of [...tierViolations(p), ...jobsViolations(p), ...agentViolations(p), ...releaseViolations(p)]) ctx.addIssue({ code: 'custom', path: v.path, message: v.message });
  });

export type Profile = z.output<typeof profileSchema>;
export type Binding = z.output<typeof bindingSchema>;
export type Platform = Binding['platform'];
export type RiskTier = (typeof RISK_TIERS)[number];
export type ToolServer = Profile['tools']['servers'][number];

/** `['bindings', 1, 'team']` → `bindings[1].team`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

function valueAt(data: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v = data;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

function issueMessage(i: z.core.$ZodIssue, data: unknown): string {
  if (i.code === 'invalid_union' && 'discriminator' in i && i.discriminator === 'platform') {
    return valueAt(data, i.path) === undefined ? 'required' : `unknown platform; expected one of ${PLATFORMS.join(', ')}`;
  }
  if ((i.code === 'invalid_type' || i.code === 'invalid_value') && i.path.length > 0 && valueAt(data, i.path) === undefined) return 'required';
  if (i.code === 'invalid_value' && i.values.length > 1) return `must be one of ${i.values.map((v) => String(v)).join(', ')}`;
  return i.message;
}

/** Schema-validates one parsed document. Unknown keys become one issue each, at the key's own path. */
export function validateProfile(data: unknown, file: string): { profile: Profile; issues: [] } | { profile?: undefined; issues: ProfileIssue[] } {
  const r = profileSchema.safeParse(withPresetDefaults(data));
  if (r.success) return { profile: r.data, issues: [] };
  const issues: ProfileIssue[] = [];
  for (const i of r.error.issues) {
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) issues.push({ file, path: formatPath([...i.path, k]), message: `unknown key "${k}"` });
    } else {
      issues.push({ file, path: formatPath(i.path), message: issueMessage(i, data) });
    }
  }
  return { issues };
}

/** A ClickUp binding's scope, widest first: `team 9 space 77`. */
export function clickupScope(b: Extract<Binding, { platform: 'clickup' }>): string {
  return [`team ${b.team}`, b.space && `space ${b.space}`, b.folder && `folder ${b.folder}`, b.list && `list ${b.list}`].filter(Boolean).join(' ');
}

/** A one-line summary of a binding, for listings and conflict messages. */
export function describeBinding(b: Binding): string {
  switch (b.platform) {
    case 'local':
      return `local ${b.channels.join(',')}`;
    case 'slack':
      return `slack ${b.team}${b.channels ? `/${b.channels.join(',')}` : ' (team-wide)'}`;
    case 'discord':
      return `discord ${b.guild}${b.channels ? `/${b.channels.join(',')}` : ' (guild-wide)'}${b.command ? ` /${b.command}` : ''}`;
    case 'clickup':
      return `clickup ${clickupScope(b)} ${b.trigger}`;
  }
}
