/**
 * MCP session tokens as a unit's tool endpoint hands them out (src/gateway/tools.ts): one per turn,
 * revoked when the turn ends. A compromised agent that kept its token replays it after the turn:
 * 401, and no audit row is written in that token's name. The token table does not grow across a
 * thousand turns, whether turns release their token or just let it expire; `revokeAll` (the unit
 * stops) and `close` end every token.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createToolEndpoint, MCP_PORT, type ToolEndpoint, type TurnTools } from '../src/gateway/tools.js';
import { createLogger } from '../src/log.js';
import type { SandboxDriver } from '../src/sandbox/types.js';
import type { Store } from '../src/store/index.js';
import { mcpClient, startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { storeBackends } from './helpers/stores.js';

const [pglite] = storeBackends('tokens');
const logger = createLogger('silent');
// A loopback address of its own: the endpoint listens on the fixed MCP port, as in production.
const host = `127.${1 + (randomBytes(1)[0]! % 200)}.${randomBytes(1)[0]!}.${1 + (randomBytes(1)[0]! % 250)}`;

let store: Store;
let closeStore: () => Promise<void>;
let upstream: FakeUpstream;
let tools: ToolEndpoint;
let profile: Profile;

function headersOf(t: TurnTools): Record<string, string> {
  const s = t.servers[0] as { headers: Array<{ name: string; value: string }> };
  return Object.fromEntries(s.headers.map((h) => [h.name, h.value]));
}

async function listStatus(t: TurnTools): Promise<number> {
  const s = t.servers[0] as { url: string };
  const res = await fetch(s.url, {
    method: 'POST',
    headers: { ...headersOf(t), 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
  });
  await res.text();
  return res.status;
}

beforeAll(async () => {
  ({ store, close: closeStore } = await pglite!.open());
  upstream = await startFakeUpstream();
  const r = validateProfile(
    {
      version: 1, id: 'tokens', name: 'tokens', agent: { command: ['x'] }, risk: 'L1',
      bindings: [{ platform: 'local', channels: ['tokens'] }],
      tools: { servers: [{ name: 'srv', url: upstream.url }], allow: ['srv.echo'] },
      turn: { timeoutSeconds: 30 },
    },
    'tokens.yaml',
  );
  profile = r.profile!;
  tools = createToolEndpoint(profile, {
    pins: store.pins,
    audit: createAuditLog(store.audit),
    secrets: createSecretResolver({ env: {} }),
    driver: {} as SandboxDriver, // http servers only: the driver is never used
    image: 'unused',
    runtime: 'runsc',
    logger,
  });
  await tools.bind(host);
});

afterAll(async () => {
  await tools?.close();
  await upstream?.close();
  await closeStore?.();
});

describe('MCP tokens per turn', () => {
  it('serves the turn, then refuses the same token once the turn has released it (401, no row in its name)', async () => {
    const turn = tools.forTurn('conv-1', { turnId: 'ev-1' });
    expect((turn.servers[0] as { url: string }).url).toBe(`http://${host}:${MCP_PORT}/mcp`);
    const c = await mcpClient(turn.servers[0] as { url: string; headers: Array<{ name: string; value: string }> });
    expect((await c.listTools()).tools.map((t) => t.name)).toEqual(['srv__echo']);
    expect((await c.callTool({ name: 'srv__echo', arguments: { text: 'in turn' } })).isError).toBeFalsy();
    turn.release();
    turn.release(); // idempotent

    const calls = upstream.totalCalls();
    expect(await listStatus(turn)).toBe(401);
    await expect(c.callTool({ name: 'srv__echo', arguments: { text: 'replayed' } })).rejects.toThrow();
    expect(upstream.totalCalls()).toBe(calls);
    await c.close().catch(() => undefined);

    const rows = (await store.audit.tail(50)).filter((r) => r.action === 'tool.call');
    expect(rows.map((r) => (r.data as { turn?: string }).turn)).toEqual(['ev-1']);
  });

  it('does not grow the token table across 1,000 turns, released or left to expire', async () => {
    const before = tools.activeTokens;
    for (let i = 0; i < 1000; i++) {
      const turn = tools.forTurn(`conv-${i % 7}`, { turnId: `ev-${i}` });
      if (i % 100 === 0) expect(await listStatus(turn)).toBe(200);
      turn.release();
    }
    expect(tools.activeTokens).toBe(before);

    const leaked: TurnTools[] = [];
    for (let i = 0; i < 1000; i++) leaked.push(tools.forTurn(`conv-${i % 7}`, { turnId: `lost-${i}`, ttlMs: 20 }));
    await new Promise((r) => setTimeout(r, 60));
    expect(tools.activeTokens).toBe(before);
    expect(await listStatus(leaked[999]!)).toBe(401);
  });

  it('ends every token when the unit stops (revokeAll) and when the endpoint closes', async () => {
    const a = tools.forTurn('conv-a');
    const b = tools.forTurn('conv-b');
    expect(await listStatus(a)).toBe(200);
    tools.revokeAll();
    expect(tools.activeTokens).toBe(0);
    expect(await listStatus(a)).toBe(401);
    expect(await listStatus(b)).toBe(401);
    expect(tools.forTurn('conv-c').servers).toHaveLength(1);
    expect(tools.activeTokens).toBe(1);
  });
});

describe('a token per session and connection', () => {
  it('is honoured in every turn of the session on one connection, refused between turns, and replaced on a new connection', async () => {
    const conn = {};
    const t1 = tools.forTurn('conv-s', { turnId: 'ev-1', connection: conn });
    expect(await listStatus(t1)).toBe(200);
    t1.release();
    expect(await listStatus(t1)).toBe(401); // between turns: a replay is refused
    const t2 = tools.forTurn('conv-s', { turnId: 'ev-2', connection: conn });
    expect(t2.servers).toEqual(t1.servers); // what the agent already holds
    expect(await listStatus(t1)).toBe(200);
    t2.release();
    const other = tools.forTurn('conv-s', { turnId: 'ev-3', connection: {} });
    expect(other.servers).not.toEqual(t1.servers);
    expect(await listStatus(t1)).toBe(401); // the old connection's token is gone for good
    expect(await listStatus(other)).toBe(200);
    other.release();
  });
});
