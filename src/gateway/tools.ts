/**
 * A unit's tool endpoint: the governance MCP proxy, listening on the host's address on the
 * agent's own internal network (the only peer the sandbox can reach), with the profile's
 * upstreams behind it. Created when the sandbox wakes; rebound if that address changes.
 *
 * Each session gets one bearer token per agent connection (`forTurn` with the connection): the
 * agent keeps the MCP server it was handed when its session was created or loaded, so that token
 * is honoured again in each later turn — and only during a turn: `release()` at the turn's end
 * suspends it, and a replay between turns is refused (401). A new connection gets a new token
 * (its sessions are loaded again with it); `revokeAll()` (unit stop, sandbox sleep) and `close()`
 * end every token. Without a connection a token lives for its one turn. The token table does not
 * grow with the number of turns.
 */
import type * as acp from '@agentclientprotocol/sdk';
import type { AuditLog } from '../governance/audit.js';
import { createMcpProxy, type McpProxy, type McpSessionEndpoint } from '../governance/mcp-proxy.js';
import type { Approver } from '../governance/approvals.js';
import type { JobToolHost } from '../governance/mcp-builtin.js';
import { jobsEnabled } from '../governance/profile-jobs.js';
import type { Profile } from '../governance/profile.js';
import type { SecretResolver } from '../governance/secrets.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { SandboxDriver, RuntimeSetting } from '../sandbox/types.js';
import type { Db } from '../store/index.js';
import type { PinRepo } from '../store/pins.js';

export interface ToolDeps {
  /** Tool pins: `store.pins`. */
  pins?: PinRepo;
  /** @deprecated pass `pins: store.pins`; accepted until unit.ts has moved. */
  db?: Db;
  audit: AuditLog;
  secrets: SecretResolver;
  approve?: Approver;
  driver: SandboxDriver;
  image: string;
  runtime: RuntimeSetting;
  logger: Logger;
  upstreamTimeoutMs?: number;
  /** Runs `agentvm.run_job` for a profile with `jobs.enabled` (src/jobs). */
  jobs?: JobToolHost;
  /** Counts tool call decisions. */
  metrics?: Metrics;
}

/** One turn's tools: what to hand the agent, and the revocation of its token. */
export interface TurnTools {
  /** For ACP session/new and session/load; [] when the profile has no tools (or the endpoint is not bound). */
  readonly servers: acp.McpServer[];
  /** Revokes this turn's token. Idempotent; call it in the turn's `finally`. */
  release(): void;
}

export interface ToolEndpoint {
  /** (Re)binds the proxy to `hostAddress` and registers the profile. */
  bind(hostAddress: string): Promise<void>;
  /**
   * Mints a token for one turn of `sessionKey`. `ttlMs` should be the turn's deadline plus a
   * margin; default: the profile's `turn.timeoutSeconds` plus `TOKEN_MARGIN_MS`. `turnId` (the
   * event id) is carried into every audit row the token authorises.
   */
  forTurn(sessionKey: string, turn?: { turnId?: string; ttlMs?: number; connection?: unknown }): TurnTools;
  /**
   * @deprecated mints a token nobody releases (it lives the default ttl); use `forTurn` and
   * `release()`. Kept until unit.ts and turn.ts have moved.
   */
  servers(sessionKey: string): acp.McpServer[];
  /** Revokes every token minted so far (the unit stops, the sandbox sleeps). */
  revokeAll(): void;
  /** Live tokens: for tests and metrics. */
  readonly activeTokens: number;
  close(): Promise<void>;
}

export const usesTools = (p: Profile) => p.tools.servers.length > 0 || jobsEnabled(p);

/**
 * The MCP endpoint's port on each agent's network (each network has its own host address). Fixed,
 * because the host firewall opens only the ports named in the sandbox spec.
 */
export const MCP_PORT = 3129;

