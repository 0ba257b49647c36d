/**
 * The unit's link to its agent: the sandbox (woken on demand, put to sleep when idle) and one
 * ACP connection over the sandbox's stdio, shared by every conversation of the profile.
 */
import type { AuditLog } from '../governance/audit.js';
import type { Logger } from '../log.js';
import type { SandboxDriver, SandboxSpec, SandboxStatus } from '../sandbox/types.js';
import { connectAgent, type AgentConnection } from './acp.js';
import type { SandboxService } from './sandboxes.js';
import type { EgressEndpoint } from './egress.js';
import type { ToolEndpoint } from './tools.js';

export interface AgentLink {
  /** True while this link has a live connection to a running agent. */
  readonly awake: boolean;
  /** Sessions already loaded on the current connection (a new connection starts empty). */
  readonly loaded: Set<string>;
  /** Wakes the sandbox and connects, or returns the live connection. Single-flight. */
  connection(): Promise<AgentConnection>;
  status(): Promise<SandboxStatus>;
  /** Detach, snapshot the workspace, stop the sandbox. */
  sleep(reason: string): Promise<void>;
  /** Drops the connection (the agent keeps running). */
  detach(): void;
}

export function createAgentLink(o: {
  spec: SandboxSpec;
  profile: string;
  sandboxes: SandboxService;
  driver: SandboxDriver;
  audit: AuditLog;
  logger: Logger;
  tools?: ToolEndpoint;
  egress?: EgressEndpoint;
  /** Checked against the runtime the engine actually used (risk tiers). */
  assertRuntime?: (runtime: string) => void;
}): AgentLink {
  let conn: AgentConnection | undefined;
  let connecting: Promise<AgentConnection> | undefined;
  let fresh = true;
  const loaded = new Set<string>();
  const agentId = o.spec.agentId;

  async function connect(): Promise<AgentConnection> {
    let handle = await o.sandboxes.wake(o.spec, o.profile);
    if (fresh && handle.action === 'none') {
      // The agent was left running by an earlier unit (a crash or restart). Its protocol state
      // (pending requests, request ids) belongs to a connection that no longer exists, so start
      // it afresh rather than risk a stale answer being taken for a new one.
      o.logger.info({ agentId }, 'restarting an agent left running by an earlier unit');
      await o.driver.sleep(agentId);
      handle = await o.sandboxes.wake(o.spec, o.profile);
    }
    fresh = false;
    if (o.assertRuntime) {
      try {
        o.assertRuntime(handle.runtime);
      } catch (err) {
        await o.driver.sleep(agentId).catch(() => undefined);
        throw err;
      }
    }
    if (handle.hostAddress) {
      await o.tools?.bind(handle.hostAddress);
      await o.egress?.bind(handle.hostAddress);
    }
    await o.audit.record({ profile: o.profile, action: 'wake', decision: 'ok', subject: agentId, data: { action: handle.action, runtime: handle.runtime, wakeMs: handle.wakeMs, restored: handle.restored } });
    const io = await o.driver.attach(agentId);
    const c = await connectAgent(io, { logger: o.logger });
    loaded.clear();
    void c.closed.then(() => {
      if (conn === c) {
        conn = undefined;
        loaded.clear();
      }
    });
    conn = c;
    return c;
  }

  return {
    get awake() {
      return conn !== undefined && !conn.isClosed;
    },
    loaded,
    connection() {
      if (conn && !conn.isClosed) return Promise.resolve(conn);
      connecting ??= connect().finally(() => {
        connecting = undefined;
      });
      return connecting;
    },
    status: () => o.driver.status(agentId),
    async sleep(reason) {
      conn?.close();
      conn = undefined;
      loaded.clear();
      const snap = await o.driver.snapshot(agentId).catch((err: unknown) => {
        o.logger.warn({ err, agentId }, 'snapshot before sleep failed');
        return undefined;
      });
      await o.sandboxes.sleep(agentId);
      await o.audit.record({ profile: o.profile, action: 'sleep', decision: 'ok', subject: agentId, reason, data: { snapshotBytes: snap?.bytes ?? null } });
      o.logger.info({ agentId, reason }, 'agent asleep');
    },
    detach() {
      conn?.close();
      conn = undefined;
      loaded.clear();
    },
  };
}
