/**
 * The CLI's `--server <url>` mode for operator commands: the same requests the dashboard's
 * actions make, through the operator API (`/v1/…`, src/operator/index.ts), so the CLI and the
 * page never disagree. The bearer token is AGENTVM_ADMIN_TOKEN, or AGENTVM_API_TOKEN when no
 * admin token is set (the server's own rule, operator/auth.ts). The server's `{error, message}`
 * becomes one escaped line on stderr.
 *
 * Deliberately left out: retries and pagination beyond one page (`--limit`).
 */
import { loadConfig, type Config } from '../config.js';
import { AgentVmError } from '../errors.js';
import { printable } from '../text.js';
import { out } from './common.js';

export interface OperatorClient {
  get<T>(path: string, query?: Record<string, string | number | undefined>): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
}

export function operatorClient(config: Pick<Config, 'adminToken' | 'apiToken'>, server: string): OperatorClient {
  const token = config.adminToken ?? config.apiToken;
  if (!token) throw new AgentVmError('usage', '--server needs AGENTVM_ADMIN_TOKEN (or AGENTVM_API_TOKEN when the server has no admin token)', { status: 400 });
  let origin: URL;
  try {
    origin = new URL(server);
  } catch {
    throw new AgentVmError('usage', `--server must be a URL such as http://127.0.0.1:8787, got ${JSON.stringify(printable(server, 200))}`, { status: 400 });
  }
  async function call<T>(method: 'GET' | 'POST', path: string, query?: Record<string, string | number | undefined>, body?: unknown): Promise<T> {
    const url = new URL(path, origin);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
    const res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    }).catch((cause: unknown) => {
      throw new AgentVmError('server_unreachable', `cannot reach agent-vm at ${url.origin}: ${cause instanceof Error ? cause.message : String(cause)}`, { status: 503, cause });
    });
    const json = (await res.json().catch(() => undefined)) as (T & { error?: unknown; message?: unknown }) | undefined;
    if (!res.ok || json === undefined) {
      const message = typeof json?.message === 'string' ? printable(json.message, 500) : `the server answered ${res.status}`;
      const code = typeof json?.error === 'string' ? printable(json.error, 64) : 'server_error';
      throw new AgentVmError(code, message, { status: res.status >= 500 ? 502 : res.status });
    }
    return json;
  }
  return {
    get: (path, query) => call('GET', path, query),
    post: (path, body) => call('POST', path, undefined, body ?? {}),
  };
}

/** A path segment, percent-encoded (ids and tool names may hold `/`, `:` and worse). */
export const seg = (s: string) => encodeURIComponent(s);

interface RemoteAgent {
  id: string;
  sandbox: string;
  runtime: string | null;
  state: string;
  lastWakeMs: number | null;
}

/**
 * `agent-vm agents ls|wake|sleep|snapshot --server <url>`: through the operator API, where wake
 * and sleep go through the profile's unit (so the agent's connection and tools follow).
 */
export async function agentsViaServer(server: string, verb: 'ls' | 'wake' | 'sleep' | 'snapshot', agent?: string): Promise<void> {
  const client = operatorClient(loadConfig(), server);
  if (verb === 'ls') {
    const { agents } = await client.get<{ agents: RemoteAgent[] }>('/v1/agents');
    out(['AGENT', 'SANDBOX', 'RUNTIME', 'RECORDED', 'LAST WAKE'].join('\t'));
    for (const a of agents) {
      out([printable(a.id, 64), printable(a.sandbox, 20), printable(a.runtime ?? '-', 20), a.state === 'never' ? '-' : printable(a.state, 20), a.lastWakeMs != null ? `${a.lastWakeMs} ms` : '-'].join('\t'));
    }
    return;
  }
  const r = await client.post<{ id: string; detail: string }>(`/v1/agents/${seg(agent ?? '')}/${verb}`);
  out(`${printable(r.id, 64)}: ${verb} done (${printable(r.detail, 200)})`);
}
