/**
 * The MCP endpoint the gateway hands each ACP session (session/new `mcpServers`): Streamable
 * HTTP, served by the SDK's low-level `Server` in stateless mode (a fresh Server + transport per
 * HTTP request), behind a bearer token bound to one profile and one session.
 *
 * What the agent gets, and what it never gets:
 *   - tools/list: only tools the profile's policy allows (`<server>__<tool>`, see policy.ts),
 *     whose definition matches its pin, from servers that are up. Only name, description and
 *     input schema pass; annotations, titles and output schemas are dropped, so nothing the
 *     upstream claims about a tool ("read-only") can grant anything.
 *   - tools/call of anything not in that list: JSON-RPC error -32602 "Unknown tool: <name>",
 *     and the upstream never sees the call.
 *   - a tool that needs approval waits for `approve` (no approver, timeout, error → denied).
 *   - upstream errors and timeouts: an error result (isError), never a retry.
 *   - secret values never leave the gateway: they are used in upstream connections only, and
 *     any that an upstream echoes back is redacted from results and descriptions.
 *   - every decision is an audit row (`tool.list`, `tool.call`, `tool.approval`,
 *     `tool.pin`, `tool.pin_mismatch`, `secret.resolve`, `upstream.start`) with the policy hash;
 *     arguments appear only as `argsHash`.
 *
 * Audit rows go through a write-behind queue (audit-queue.ts) so a decision does not wait for a
 * database transaction; while rows cannot be written, every call is denied. `auditSync: true`
 * waits for the decision row before forwarding instead (about +1-2 ms per call).
 *
 * Deliberately left out: resources, prompts, sampling and server-to-agent notifications (the
 * proxy exposes tools only); stateful MCP sessions (each request stands alone).
 */
