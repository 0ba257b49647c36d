/**
 * Tool policy as data, derived from a profile manifest: which `<server>.<tool>` the agent may
 * see and call, which need a person's approval, and the hash of it all that every audit row
 * about a tool carries.
 *
 * Rules (all fail closed):
 *   - names are exact and case-sensitive; no wildcards, no groups;
 *   - a tool is exposed only when it is in `allow` and not in `deny` (deny wins);
 *   - a server with no `allow` entry exposes nothing;
 *   - a policy document that is missing, malformed or of an unknown version compiles to an
 *     error, never to a permissive default; the proxy then lists nothing and denies every call.
 *
 * The agent sees a tool as `<server>__<tool>` (see `exposedName`): MCP tool names may hold
 * letters, digits, `_`, `-` and `.`, but the model APIs agents hand tools to allow only
 * `[A-Za-z0-9_-]`, and `__` is the separator MCP clients already use. Server names cannot
 * contain `__` (profile.ts), and two rules mapping to one exposed name make the policy invalid.
 *
 * Deliberately left out: argument-level rules (a tool is allowed or not, whatever its input).
 */
import { z } from 'zod';
import { AgentVmError } from '../errors.js';
import { hashOf } from './audit.js';
import { RISK_TIERS, type Profile } from './profile.js';
import { BUILTIN_SERVER, builtinTools, jobsEnabled } from './profile-jobs.js';
import { TIERS, type ApprovalMode } from './tiers.js';

export const POLICY_VERSION = 1;
export const EXPOSED_SEPARATOR = '__';

const TOOL_REF = /^([a-z0-9_-]+)\.([A-Za-z0-9_.\/-]+)$/;
const toolRef = z.string().regex(TOOL_REF, 'must be <server>.<tool>');

const policySchema = z.strictObject({
  version: z.number(),
  profile: z.string().min(1),
  risk: z.enum(RISK_TIERS),
  approvalMode: z.enum(['listed', 'credentialed', 'all']),
  servers: z.array(z.strictObject({ name: z.string().regex(/^[a-z0-9_-]+$/), credentialed: z.boolean() })),
  allow: z.array(toolRef),
  deny: z.array(toolRef),
  approval: z.array(toolRef),
});

export type ToolPolicy = z.output<typeof policySchema> & { version: typeof POLICY_VERSION; approvalMode: ApprovalMode };

/** One tool the policy exposes. */
export interface PolicyTool {
  /** `<server>.<tool>`, as in the manifest and in audit rows. */
  ref: string;
  server: string;
  /** The upstream's own name for the tool. */
  tool: string;
  /** What the agent sees and calls: `<server>__<tool>`. */
  exposed: string;
  needsApproval: boolean;
}

export interface CompiledPolicy {
  readonly policy: ToolPolicy;
  /** sha256 of the canonical policy document: in every audit row about a tool. */
  readonly hash: string;
  /** Allowed and not denied, by exposed name. */
  readonly tools: ReadonlyMap<string, PolicyTool>;
  /** Servers with at least one exposed tool (the proxy connects only these). */
  readonly servers: ReadonlySet<string>;
  /** The exposed tool, or undefined for anything the policy does not expose. */
  lookup(exposedName: string): PolicyTool | undefined;
  /** The exposed tool for a server's own tool name, or undefined. */
  byUpstream(server: string, tool: string): PolicyTool | undefined;
}

export function exposedName(server: string, tool: string): string {
  return `${server}${EXPOSED_SEPARATOR}${tool}`;
}

function policyError(message: string, cause?: unknown): AgentVmError {
  return new AgentVmError('policy_invalid', message, { status: 400, ...(cause === undefined ? {} : { cause }) });
}

/** Whether a server's headers or env use any secret (its calls then act in someone's name). */
function credentialed(s: Profile['tools']['servers'][number]): boolean {
  return [...Object.values(s.headers ?? {}), ...Object.values(s.env ?? {})].some((v) => v.includes('secret://'));
}

const sortedUnique = (xs: readonly string[]) => [...new Set(xs)].sort();

/** The policy document for a validated profile. Throws `policy_invalid` if the profile lacks what a policy needs. */
export function policyFromProfile(profile: Profile): ToolPolicy {
  const tools = profile?.tools;
  if (!tools || !Array.isArray(tools.servers) || !Array.isArray(tools.allow)) {
    throw policyError(`profile ${String(profile?.id)} has no readable tool policy`);
  }
  const tier = TIERS[profile.risk];
  if (!tier) throw policyError(`profile ${profile.id} has unknown risk tier ${JSON.stringify(profile.risk)}`);
  return {
    version: POLICY_VERSION,
    profile: profile.id,
    risk: profile.risk,
    approvalMode: tier.approval,
    // The built-in server (jobs) holds no credential; its tools are allowed by `jobs.enabled` itself.
    servers: [...tools.servers.map((s) => ({ name: s.name, credentialed: credentialed(s) })), ...(jobsEnabled(profile) ? [{ name: BUILTIN_SERVER, credentialed: false }] : [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    allow: sortedUnique([...tools.allow, ...builtinTools(profile)]),
    deny: sortedUnique(tools.deny ?? []),
    approval: sortedUnique(tools.approval ?? []),
  };
}

/** Validates a policy document (from a profile, a file or a store) and builds its lookup tables. */
export function compilePolicy(doc: unknown): CompiledPolicy {
  if (doc === undefined || doc === null) throw policyError('no tool policy');
  const version = (doc as { version?: unknown }).version;
  if (version !== POLICY_VERSION) {
    throw policyError(`unknown tool policy version ${JSON.stringify(version)}; this agent-vm reads version ${POLICY_VERSION}`);
  }
  const r = policySchema.safeParse(doc);
  if (!r.success) {
    const why = r.error.issues.map((i) => `${i.path.join('.') || 'policy'}: ${i.message}`).join('; ');
    throw policyError(`tool policy is malformed: ${why}`);
  }
  const policy = r.data as ToolPolicy;
  const servers = new Map(policy.servers.map((s) => [s.name, s]));
  const deny = new Set(policy.deny);
  const approval = new Set(policy.approval);
  const tools = new Map<string, PolicyTool>();
  const byRef = new Map<string, PolicyTool>();
  for (const ref of policy.allow) {
    const m = TOOL_REF.exec(ref)!;
    const server = m[1]!;
    const tool = m[2]!;
    const s = servers.get(server);
    if (!s) throw policyError(`tool policy allows ${ref}, but server ${server} is not declared`);
    if (deny.has(ref)) continue;
    const exposed = exposedName(server, tool);
    const clash = tools.get(exposed);
    if (clash) throw policyError(`tools ${clash.ref} and ${ref} would both be exposed as ${exposed}`);
    const needsApproval =
      approval.has(ref) || policy.approvalMode === 'all' || (policy.approvalMode === 'credentialed' && s.credentialed);
    const t: PolicyTool = { ref, server, tool, exposed, needsApproval };
    tools.set(exposed, t);
    byRef.set(ref, t);
  }
  const canonical = { ...policy, servers: [...policy.servers].sort((a, b) => (a.name < b.name ? -1 : 1)), allow: sortedUnique(policy.allow), deny: sortedUnique(policy.deny), approval: sortedUnique(policy.approval) };
  const hash = hashOf(canonical);
  return {
    policy,
    hash,
    tools,
    servers: new Set([...tools.values()].map((t) => t.server)),
    lookup: (name) => (typeof name === 'string' ? tools.get(name) : undefined),
    byUpstream: (server, tool) => byRef.get(`${server}.${tool}`),
  };
}