/** How long a turn's token outlives the turn's deadline: cancelling and finishing a turn takes a moment. */
export const TOKEN_MARGIN_MS = 60_000;
/** How long one session's token may be resumed turn after turn on one connection. */
const SESSION_TOKEN_LIFETIME_MS = 24 * 3600_000;

const NO_TOOLS: TurnTools = Object.freeze({ servers: [], release: () => undefined });

export function createToolEndpoint(profile: Profile, d: ToolDeps): ToolEndpoint {
  let proxy: McpProxy | undefined;
  let boundTo: string | undefined;
  const defaultTtlMs = profile.turn.timeoutSeconds * 1000 + TOKEN_MARGIN_MS;

  /**
   * One token per session and agent connection: the agent keeps the MCP server it was handed at
   * session/new or session/load, so the token it holds must be the one honoured in its next
   * turn. It is honoured only while a turn runs (resumed at the turn's start, suspended at its
   * end); a new connection (the agent restarted or slept) gets a new token, and its sessions are
   * loaded again with it.
   */
  const bySession = new Map<string, { connection: unknown; ep: McpSessionEndpoint; servers: acp.McpServer[] }>();

  function forTurn(sessionKey: string, turn: { turnId?: string; ttlMs?: number; connection?: unknown } = {}): TurnTools {
    if (!proxy) return NO_TOOLS;
    const ttlMs = turn.ttlMs ?? defaultTtlMs;
    const held = bySession.get(sessionKey);
    if (held && turn.connection !== undefined && held.connection === turn.connection && held.ep.resume({ ...(turn.turnId !== undefined ? { turnId: turn.turnId } : {}), ttlMs })) {
      return { servers: held.servers, release: () => held.ep.suspend() };
    }
    held?.ep.release();
    const ep = proxy.sessionEndpoint({
      profile: profile.id,
      sessionKey,
      ...(turn.turnId !== undefined ? { turnId: turn.turnId } : {}),
      ttlMs,
      // Kept for later turns only when it is tied to a connection; otherwise it dies with its turn.
      ...(turn.connection !== undefined ? { lifetimeMs: SESSION_TOKEN_LIFETIME_MS } : {}),
    });
    const servers: acp.McpServer[] = [{ type: 'http', name: 'agent-vm', url: ep.url, headers: ep.headers }];
    if (turn.connection === undefined) return { servers, release: ep.release };
    bySession.set(sessionKey, { connection: turn.connection, ep, servers });
    return { servers, release: () => ep.suspend() };
  }

  return {
    async bind(hostAddress) {
      if (!usesTools(profile) || (proxy && boundTo === hostAddress)) return;
      await proxy?.close().catch(() => undefined);
      proxy = await createMcpProxy({
        listen: { host: hostAddress, port: MCP_PORT },
        ...(d.pins ? { pins: d.pins } : { db: d.db }),
        audit: d.audit,
        secrets: d.secrets,
        logger: d.logger,
        approve: d.approve,
        ...(d.metrics ? { metrics: d.metrics } : {}),
        upstreamTimeoutMs: d.upstreamTimeoutMs ?? 10_000,
        tokenTtlMs: defaultTtlMs,
        sandbox: { driver: d.driver, image: d.image, runtime: d.runtime },
        ...(d.jobs ? { jobs: d.jobs } : {}),
      });
      boundTo = hostAddress;
      const report = await proxy.register(profile);
      d.logger.info({ profile: profile.id, url: proxy.url, upstreams: report.upstreams, mismatched: report.mismatched }, 'tool endpoint ready');
    },
    forTurn,
    servers(sessionKey) {
      return [...forTurn(sessionKey).servers];
    },
    revokeAll() {
      bySession.clear();
      proxy?.revokeAll();
    },
    get activeTokens() {
      return proxy?.activeTokens ?? 0;
    },
    async close() {
      bySession.clear();
      proxy?.revokeAll();
      await proxy?.close();
      proxy = undefined;
      boundTo = undefined;
    },
  };
}
