/**
 * The governance layer end to end, the way the gateway uses it: the reference agent in its runsc
 * sandbox on an internal network, the MCP proxy bound to that network's gateway address, a real
 * MCP SDK server behind it (remote, with a secret header) and a local stdio tool server started
 * in a sandbox of its own. During the turn the agent calls an allowed and a denied tool; the
 * sandbox is searched for the secrets while a call is in flight.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { createAuditLog, type AuditRow } from '../src/governance/audit.js';
import { createMcpProxy, type McpProxy, type RegisterReport } from '../src/governance/mcp-proxy.js';
import { toolSandboxId } from '../src/governance/mcp-upstreams.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createRedactor } from '../src/governance/redact.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import type { SandboxStdio } from '../src/sandbox/types.js';
import { openStore, type Store } from '../src/store/index.js';
import { audit as auditTable } from '../src/store/schema.js';
import { STDIO_FAKE_SCRIPT, startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { MCP_PORT } from '../src/gateway/tools.js';
import { TEST_IMAGE, agentId } from './helpers/env.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { makeDriver, sh, spec } from './helpers/sandbox.js';

const driver = makeDriver();
const agent = agentId('govagent');
const profileId = `t-gov-${randomBytes(4).toString('hex')}`;
const toolBox = toolSandboxId(profileId, 'local');
const UP_SECRET = `upstream-${randomBytes(16).toString('hex')}`;
const TOOL_SECRET = `toolsrv-${randomBytes(16).toString('hex')}`;
const secrets = createSecretResolver({ env: { UP_TOKEN: UP_SECRET, TOOL_TOKEN: TOOL_SECRET } });

let tdb: TestDatabase;
let store: Store;
let upstream: FakeUpstream;
let proxy: McpProxy;
let report: RegisterReport;
let hostAddress: string;
let io: SandboxStdio;
let conn: acp.ClientConnection;
let sessionId: string;
const updates: acp.SessionNotification[] = [];

function profile(): Profile {
  const r = validateProfile(
    {
      version: 1,
      id: profileId,
      name: 'governance e2e',
      agent: { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'] },
      runtime: 'runsc',
      risk: 'L1',
      bindings: [{ platform: 'local', channels: [profileId] }],
      secrets: { 'up-token': 'secret://UP_TOKEN', 'tool-token': 'secret://TOOL_TOKEN' },
      tools: {
        servers: [
          { name: 'srv', url: upstream.url, headers: { Authorization: 'Bearer secret://up-token' } },
          { name: 'local', command: ['node', '-e', STDIO_FAKE_SCRIPT], env: { TOKEN: 'secret://tool-token' } },
        ],
        allow: ['srv.echo', 'srv.slow', 'srv.whoami', 'local.whereami', 'local.token_length', 'local.leak_token'],
      },
    },
    `${profileId}.yaml`,
  );
  if (!r.profile) throw new Error(JSON.stringify(r.issues));
  return r.profile;
}

async function prompt(text: string): Promise<string> {
  const from = updates.length;
  const res = await conn.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text }] });
  expect(res.stopReason).toBe('end_turn');
  await new Promise((r) => setImmediate(r));
  return updates
    .slice(from)
    .map((u) => (u.update.sessionUpdate === 'agent_message_chunk' && u.update.content.type === 'text' ? u.update.content.text : ''))
    .join('');
}

async function auditRows(action: string): Promise<AuditRow[]> {
  await proxy.flush();
  return store.db.select().from(auditTable).where(and(eq(auditTable.profile, profileId), eq(auditTable.action, action))).orderBy(auditTable.seq);
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  store = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
  await store.migrate();
  upstream = await startFakeUpstream();

  // pids: under runsc the limit also counts the sandbox kernel's own host threads, which grow
  // with network I/O; 128 (the helper's default) is too tight for the agent plus a probing node.
  const h = await driver.ensure(
    spec(agent, {
      stdin: true,
      // The host firewall opens only the MCP endpoint's port on the host address.
      network: { mode: 'internal', hostPorts: [MCP_PORT] },
      command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'],
      limits: { cpus: 1, memoryMiB: 512, pids: 512 },
    }),
  );
  expect(h.runtime).toBe('runsc');
  expect(h.hostAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  hostAddress = h.hostAddress!;

  proxy = await createMcpProxy({
    listen: { host: hostAddress, port: MCP_PORT },
    pins: store.pins,
    audit: createAuditLog(store.audit),
    secrets,
    logger: createLogger('silent'),
    upstreamTimeoutMs: 15_000,
    sandbox: { driver, image: TEST_IMAGE, runtime: 'runsc' },
  });
  report = await proxy.register(profile());

  io = await driver.attach(agent);
  const app = acp
    .client({ name: 'governance-test' })
    .onNotification('session/update', ({ params }) => {
      updates.push(params);
    })
    .onRequest('session/request_permission', () => ({ outcome: { outcome: 'cancelled' } }));
  conn = app.connect(
    acp.ndJsonStream(Writable.toWeb(io.stdin as Writable) as WritableStream<Uint8Array>, Readable.toWeb(io.stdout as Readable) as ReadableStream<Uint8Array>),
  );
  await conn.agent.request('initialize', { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {}, clientInfo: { name: 'governance-test', version: '0' } });
  const ep = proxy.sessionEndpoint({ profile: profileId, sessionKey: `local:${profileId}` });
  // Exactly what the gateway passes: one http MCP server, the proxy, with the session's token.
  const mcpServers: acp.McpServer[] = [{ type: 'http', name: 'agent-vm', url: ep.url, headers: ep.headers }];
  const created = await conn.agent.request('session/new', { cwd: '/workspace', mcpServers });
  sessionId = created.sessionId;
}, 180_000);

afterAll(async () => {
  conn?.close();
  io?.close();
  await proxy?.close();
  await Promise.all([driver.destroy(agent).catch(() => undefined), driver.destroy(toolBox).catch(() => undefined)]);
  await driver.close();
  await upstream?.close();
  await store?.close();
  await tdb?.drop();
});

describe('governance with the reference agent in its sandbox', () => {
  it('starts both tool servers: remote over http, local in a runsc sandbox of its own', async () => {
    expect(report.upstreams).toEqual([
      { server: 'srv', state: 'ready' },
      { server: 'local', state: 'ready' },
    ]);
    expect(proxy.url).toBe(`http://${hostAddress}:${new URL(proxy.url).port}/mcp`);
    const box = await driver.status(toolBox);
    expect(box).toMatchObject({ state: 'running', runtime: 'runsc' });
  });

  it('calls an allowed tool and is refused a denied one during a turn; both audited with the policy hash', async () => {
    expect(await prompt('mcp srv__echo {"text":"hello from the sandbox"}')).toBe('hello from the sandbox');
    expect(await prompt('mcp srv__delete_everything {}')).toBe('mcp error -32602: Unknown tool: srv__delete_everything');
    expect(upstream.calls.get('echo')).toBe(1);
    expect(upstream.calls.get('delete_everything')).toBeUndefined();

    const calls = await auditRows('tool.call');
    expect(calls.map((r) => [r.decision, r.subject, (r.data as { policyHash: string }).policyHash])).toEqual([
      ['allow', 'srv.echo', report.policyHash],
      ['deny', 'srv__delete_everything', report.policyHash],
    ]);
    expect(calls[1]?.reason).toBe('not in the tool allowlist');
  });

  it('runs the local tool server in its own sandbox, with its secret there and not in the agent', async () => {
    expect(await prompt('mcp local__whereami {}')).toMatch(/ uid=1000$/);
    expect(await prompt('mcp local__token_length {}')).toBe(String(TOOL_SECRET.length));
    expect(await prompt('mcp local__leak_token {}')).toBe('my token is [redacted:TOOL_TOKEN]');
  });

  it('keeps every secret out of the sandbox (env, files, processes) while a tool call is in flight', async () => {
    await sh(driver, agent, 'echo sentinel-file > /workspace/sentinel.txt; echo tmp-sentinel > /tmp/t.txt');
    const before = upstream.calls.get('slow') ?? 0;
    const turn = prompt('mcp srv__slow {"ms":2500}');
    for (let i = 0; i < 100 && (upstream.calls.get('slow') ?? 0) === before; i++) await new Promise((r) => setTimeout(r, 50));
    expect(upstream.calls.get('slow')).toBe(before + 1);
    // Dump everything and search on the host: a grep inside would put the needle in a cmdline.
    const dump = await sh(
      driver,
      agent,
      [
        'env',
        'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; tr "\\0" "\\n" < $p/environ 2>/dev/null; done',
        'find /workspace /tmp -type f -size -2M -exec cat {} + 2>/dev/null',
      ].join('; '),
    );
    expect(dump.exitCode).toBe(0);
    expect(dump.truncated).toBe(false);
    const all = dump.stdout + dump.stderr;
    // The search did reach what it claims to search...
    expect(all).toContain('agent.mjs'); // the agent's command line
    expect(all).toContain('sentinel-file');
    expect(all).toContain('tmp-sentinel');
    expect(all).toContain('HOME=/workspace');
    // ...and no secret is there.
    expect(all).not.toContain(UP_SECRET);
    expect(all).not.toContain(TOOL_SECRET);
    expect(await turn).toBe('slept 2500');
  });

  it('gives the agent no way around the proxy', async () => {
    const port = new URL(upstream.url).port;
    const probe = (url: string) =>
      sh(driver, agent, `node -e 'fetch(process.argv[1]).then(r=>console.log("reached "+r.status),e=>console.log("blocked"))' ${url}`);
    expect((await probe(`http://127.0.0.1:${port}/mcp`)).stdout.trim()).toBe('blocked');
    expect((await probe(`http://${hostAddress}:${port}/mcp`)).stdout.trim()).toBe('blocked');
    // The proxy itself answers, but not without the session's token.
    expect((await probe(proxy.url)).stdout.trim()).toBe('reached 401');
  });

  it('redacts a secret an upstream echoes back, and a reply that contains one', async () => {
    expect(await prompt('mcp srv__whoami {}')).toBe('you sent: Bearer [redacted:UP_TOKEN]');
    expect(upstream.authSeen).toContain(`Bearer ${UP_SECRET}`);
    // A person pastes the secret into the chat; the agent repeats it; the gateway redacts the reply.
    const reply = await prompt(`echo the key is ${UP_SECRET}`);
    expect(reply).toBe(`the key is ${UP_SECRET}`);
    const redact = createRedactor([...(await secrets.known!()), ...[]]);
    expect(redact(reply)).toBe('the key is [redacted:UP_TOKEN]');
    expect(proxy.redactor()(reply)).toBe('the key is [redacted:UP_TOKEN]');
  });
});
