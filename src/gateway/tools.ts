/**
 * A unit's tool endpoint: the governance MCP proxy, listening on the host's address on the
 * agent's own internal network (the only peer the sandbox can reach), with the profile's
 * upstreams behind it. Created when the sandbox wakes; rebound if that address changes.
 */
import type * as acp from '@agentclientprotocol/sdk';
import type { AuditLog } from '../governance/audit.js';
import { createMcpProxy, type McpProxy } from '../governance/mcp-proxy.js';
import type { Approver } from '../governance/approvals.js';
import type { Profile } from '../governance/profile.js';
import type { SecretResolver } from '../governance/secrets.js';
import type { Logger } from '../log.js';
import type { SandboxDriver, RuntimeSetting } from '../sandbox/types.js';
import type { Db } from '../store/index.js';

export interface ToolDeps {
  db: Db;
  audit: AuditLog;
  secrets: SecretResolver;
  approve?: Approver;
  driver: SandboxDriver;
  image: string;
  runtime: RuntimeSetting;
  logger: Logger;
  upstreamTimeoutMs?: number;
}

export interface ToolEndpoint {
  /** (Re)binds the proxy to `hostAddress` and registers the profile. */
  bind(hostAddress: string): Promise<void>;
  /** What to hand the agent in session/new and session/load; [] when the profile has no tools. */
  servers(sessionKey: string): acp.McpServer[];
  close(): Promise<void>;
}

export const usesTools = (p: Profile) => p.tools.servers.length > 0;

/**
 * The MCP endpoint's port on each agent's network (each network has its own host address). Fixed,
 * because the host firewall opens only the ports named in the sandbox spec.
 */
export const MCP_PORT = 3129;

export function createToolEndpoint(profile: Profile, d: ToolDeps): ToolEndpoint {
  let proxy: McpProxy | undefined;
  let boundTo: string | undefined;
  return {
    async bind(hostAddress) {
      if (!usesTools(profile) || (proxy && boundTo === hostAddress)) return;
      await proxy?.close().catch(() => undefined);
      proxy = await createMcpProxy({
        listen: { host: hostAddress, port: MCP_PORT },
        db: d.db,
        audit: d.audit,
        secrets: d.secrets,
        logger: d.logger,
        approve: d.approve,
        upstreamTimeoutMs: d.upstreamTimeoutMs ?? 10_000,
        sandbox: { driver: d.driver, image: d.image, runtime: d.runtime },
      });
      boundTo = hostAddress;
      const report = await proxy.register(profile);
      d.logger.info({ profile: profile.id, url: proxy.url, upstreams: report.upstreams, mismatched: report.mismatched }, 'tool endpoint ready');
    },
    servers(sessionKey) {
      if (!proxy) return [];
      const ep = proxy.sessionEndpoint({ profile: profile.id, sessionKey });
      return [{ type: 'http', name: 'agent-vm', url: ep.url, headers: ep.headers }];
    },
    async close() {
      await proxy?.close();
      proxy = undefined;
      boundTo = undefined;
    },
  };
}
