/**
 * The proxy's side of a profile's tool servers: one MCP client per declared server, connected
 * gateway-side with secrets resolved here and nowhere else.
 *
 *   - `url` servers: Streamable HTTP, headers with `secret://` references substituted;
 *   - `command` servers: started in a sandbox of their own through the SandboxDriver (agent id
 *     `<profile>-mcp-<server>`, no network, stdin attached, MCP stdio framing over it), never as
 *     a process on the gateway host. Its env may carry secrets: that sandbox is the tool server's,
 *     not the agent's, and the agent cannot reach it.
 *
 * A server whose secret cannot be resolved does not start; the reason (by secret name only) is
 * logged and audited. A failed server is retried at most every `retryMs` on demand.
 */
import { createHash } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ErrorCode, McpError, ToolListChangedNotificationSchema, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import { AgentVmError, describeError, isAgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { AGENT_ID_PATTERN, DEFAULT_LIMITS } from '../sandbox/spec.js';
import type { RuntimeSetting, SandboxDriver, SandboxLimits } from '../sandbox/types.js';
import type { AuditEntry } from './audit.js';
import { leanToolCall, type LeanCallTarget } from './mcp-call.js';
import { createUpstreamFetch } from './mcp-fetch.js';
import { SandboxStdioTransport } from './mcp-stdio.js';
import { definitionHash } from './mcp-pins.js';
import type { Profile, ToolServer } from './profile.js';
import { substituteSecrets, type NamedSecret, type SecretResolver } from './secrets.js';
import { assertRuntimeAllowed } from './tiers.js';

/** Where local tool servers run. Without it, a `command` server never starts. */
export interface ToolSandboxOptions {
  driver: SandboxDriver;
  /** Image for tool servers whose profile names none (Config.image). */
  image: string;
  /** Runtime for profiles that name none (Config.runtime); checked against the tier. */
  runtime: RuntimeSetting;
  limits?: SandboxLimits;
}

export interface UpstreamTool {
  def: Tool;
  /** definitionHash(def): what is compared with the pin. */
  hash: string;
}

export type UpstreamState = 'idle' | 'connecting' | 'ready' | 'failed' | 'closed';

export interface Upstream {
  readonly server: string;
  readonly kind: 'http' | 'sandbox';
  readonly state: UpstreamState;
  /** Why the server is not ready; names secrets, never values. */
  readonly reason: string | undefined;
  /** The tools as last listed, by the server's own names; undefined before the first listing. */
  readonly tools: ReadonlyMap<string, UpstreamTool> | undefined;
  /** performance.now() of the last successful listing. */
  readonly listedAt: number;
  /** Connects if needed and re-lists the tools. Throws an AgentVmError('upstream_unavailable') with the reason. */
  refresh(): Promise<void>;
  /** tools/call with the proxy's timeout. Throws McpError (incl. RequestTimeout) or AgentVmError. */
  call(tool: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<CallToolResult>;
  close(): Promise<void>;
}

export interface UpstreamContext {
  profile: Profile;
  server: ToolServer;
  secrets: SecretResolver;
  record: (entry: AuditEntry) => void;
  logger: Logger;
  timeoutMs: number;
  retryMs: number;
  sandbox: ToolSandboxOptions | undefined;
  /** Every secret value used for this server, so the proxy can redact it from what flows back. */
  onSecret: (s: NamedSecret) => void;
  redact: (text: string) => string;
  /** Longest answer read from a remote tool server (mcp-fetch.ts). Default 16 MiB. */
  maxResponseBytes?: number;
}

const MAX_LIST_PAGES = 20;
const CLIENT_INFO = { name: 'agent-vm-mcp-proxy', version: '1.0.0' };

/** `<profile>-mcp-<server>`, shortened with a hash when it would not be a valid agent id. */
export function toolSandboxId(profile: string, server: string): string {
  const id = `${profile}-mcp-${server}`;
  if (AGENT_ID_PATTERN.test(id)) return id;
  const h = createHash('sha256').update(id).digest('hex').slice(0, 10);
  return `${profile.slice(0, 40)}-mcp-${h}`;
}

function unavailable(server: string, reason: string, cause?: unknown): AgentVmError {
  return new AgentVmError('upstream_unavailable', `tool server ${server} is unavailable: ${reason}`, {
    status: 503,
    retryable: true,
    ...(cause === undefined ? {} : { cause }),
  });
}

export function createUpstream(ctx: UpstreamContext): Upstream {
  const { profile, server } = ctx;
  const log = ctx.logger.child({ component: 'mcp.upstream', profile: profile.id, server: server.name });
  let state: UpstreamState = 'idle';
  let reason: string | undefined;
  let client: Client | undefined;
  let tools: Map<string, UpstreamTool> | undefined;
  let listedAt = 0;
  let lastAttempt = -Infinity;
  let connecting: Promise<Client> | undefined;
  let refreshing: Promise<void> | undefined;
  let sandboxId: string | undefined;
  /** A remote server's session, for calls sent without the SDK client (mcp-call.ts). */
  let lean: LeanCallTarget | undefined;

  const base = { profile: profile.id, subject: server.name };
  // A remote server's answers come through a bounded fetch on keep-alive connections (mcp-fetch.ts).
  const http = server.url !== undefined ? createUpstreamFetch({ maxBytes: ctx.maxResponseBytes ?? 16 * 1024 * 1024 }) : undefined;

  async function resolveAll(values: Record<string, string> | undefined): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(values ?? {})) {
      const r = await substituteSecrets(v, profile.secrets, ctx.secrets);
      for (const s of r.used) {
        ctx.onSecret(s);
        ctx.record({ ...base, action: 'secret.resolve', decision: 'ok', subject: s.name, data: { server: server.name } });
      }
      out[k] = r.value;
    }
    return out;
  }

  async function open(): Promise<Client> {
    let headers: Record<string, string>;
    let env: Record<string, string>;
    try {
      headers = await resolveAll(server.headers);
      env = await resolveAll(server.env);
    } catch (err) {
      const why = isAgentVmError(err, 'secret_unresolved') ? err.message : `secret resolution failed (${describeError(err)})`;
      const name = /secret "([^"]+)"/.exec(why)?.[1];
      ctx.record({ ...base, action: 'secret.resolve', decision: 'error', subject: name ?? null, reason: why, data: { server: server.name } });
      throw unavailable(server.name, why, err);
    }
    const c = new Client(CLIENT_INFO, { capabilities: {} });
    if (server.url !== undefined) {
      const url = new URL(server.url);
      const transport = new StreamableHTTPClientTransport(url, { requestInit: { headers }, ...(http ? { fetch: http.fetch } : {}) });
      await c.connect(transport, { timeout: ctx.timeoutMs });
      if (http) {
        lean = {
          url, headers, http, timeoutMs: ctx.timeoutMs,
          session: () => ({ sessionId: transport.sessionId, protocolVersion: transport.protocolVersion }),
          onListChanged: () => (listedAt = -Infinity),
        };
      }
      return c;
    }
    const sb = ctx.sandbox;
    if (!sb) throw unavailable(server.name, 'local (command) tool servers need a sandbox driver, and none is configured');
    const id = toolSandboxId(profile.id, server.name);
    sandboxId = id;
    const spec = {
      agentId: id,
      image: profile.image ?? sb.image,
      command: server.command!,
      env,
      runtime: profile.runtime ?? sb.runtime,
      limits: sb.limits ?? DEFAULT_LIMITS,
      network: { mode: 'none' as const },
      stdin: true,
    };
    assertRuntimeAllowed(profile.risk, spec.runtime);
    let handle = await sb.driver.ensure(spec);
    if (handle.action === 'none' || handle.action === 'unpaused') {
      // A server process someone else spoke to: restart it so this session starts clean.
      await sb.driver.sleep(id);
      handle = await sb.driver.ensure(spec);
    }
    try {
      assertRuntimeAllowed(profile.risk, handle.runtime);
    } catch (err) {
      await sb.driver.sleep(id).catch(() => undefined);
      throw err;
    }
    const transport = new SandboxStdioTransport(
      () => sb.driver.attach(id),
      (line) => log.debug({ line: ctx.redact(line).slice(0, 500) }, 'tool server stderr'),
    );
    await c.connect(transport, { timeout: ctx.timeoutMs });
    return c;
  }

  async function connect(): Promise<Client> {
    if (client) return client;
    if (connecting) return connecting;
    if (state === 'failed' && performance.now() - lastAttempt < ctx.retryMs) {
      throw unavailable(server.name, reason ?? 'it failed to start');
    }
    lastAttempt = performance.now();
    state = 'connecting';
    connecting = (async () => {
      try {
        const c = await open();
        // A changed tool list is re-read (and re-checked against the pins) before the next call.
        c.setNotificationHandler(ToolListChangedNotificationSchema, () => {
          listedAt = -Infinity;
        });
        c.onclose = () => {
          if (client !== c) return;
          client = undefined;
          lean = undefined;
          if (state !== 'closed') {
            state = 'failed';
            reason = 'the connection closed';
            lastAttempt = -Infinity; // reconnect on next use
          }
        };
        client = c;
        state = 'ready';
        reason = undefined;
        ctx.record({ ...base, action: 'upstream.start', decision: 'ok', data: { kind: server.url !== undefined ? 'http' : 'sandbox' } });
        return c;
      } catch (err) {
        state = 'failed';
        const msg = isAgentVmError(err, 'upstream_unavailable')
          ? err.message.replace(/^tool server \S+ is unavailable: /, '')
          : ctx.redact(describeError(err));
        reason = msg;
        log.warn({ reason: msg }, 'tool server did not start');
        ctx.record({ ...base, action: 'upstream.start', decision: 'error', reason: msg });
        throw unavailable(server.name, msg, err);
      } finally {
        connecting = undefined;
      }
    })();
    return connecting;
  }

  async function list(c: Client): Promise<Map<string, UpstreamTool>> {
    const out = new Map<string, UpstreamTool>();
    let cursor: string | undefined;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const r = await c.listTools(cursor === undefined ? {} : { cursor }, { timeout: ctx.timeoutMs });
      for (const def of r.tools) out.set(def.name, { def, hash: definitionHash(def) });
      cursor = r.nextCursor;
      if (!cursor) break;
    }
    return out;
  }

  const upstream: Upstream = {
    server: server.name,
    kind: server.url !== undefined ? 'http' : 'sandbox',
    get state() {
      return state;
    },
    get reason() {
      return reason;
    },
    get tools() {
      return tools;
    },
    get listedAt() {
      return listedAt;
    },
    refresh() {
      refreshing ??= (async () => {
        try {
          const c = await connect();
          try {
            tools = await list(c);
            listedAt = performance.now();
          } catch (err) {
            const why = err instanceof McpError && err.code === ErrorCode.RequestTimeout ? `tools/list timed out after ${ctx.timeoutMs} ms` : `tools/list failed: ${ctx.redact(describeError(err))}`;
            // Keep nothing from a server that cannot list: its tools are hidden until it can.
            tools = undefined;
            throw unavailable(server.name, why, err);
          }
        } finally {
          refreshing = undefined;
        }
      })();
      return refreshing;
    },
    async call(tool, args, signal) {
      const c = await connect();
      // Tools with an output schema or task support go through the SDK client, which checks them.
      const def = tools?.get(tool)?.def;
      if (lean && def && def.outputSchema === undefined && (def.execution?.taskSupport ?? 'forbidden') === 'forbidden') return leanToolCall(lean, tool, args, signal);
      const r = await c.callTool({ name: tool, arguments: args }, undefined, {
        timeout: ctx.timeoutMs,
        ...(signal ? { signal } : {}),
      });
      return r as CallToolResult;
    },
    async close() {
      state = 'closed';
      const c = client;
      client = undefined;
      lean = undefined;
      await c?.close().catch(() => undefined);
      http?.close();
      if (sandboxId && ctx.sandbox) await ctx.sandbox.driver.sleep(sandboxId).catch(() => undefined);
    },
  };
  return upstream;
}