import { randomBytes, createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ErrorCode, McpError, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/index.js';
import { askApprover, type Approver } from './approvals.js';
import { hashOf, type AuditEntry, type AuditLog } from './audit.js';
import { createAuditQueue, type AuditQueue } from './audit-queue.js';
import { startMcpHttpServer } from './mcp-http.js';
import { createPinStore, type PinStore } from './mcp-pins.js';
import { createUpstream, type ToolSandboxOptions, type Upstream, type UpstreamState } from './mcp-upstreams.js';
import { compilePolicy, exposedName, policyFromProfile, type CompiledPolicy, type PolicyTool } from './policy.js';
import type { Profile } from './profile.js';
import { createRedactor, type Redactor } from './redact.js';
import type { NamedSecret, SecretResolver } from './secrets.js';

export type { ToolSandboxOptions } from './mcp-upstreams.js';

export interface McpProxyOptions {
  /** Where to listen. The gateway binds the agent network's bridge gateway address (SandboxHandle.hostAddress). */
  listen: { host: string; port: number };
  db: Db;
  audit: AuditLog;
  secrets: SecretResolver;
  logger: Logger;
  /** Decides calls to tools that need approval. Absent: such calls are denied. */
  approve?: Approver;
  /** Per upstream request (connect, tools/list, tools/call). */
  upstreamTimeoutMs: number;
  /** How long a call waits for a person. Default 5 minutes. */
  approvalTimeoutMs?: number;
  /** Where local (command) tool servers run. Absent: they never start. */
  sandbox?: ToolSandboxOptions;
  /** Re-list an upstream's tools before a call when the last listing is older than this. Default 60 s. */
  definitionsTtlMs?: number;
  /** A failed upstream is retried at most this often. Default 5 s. */
  upstreamRetryMs?: number;
  /** Wait for each decision row to be written before acting on it. Default false (write-behind). */
  auditSync?: boolean;
  /** Largest request body accepted. Default 1 MiB. */
  maxBodyBytes?: number;
}

/** What the gateway puts in ACP session/new: `{ type: 'http', name: 'agent-vm', url, headers }`. */
export interface McpEndpoint {
  url: string;
  headers: Array<{ name: string; value: string }>;
}

export interface RegisterReport {
  profile: string;
  policyHash: string;
  upstreams: Array<{ server: string; state: UpstreamState; reason?: string }>;
  /** `<server>.<tool>` pinned by this registration (first approval). */
  pinned: string[];
  /** `<server>.<tool>` whose definition differs from its pin: hidden and denied. */
  mismatched: string[];
}

export interface McpProxy {
  /** `http://<host>:<port>/mcp`, the port resolved when listen.port was 0. */
  readonly url: string;
  /**
   * Loads (or reloads) a profile's policy and connects its tool servers; pins every allowed tool
   * seen for the first time. A profile whose policy cannot be read stays registered as
   * deny-everything and this rejects with AgentVmError('policy_invalid'). An upstream that does
   * not start does not fail registration: its tools are absent, and the report says why.
   */
  register(profile: Profile): Promise<RegisterReport>;
  /** Forgets a profile: its sessions keep working only as deny-everything. */
  unregister(profile: string): Promise<void>;
  /**
   * A fresh bearer token bound to `profile` + `sessionKey`, valid until revoked or `ttlMs`
   * (default 12 h). Call it per turn and `revoke` at the end of the turn. A profile with no
   * policy gets an endpoint that denies everything.
   */
  sessionEndpoint(binding: { profile: string; sessionKey: string; ttlMs?: number }): McpEndpoint;
  /** Invalidates every token of a session. */
  revoke(sessionKey: string): void;
  /** Accepts the current definitions of `tools` (`<server>.<tool>`; default every mismatched one) as the new pins. */
  repin(profile: string, tools?: string[]): Promise<string[]>;
  /** Redacts every secret value the proxy has resolved (for replies and files, with the gateway's own list). */
  redactor(): Redactor;
  /** Waits until every audit row so far is written. */
  flush(): Promise<void>;
  /** Stops listening, closes upstreams (sleeps their sandboxes), flushes the audit queue. Idempotent. */
  close(): Promise<void>;
}

interface Binding {
  profile: string;
  sessionKey: string;
  /** performance.now() after which the token is refused. */
  expires: number;
}

interface ProfileRuntime {
  profile: Profile;
  policy: CompiledPolicy | undefined;
  policyError: string | undefined;
  upstreams: Map<string, Upstream>;
  pins: Map<string, string>;
  /** `<ref>` → definition hash already reported as a mismatch, so a mismatch is audited once. */
  reported: Map<string, string>;
}

const UNKNOWN_TOOL = ErrorCode.InvalidParams; // -32602
const MAX_SUBJECT = 200;

/** A JSON-RPC error whose wire message is exactly `message` (McpError would prefix "MCP error <code>:"). */
function rpcError(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function errorResult(text: string): CallToolResult {
  return { content: [{ type: 'text', text }], isError: true };
}

function tokenKey(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Deep copy of a JSON value with every string redacted. */
function redactDeep<T>(value: T, redact: Redactor): T {
  if (redact.size === 0) return value;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return redact(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}

export async function createMcpProxy(options: McpProxyOptions): Promise<McpProxy> {
  const log = options.logger.child({ component: 'mcp.proxy' });
  // In sync mode each decision row is awaited, so it must not linger waiting for company.
  const auditQueue: AuditQueue = createAuditQueue(options.audit, { logger: options.logger, ...(options.auditSync ? { lingerMs: 0 } : {}) });
  const pins: PinStore = createPinStore(options.db);
  const profiles = new Map<string, ProfileRuntime>();
  const tokens = new Map<string, Binding>();
  const ttlMs = options.definitionsTtlMs ?? 60_000;
  const approvalTimeoutMs = options.approvalTimeoutMs ?? 5 * 60_000;
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const secretsSeen = new Map<string, NamedSecret>();
  let redactor: Redactor = createRedactor([]);
  let closing: Promise<void> | undefined;
  let lastAuthRow = -Infinity;
  let authSuppressed = 0;

  const record = (entry: AuditEntry): Promise<boolean> => auditQueue.push(entry);
  const recordLater = (entry: AuditEntry): void => void record(entry);

  function noteSecret(s: NamedSecret): void {
    if (secretsSeen.get(s.name)?.value === s.value) return;
    secretsSeen.set(s.name, s);
    redactor = createRedactor([...secretsSeen.values()]);
  }

  // ---------------------------------------------------------------- policy & pins

  async function checkPins(rt: ProfileRuntime, up: Upstream, report?: RegisterReport): Promise<void> {
    const policy = rt.policy;
    if (!policy || !up.tools) return;
    for (const [name, t] of up.tools) {
      const pt = policy.byUpstream(up.server, name);
      if (!pt) continue;
      let pin = rt.pins.get(pt.ref);
      if (pin === undefined) {
        pin = await pins.pinIfAbsent(rt.profile.id, pt.ref, t.hash);
        rt.pins.set(pt.ref, pin);
        if (pin === t.hash) {
          report?.pinned.push(pt.ref);
          recordLater({ profile: rt.profile.id, action: 'tool.pin', decision: 'ok', subject: pt.ref, data: { policyHash: policy.hash, definitionHash: t.hash } });
        }
      }
      if (pin !== t.hash) {
        report?.mismatched.push(pt.ref);
        if (rt.reported.get(pt.ref) !== t.hash) {
          rt.reported.set(pt.ref, t.hash);
          log.warn({ profile: rt.profile.id, tool: pt.ref }, 'tool definition changed since it was pinned; hidden until re-pinned');
          recordLater({
            profile: rt.profile.id, action: 'tool.pin_mismatch', decision: 'deny', subject: pt.ref,
            reason: 'the tool definition changed since it was pinned; hidden and denied until re-pinned',
            data: { policyHash: policy.hash, pinned: pin, seen: t.hash },
          });
        }
      } else {
        rt.reported.delete(pt.ref);
      }
    }
  }

  /** Refreshes one upstream and checks pins; never throws (the failure is in `up.reason`). */
  async function refresh(rt: ProfileRuntime, up: Upstream, report?: RegisterReport): Promise<void> {
    try {
      await up.refresh();
      await checkPins(rt, up, report);
    } catch (err) {
      log.debug({ profile: rt.profile.id, server: up.server, err: redactor(describeError(err)) }, 'upstream refresh failed');
    }
  }

  /** Why a policy tool is not callable right now, or undefined when it is. */
  function hiddenReason(rt: ProfileRuntime, t: PolicyTool): string | undefined {
    const up = rt.upstreams.get(t.server);
    if (!up) return `tool server ${t.server} is not configured`;
    if (!up.tools) return `tool server ${t.server} is unavailable: ${up.reason ?? 'its tools could not be listed'}`;
    const def = up.tools.get(t.tool);
    if (!def) return `tool server ${t.server} does not offer ${t.tool}`;
    const pin = rt.pins.get(t.ref);
    if (pin === undefined) return 'the tool definition is not pinned';
    if (pin !== def.hash) return 'the tool definition changed since it was pinned';
    return undefined;
  }

  function exposedTool(t: PolicyTool, def: Tool): Tool {
    // Only what the pin covers reaches the agent.
    const out: Tool = { name: t.exposed, inputSchema: redactDeep(def.inputSchema, redactor) };
    if (def.description !== undefined) out.description = redactor(def.description);
    return out;
  }

  // ---------------------------------------------------------------- decisions

  async function listTools(b: Binding): Promise<{ tools: Tool[] }> {
    const rt = profiles.get(b.profile);
    const policy = rt?.policy;
    if (!rt || !policy) {
      const reason = rt?.policyError ?? `no tool policy is registered for profile ${b.profile}`;
      recordLater({ profile: b.profile, action: 'tool.list', decision: 'deny', reason, data: { session: b.sessionKey, policyHash: null } });
      return { tools: [] };
    }
    if (!auditQueue.healthy) {
      recordLater({ profile: b.profile, action: 'tool.list', decision: 'deny', reason: auditQueue.problem ?? 'audit unavailable', data: { session: b.sessionKey, policyHash: policy.hash } });
      return { tools: [] };
    }
    await Promise.all([...policy.servers].map((s) => rt.upstreams.get(s)).filter((u): u is Upstream => u !== undefined).map((u) => refresh(rt, u)));
    const tools: Tool[] = [];
    const hidden: Array<{ tool: string; reason: string }> = [];
    for (const t of policy.tools.values()) {
      const why = hiddenReason(rt, t);
      if (why !== undefined) hidden.push({ tool: t.ref, reason: why });
      else tools.push(exposedTool(t, rt.upstreams.get(t.server)!.tools!.get(t.tool)!.def));
    }
    recordLater({
      profile: b.profile, action: 'tool.list', decision: 'allow',
      reason: hidden.length > 0 ? `${hidden.length} allowed tool(s) hidden` : null,
      data: { session: b.sessionKey, policyHash: policy.hash, tools: tools.map((t) => t.name), hidden },
    });
    return { tools };
  }

  async function callTool(b: Binding, name: unknown, rawArgs: unknown, signal: AbortSignal | undefined): Promise<CallToolResult> {
    const args = rawArgs !== null && typeof rawArgs === 'object' && !Array.isArray(rawArgs) ? (rawArgs as Record<string, unknown>) : {};
    const shown = typeof name === 'string' ? name.slice(0, MAX_SUBJECT) : String(name);
    const rt = profiles.get(b.profile);
    const policy = rt?.policy;
    const argsHash = hashOf(args);
    const data = { session: b.sessionKey, policyHash: policy?.hash ?? null, argsHash };
    const deny = (reason: string, subject: string, unknown: boolean): CallToolResult => {
      recordLater({ profile: b.profile, action: 'tool.call', decision: 'deny', reason, subject, data });
      if (unknown) throw rpcError(UNKNOWN_TOOL, `Unknown tool: ${shown}`);
      return errorResult(`denied: ${reason}`);
    };

    if (!rt || !policy) return deny(rt?.policyError ?? `no tool policy is registered for profile ${b.profile}`, shown, true);
    const t = typeof name === 'string' ? policy.lookup(name) : undefined;
    if (!t) {
      const denied = policy.policy.deny.find((ref) => {
        const [server, ...rest] = ref.split('.');
        return exposedName(server!, rest.join('.')) === name;
      });
      const why = denied !== undefined ? `${denied} is denied by tools.deny` : 'not in the tool allowlist';
      return deny(why, shown, true);
    }
    const up = rt.upstreams.get(t.server);
    if (up && (!up.tools || performance.now() - up.listedAt > ttlMs)) await refresh(rt, up);
    const hidden = hiddenReason(rt, t);
    if (hidden !== undefined) return deny(hidden, t.ref, true);
    if (!auditQueue.healthy) return deny(auditQueue.problem ?? 'the audit trail is unavailable', t.ref, false);

    if (t.needsApproval) {
      const a = await askApprover(options.approve, { profile: b.profile, sessionKey: b.sessionKey, tool: t.ref, argsHash, arguments: redactDeep(args, redactor) }, approvalTimeoutMs);
      recordLater({ profile: b.profile, action: 'tool.approval', decision: a.decision, reason: a.reason, subject: t.ref, data });
      if (a.decision !== 'approved') return deny(`approval ${a.decision === 'timeout' ? 'timed out' : 'denied'}: ${a.reason}`, t.ref, false);
    }

    const allowRow: AuditEntry = { profile: b.profile, action: 'tool.call', decision: 'allow', subject: t.ref, data };
    if (options.auditSync) {
      if (!(await record(allowRow))) return deny(auditQueue.problem ?? 'the audit row could not be written', t.ref, false);
    } else {
      recordLater(allowRow);
    }

    try {
      const result = await up!.call(t.tool, args, signal);
      return redactDeep(
        {
          content: Array.isArray(result.content) ? result.content : [],
          ...(result.structuredContent !== undefined ? { structuredContent: result.structuredContent } : {}),
          ...(result.isError ? { isError: true } : {}),
        },
        redactor,
      );
    } catch (err) {
      const timedOut = err instanceof McpError && err.code === ErrorCode.RequestTimeout;
      const why = timedOut
        ? `upstream timed out after ${options.upstreamTimeoutMs} ms`
        : `upstream error: ${redactor(describeError(err)).slice(0, 300)}`;
      log.warn({ profile: b.profile, tool: t.ref, reason: why }, 'tool call failed upstream');
      recordLater({ profile: b.profile, action: 'tool.call', decision: 'deny', reason: why, subject: t.ref, data: { ...data, stage: 'upstream' } });
      return errorResult(`tool call failed: ${why}`);
    }
  }

  // ---------------------------------------------------------------- HTTP

  function authenticate(token: string | undefined, req: IncomingMessage): Binding | undefined {
    const key = token ? tokenKey(token) : undefined;
    let binding = key ? tokens.get(key) : undefined;
    if (binding && binding.expires < performance.now()) {
      tokens.delete(key!);
      binding = undefined;
    }
    if (binding) return binding;
    // At most one row a second: a flood of bad requests must not flood the trail.
    const now = performance.now();
    if (now - lastAuthRow >= 1000) {
      lastAuthRow = now;
      log.warn({ remote: req.socket.remoteAddress, suppressed: authSuppressed }, 'MCP request without a valid token');
      recordLater({
        action: 'mcp.auth', decision: 'deny', reason: token ? 'unknown, expired or revoked token' : 'no bearer token',
        data: { remote: req.socket.remoteAddress ?? null, suppressed: authSuppressed },
      });
      authSuppressed = 0;
    } else {
      authSuppressed++;
    }
    return undefined;
  }

  const httpServer = await startMcpHttpServer<Binding>(
    options.listen,
    { authenticate, list: listTools, call: callTool },
    { maxBodyBytes: maxBody, logger: log },
  );
  const url = httpServer.url;
  log.info({ url }, 'MCP proxy listening');

  // ---------------------------------------------------------------- lifecycle

  async function closeUpstreams(rt: ProfileRuntime | undefined): Promise<void> {
    if (!rt) return;
    await Promise.allSettled([...rt.upstreams.values()].map((u) => u.close()));
  }

  const proxy: McpProxy = {
    url,

    async register(profile) {
      if (closing) throw new AgentVmError('proxy_closed', 'the MCP proxy is closed', { status: 503 });
      const id = typeof profile?.id === 'string' ? profile.id : String(profile?.id);
      const previous = profiles.get(id);
      let policy: CompiledPolicy;
      try {
        policy = compilePolicy(policyFromProfile(profile));
      } catch (err) {
        const reason = describeError(err);
        profiles.set(id, { profile, policy: undefined, policyError: reason, upstreams: new Map(), pins: new Map(), reported: new Map() });
        await closeUpstreams(previous);
        log.error({ profile: id, reason }, 'tool policy unreadable; every tool is denied');
        await record({ profile: id, action: 'policy.load', decision: 'deny', reason });
        throw err instanceof AgentVmError ? err : new AgentVmError('policy_invalid', reason, { status: 400, cause: err });
      }
      const rt: ProfileRuntime = {
        profile,
        policy,
        policyError: undefined,
        upstreams: new Map(),
        pins: await pins.load(id),
        reported: new Map(),
      };
      for (const s of profile.tools.servers) {
        // A server without any allowed tool is never started: it exposes nothing.
        if (!policy.servers.has(s.name)) continue;
        rt.upstreams.set(
          s.name,
          createUpstream({
            profile, server: s, secrets: options.secrets, record: recordLater, logger: options.logger,
            timeoutMs: options.upstreamTimeoutMs, retryMs: options.upstreamRetryMs ?? 5000, sandbox: options.sandbox,
            onSecret: noteSecret, redact: (t) => redactor(t),
          }),
        );
      }
      profiles.set(id, rt);
      await closeUpstreams(previous);
      await record({ profile: id, action: 'policy.load', decision: 'ok', data: { policyHash: policy.hash, tools: [...policy.tools.values()].map((t) => t.ref) } });
      const report: RegisterReport = { profile: id, policyHash: policy.hash, upstreams: [], pinned: [], mismatched: [] };
      await Promise.all([...rt.upstreams.values()].map((u) => refresh(rt, u, report)));
      for (const u of rt.upstreams.values()) {
        report.upstreams.push(u.reason === undefined ? { server: u.server, state: u.state } : { server: u.server, state: u.state, reason: u.reason });
      }
      return report;
    },

    async unregister(profile) {
      const rt = profiles.get(profile);
      profiles.delete(profile);
      await closeUpstreams(rt);
    },

    sessionEndpoint({ profile, sessionKey, ttlMs }) {
      if (closing) throw new AgentVmError('proxy_closed', 'the MCP proxy is closed', { status: 503 });
      const token = randomBytes(32).toString('base64url');
      tokens.set(tokenKey(token), { profile, sessionKey, expires: performance.now() + (ttlMs ?? 12 * 3600_000) });
      if (!profiles.get(profile)?.policy) log.warn({ profile }, 'session endpoint for a profile without a tool policy: every tool is denied');
      return { url, headers: [{ name: 'Authorization', value: `Bearer ${token}` }] };
    },

    revoke(sessionKey) {
      for (const [k, b] of tokens) if (b.sessionKey === sessionKey) tokens.delete(k);
    },

    async repin(profile, only) {
      const rt = profiles.get(profile);
      if (!rt?.policy) throw new AgentVmError('policy_invalid', `profile ${profile} has no tool policy to re-pin`, { status: 400 });
      const policy = rt.policy;
      await Promise.all([...rt.upstreams.values()].map((u) => refresh(rt, u)));
      const updates: Array<{ tool: string; hash: string }> = [];
      for (const t of policy.tools.values()) {
        if (only && !only.includes(t.ref)) continue;
        const def = rt.upstreams.get(t.server)?.tools?.get(t.tool);
        if (!def || rt.pins.get(t.ref) === def.hash) continue;
        updates.push({ tool: t.ref, hash: def.hash });
      }
      await pins.replace(profile, updates);
      for (const u of updates) {
        rt.pins.set(u.tool, u.hash);
        rt.reported.delete(u.tool);
        await record({ profile, action: 'tool.pin', decision: 'ok', subject: u.tool, reason: 're-pinned by a person', data: { policyHash: policy.hash, definitionHash: u.hash } });
      }
      return updates.map((u) => u.tool);
    },

    redactor: () => redactor,

    flush: () => auditQueue.flush(),

    close() {
      closing ??= (async () => {
        tokens.clear();
        await httpServer.close();
        await Promise.allSettled([...profiles.values()].map((rt) => closeUpstreams(rt)));
        profiles.clear();
        await auditQueue.close();
      })();
      return closing;
    },
  };
  return proxy;
}
