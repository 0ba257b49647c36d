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
 *   - a tool that needs approval waits for `approve` (no approver, timeout, error → denied); the
 *     approver's deadline is the only one (AGENTVM_APPROVAL_TIMEOUT_SECONDS), and a cancelled
 *     call cancels its request.
 *   - upstream errors and timeouts: an error result (isError), never a retry.
 *   - secret values never leave the gateway: they are used in upstream connections only, and
 *     any that an upstream echoes back is redacted from results and descriptions.
 *   - every decision is an audit row (`tool.list`, `tool.call`, `tool.approval`,
 *     `tool.pin`, `tool.pin_mismatch`, `secret.resolve`, `upstream.start`) with the policy hash;
 *     arguments appear only as `argsHash`.
 *
 * Audit rows go through a queue (audit-queue.ts) that batches them. An allowed call waits for its
 * own row before it is forwarded (an executed call always has its row; no row, no call); denials
 * and listings are written behind. While rows cannot be written, every call is denied, with a
 * reason that names no internals. `auditSync: true` waits for every decision row.
 *
 * Tokens (mcp-tokens.ts) are per turn: `sessionEndpoint` mints one that lives `ttlMs` (default
 * 10 min; the gateway passes the turn's deadline plus a margin) and returns its `release`.
 * Ending a token aborts the calls still running in its name (an approval wait included).
 *
 * Deliberately left out: resources, prompts, sampling and server-to-agent notifications (the
 * proxy exposes tools only); stateful MCP sessions (each request stands alone).
 */
import type { IncomingMessage } from 'node:http';
import { ErrorCode, McpError, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Db } from '../store/index.js';
import { pinRepo, type PinRepo } from '../store/pins.js';
import { storableDeep } from '../text.js';
import { askApprover, type Approver } from './approvals.js';
import { tryHashOf, type AuditEntry, type AuditLog } from './audit.js';
import { AUDIT_UNAVAILABLE, createAuditQueue, type AuditQueue } from './audit-queue.js';
import { createBuiltinUpstream, isBuiltinUpstream, type JobToolHost } from './mcp-builtin.js';
import { startMcpHttpServer } from './mcp-http.js';
import { storedDefinition } from './mcp-pins.js';
import { createPinGuard, deniedRuntime, errorResult, hiddenReason, linkSignals, pinMismatch, redactDeep, rpcError, type ProfileRuntime } from './mcp-runtime.js';
import { createTokenTable, type TokenBinding } from './mcp-tokens.js';
import { createUpstream, type ToolSandboxOptions, type Upstream, type UpstreamState } from './mcp-upstreams.js';
import { compilePolicy, exposedName, policyFromProfile, type CompiledPolicy, type PolicyTool } from './policy.js';
import type { Profile } from './profile.js';
import { BUILTIN_SERVER } from './profile-jobs.js';
import { createRedactor, type Redactor } from './redact.js';
import type { NamedSecret, SecretResolver } from './secrets.js';

export type { ToolSandboxOptions } from './mcp-upstreams.js';

export interface McpProxyOptions {
  /** Where to listen. The gateway binds the agent network's bridge gateway address (SandboxHandle.hostAddress). */
  listen: { host: string; port: number };
  /** Tool pins (`store.pins`). */
  pins?: PinRepo;
  /** @deprecated pass `pins: store.pins`; accepted until every caller has moved. */
  db?: Db;
  audit: AuditLog;
  secrets: SecretResolver;
  logger: Logger;
  /** Decides calls to tools that need approval. Absent: such calls are denied. */
  approve?: Approver;
  /** Per upstream request (connect, tools/list, tools/call). */
  upstreamTimeoutMs: number;
  /**
   * A safety net for approvers without a deadline of their own. Default none: the approver (the
   * broker, AGENTVM_APPROVAL_TIMEOUT_SECONDS) is the one timer, so the prompt and the call end together.
   */
  approvalTimeoutMs?: number;
  /** How long a token lives when `sessionEndpoint` is not told. Default 10 minutes. */
  tokenTtlMs?: number;
  /** A mismatched pin is re-read from the store (a re-pin by another process) at most this often per tool. Default 1 s. */
  pinRecheckMs?: number;
  /** Where local (command) tool servers run. Absent: they never start. */
  sandbox?: ToolSandboxOptions;
  /** Re-list an upstream's tools before a call when the last listing is older than this. Default 60 s. */
  definitionsTtlMs?: number;
  /** A failed upstream is retried at most this often. Default 5 s. */
  upstreamRetryMs?: number;
  /** Wait for every decision row, denials and listings too. Default false: only an allowed call waits for its row. */
  auditSync?: boolean;
  /** Largest request body accepted. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Counts each call's decision (allowed, denied, approval). */
  metrics?: Metrics;
  /** Runs `agentvm.run_job` for profiles with `jobs.enabled` (mcp-builtin.ts). Absent: that tool is hidden. */
  jobs?: JobToolHost;
}

/** What the gateway puts in ACP session/new: `{ type: 'http', name: 'agent-vm', url, headers }`. */
export interface McpEndpoint {
  url: string;
  headers: Array<{ name: string; value: string }>;
}

/** An endpoint for one turn: its token stops working at `release()` or after its ttl, whichever is first. */
export interface McpSessionEndpoint extends McpEndpoint {
  /** Revokes this endpoint's token. Idempotent; call it when the turn ends, however it ends. */
  release(): void;
  /** Refuses the token until `resume` (between turns of one session). */
  suspend(): void;
  /** Honours it again for a turn; false when it was revoked meanwhile. */
  resume(turn: { turnId?: string; ttlMs: number }): boolean;
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
   * A fresh bearer token bound to `profile` + `sessionKey` (+ `turnId`, carried into audit rows),
   * valid until `release()`, `revoke`, `revokeAll`, close, or `ttlMs` (default `tokenTtlMs`).
   * Mint one per turn and release it when the turn ends. A profile with no policy gets an
   * endpoint that denies everything.
   */
  sessionEndpoint(binding: { profile: string; sessionKey: string; turnId?: string; ttlMs?: number; lifetimeMs?: number }): McpSessionEndpoint;
  /** Invalidates every token of a session. */
  revoke(sessionKey: string): void;
  /** Invalidates every token (the unit stops, the sandbox sleeps). */
  revokeAll(): void;
  /** Live tokens (expired ones swept first): what a leak would grow. */
  readonly activeTokens: number;
  /**
   * Accepts the current definitions of `tools` (`<server>.<tool>`; default every mismatched one)
   * as the new pins, as `by` (default `local:proxy`), audited. Returns the tools re-pinned.
   */
  repin(profile: string, tools?: string[], by?: string): Promise<string[]>;
  /** Redacts every secret value the proxy has resolved (for replies and files, with the gateway's own list). */
  redactor(): Redactor;
  /** Waits until every audit row so far is written. */
  flush(): Promise<void>;
  /** Stops listening, closes upstreams (sleeps their sandboxes), flushes the audit queue. Idempotent. */
  close(): Promise<void>;
}

type Binding = TokenBinding;

const UNKNOWN_TOOL = ErrorCode.InvalidParams; // -32602
const MAX_SUBJECT = 200;

export async function createMcpProxy(options: McpProxyOptions): Promise<McpProxy> {
  const log = options.logger.child({ component: 'mcp.proxy' });
  // In sync mode each decision row is awaited, so it must not linger waiting for company.
  const auditQueue: AuditQueue = createAuditQueue(options.audit, { logger: options.logger, ...(options.auditSync ? { lingerMs: 0 } : {}) });
  const pinSource = options.pins ?? (options.db ? pinRepo(options.db) : undefined);
  if (!pinSource) throw new AgentVmError('config_invalid', 'the MCP proxy needs the tool pin store (pins: store.pins)', { status: 500 });
  const pins: PinRepo = pinSource;
  const profiles = new Map<string, ProfileRuntime>();
  const tokens = createTokenTable();
  const ttlMs = options.definitionsTtlMs ?? 60_000;
  const tokenTtlMs = options.tokenTtlMs ?? 10 * 60_000;
  const pinRecheckMs = options.pinRecheckMs ?? 1000;
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const secretsSeen = new Map<string, NamedSecret>();
  let redactor: Redactor = createRedactor([]);
  let closing: Promise<void> | undefined;
  let lastAuthRow = -Infinity;
  let authSuppressed = 0;

  const record = (entry: AuditEntry): Promise<boolean> => auditQueue.push(entry, { wait: true });
  const recordLater = (entry: AuditEntry): void => void (options.auditSync ? record(entry) : auditQueue.push(entry));

  const guard = createPinGuard({ pins, recordLater, log, recheckMs: pinRecheckMs });

  function noteSecret(s: NamedSecret): void {
    if (secretsSeen.get(s.name)?.value === s.value) return;
    secretsSeen.set(s.name, s);
    redactor = createRedactor([...secretsSeen.values()]);
  }

  // ---------------------------------------------------------------- policy & pins

  /** Refreshes one upstream and checks pins; never throws (the failure is in `up.reason`). */
  async function refresh(rt: ProfileRuntime, up: Upstream, report?: RegisterReport): Promise<void> {
    try {
      await up.refresh();
      await guard.check(rt, up, report);
    } catch (err) {
      log.debug({ profile: rt.profile.id, server: up.server, err: redactor(describeError(err)) }, 'upstream refresh failed');
    }
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
      recordLater({ profile: b.profile, action: 'tool.list', decision: 'deny', reason, data: { session: b.sessionKey, turn: b.turnId ?? null, policyHash: null } });
      return { tools: [] };
    }
    if (!auditQueue.healthy) {
      recordLater({ profile: b.profile, action: 'tool.list', decision: 'deny', reason: auditQueue.problem ?? AUDIT_UNAVAILABLE, data: { session: b.sessionKey, turn: b.turnId ?? null, policyHash: policy.hash } });
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
      data: { session: b.sessionKey, turn: b.turnId ?? null, policyHash: policy.hash, tools: tools.map((t) => t.name), hidden },
    });
    return { tools };
  }

  async function callTool(b: Binding, name: unknown, rawArgs: unknown, requestSignal: AbortSignal): Promise<CallToolResult> {
    // The call ends when its request is cancelled, or when its token does (the turn ended).
    const linked = linkSignals([requestSignal, b.signal]);
    try {
      return await decideCall(b, name, rawArgs, linked.signal);
    } finally {
      linked.dispose();
    }
  }

  async function decideCall(b: Binding, name: unknown, rawArgs: unknown, signal: AbortSignal): Promise<CallToolResult> {
    const args = rawArgs !== null && typeof rawArgs === 'object' && !Array.isArray(rawArgs) ? (rawArgs as Record<string, unknown>) : {};
    const shown = typeof name === 'string' ? name.slice(0, MAX_SUBJECT) : String(name);
    const rt = profiles.get(b.profile);
    const policy = rt?.policy;
    // Arguments too deep to hash cannot be audited, so they are never forwarded.
    const argsHash = tryHashOf(args);
    const data = { session: b.sessionKey, turn: b.turnId ?? null, policyHash: policy?.hash ?? null, argsHash: argsHash ?? null };
    const deny = (reason: string, subject: string, unknown: boolean): CallToolResult => {
      options.metrics?.toolCall(b.profile, 'denied');
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
    let hidden = hiddenReason(rt, t);
    if (hidden !== undefined && pinMismatch(rt, t)) {
      await guard.recheck(rt, t.ref).catch((err: unknown) => log.warn({ profile: b.profile, tool: t.ref, err: describeError(err) }, 'could not re-read a tool pin'));
      hidden = hiddenReason(rt, t);
    }
    if (hidden !== undefined) return deny(hidden, t.ref, true);
    if (!auditQueue.healthy) return deny(auditQueue.problem ?? AUDIT_UNAVAILABLE, t.ref, false);
    if (argsHash === undefined) return deny('the arguments cannot be audited (nested too deeply)', t.ref, false);

    if (t.needsApproval) {
      options.metrics?.toolCall(b.profile, 'approval');
      // What the person reads: bounded first (storableDeep), then without secret values.
      const shownArgs = redactDeep(storableDeep(args, { maxDepth: 8 }) as Record<string, unknown>, redactor);
      const a = await askApprover(
        options.approve,
        { profile: b.profile, sessionKey: b.sessionKey, tool: t.ref, argsHash, arguments: shownArgs },
        { ...(options.approvalTimeoutMs !== undefined ? { timeoutMs: options.approvalTimeoutMs } : {}), signal },
      );
      recordLater({ profile: b.profile, action: 'tool.approval', decision: a.decision, reason: a.reason, subject: t.ref, data });
      if (a.decision !== 'approved') return deny(`approval ${a.decision === 'timeout' ? 'timed out' : 'denied'}: ${a.reason}`, t.ref, false);
    }

    // No row, no call: the allow row is written (batched with whatever else is queued) before the call leaves.
    const allowRow: AuditEntry = { profile: b.profile, action: 'tool.call', decision: 'allow', subject: t.ref, data };
    if (!(await record(allowRow))) return deny(auditQueue.problem ?? AUDIT_UNAVAILABLE, t.ref, false);
    options.metrics?.toolCall(b.profile, 'allowed');

    try {
      const result = isBuiltinUpstream(up)
        ? await up.callAs({ profile: b.profile, sessionKey: b.sessionKey, turnId: b.turnId }, t.tool, args, signal)
        : await up!.call(t.tool, args, signal);
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
    const binding = token ? tokens.lookup(token) : undefined;
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
        profiles.set(id, deniedRuntime(profile, reason));
        await closeUpstreams(previous);
        log.error({ profile: id, reason }, 'tool policy unreadable; every tool is denied');
        await record({ profile: id, action: 'policy.load', decision: 'deny', reason });
        throw err instanceof AgentVmError ? err : new AgentVmError('policy_invalid', reason, { status: 400, cause: err });
      }
      const stored = await pins.list(id);
      const rt: ProfileRuntime = {
        profile,
        policy,
        policyError: undefined,
        upstreams: new Map(),
        pins: new Map(stored.map((p) => [p.tool, p.hash])),
        reported: new Map(),
        rechecked: new Map(),
        undescribed: new Set(stored.filter((p) => p.definition === null).map((p) => p.tool)),
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
      if (policy.servers.has(BUILTIN_SERVER)) rt.upstreams.set(BUILTIN_SERVER, createBuiltinUpstream(profile, options.jobs));
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

    sessionEndpoint({ profile, sessionKey, turnId, ttlMs, lifetimeMs }) {
      if (closing) throw new AgentVmError('proxy_closed', 'the MCP proxy is closed', { status: 503 });
      const minted = tokens.mint({ profile, sessionKey, ...(turnId !== undefined ? { turnId } : {}), ttlMs: ttlMs ?? tokenTtlMs, ...(lifetimeMs ? { lifetimeMs } : {}) });
      if (!profiles.get(profile)?.policy) log.warn({ profile }, 'session endpoint for a profile without a tool policy: every tool is denied');
      return { url, headers: [{ name: 'Authorization', value: `Bearer ${minted.token}` }], release: minted.release, suspend: minted.suspend, resume: minted.resume };
    },

    revoke(sessionKey) {
      tokens.revokeSession(sessionKey);
    },

    revokeAll() {
      tokens.revokeAll();
    },

    get activeTokens() {
      return tokens.size;
    },

    async repin(profile, only, by = 'local:proxy') {
      const rt = profiles.get(profile);
      if (!rt?.policy) throw new AgentVmError('policy_invalid', `profile ${profile} has no tool policy to re-pin`, { status: 400 });
      const policy = rt.policy;
      await Promise.all([...rt.upstreams.values()].map((u) => refresh(rt, u)));
      const updates: Array<{ tool: string; hash: string; definition: unknown; from: string | null }> = [];
      for (const t of policy.tools.values()) {
        if (only && !only.includes(t.ref)) continue;
        const def = rt.upstreams.get(t.server)?.tools?.get(t.tool);
        if (!def || rt.pins.get(t.ref) === def.hash) continue;
        updates.push({ tool: t.ref, hash: def.hash, definition: storedDefinition(def.def), from: rt.pins.get(t.ref) ?? null });
      }
      // The rows first: a re-pin nobody can see in the trail does not happen.
      for (const u of updates) {
        const ok = await record({ profile, action: 'tool.pin', decision: 'ok', subject: u.tool, reason: `re-pinned by ${by}`, data: { by, policyHash: policy.hash, from: u.from, definitionHash: u.hash } });
        if (!ok) throw new AgentVmError('audit_unavailable', `nothing was re-pinned: ${AUDIT_UNAVAILABLE}`, { status: 503 });
      }
      await pins.replace(profile, updates, by);
      for (const u of updates) {
        rt.pins.set(u.tool, u.hash);
        rt.reported.delete(u.tool);
      }
      return updates.map((u) => u.tool);
    },

    redactor: () => redactor,

    flush: () => auditQueue.flush(),

    close() {
      closing ??= (async () => {
        tokens.revokeAll();
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
