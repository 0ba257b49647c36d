/**
 * Drives the BUNDLED reference agent (the exact file the sandbox image runs) over stdio with the
 * ACP SDK's client app, against a real MCP server on 127.0.0.1.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { bundleReferenceAgent } from './bundle.js';

type PermissionPolicy = 'allow' | 'reject' | 'cancel';

interface RunningAgent {
  child: ChildProcessWithoutNullStreams;
  conn: acp.ClientConnection;
  agent: acp.ClientContext;
  updates: acp.SessionNotification[];
  permissionRequests: acp.RequestPermissionRequest[];
  exited: Promise<number | null>;
  stderr: () => string;
}

let tmpRoot: string;
let bundlePath: string;
let mcpUrl: string;
let mcpServer: http.Server;
const mcpAuthSeen: Array<string | undefined> = [];
const running: RunningAgent[] = [];

async function startMcpServer(): Promise<void> {
  mcpServer = http.createServer((req, res) => {
    mcpAuthSeen.push(req.headers['authorization']);
    const server = new McpServer({ name: 'test-tools', version: '1.0.0' });
    server.registerTool(
      'add',
      { description: 'adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
      ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
    );
    // Stateless: a fresh server + transport per HTTP request.
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    server
      .connect(transport)
      .then(() => transport.handleRequest(req, res))
      .catch((e: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(e));
      });
  });
  await new Promise<void>((resolve) => mcpServer.listen(0, '127.0.0.1', resolve));
  const { port } = mcpServer.address() as AddressInfo;
  mcpUrl = `http://127.0.0.1:${port}/mcp`;
}

function startAgent(workspace: string, policy: PermissionPolicy = 'allow'): RunningAgent {
  const child = spawn(process.execPath, [bundlePath], {
    env: { ...process.env, AGENT_WORKSPACE: workspace },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const updates: acp.SessionNotification[] = [];
  const permissionRequests: acp.RequestPermissionRequest[] = [];
  const app = acp
    .client({ name: 'reference-agent-test' })
    .onNotification('session/update', ({ params }) => {
      updates.push(params);
    })
    .onRequest('session/request_permission', ({ params }) => {
      permissionRequests.push(params);
      if (policy === 'cancel') return { outcome: { outcome: 'cancelled' } };
      const kind = policy === 'allow' ? 'allow_once' : 'reject_once';
      const option = params.options.find((o) => o.kind === kind);
      if (!option) throw new Error(`no ${kind} option offered`);
      return { outcome: { outcome: 'selected', optionId: option.optionId } };
    });
  const conn = app.connect(
    acp.ndJsonStream(
      Writable.toWeb(child.stdin) as WritableStream<Uint8Array>,
      Readable.toWeb(child.stdout) as ReadableStream<Uint8Array>,
    ),
  );
  const a: RunningAgent = { child, conn, agent: conn.agent, updates, permissionRequests, exited, stderr: () => stderr };
  running.push(a);
  return a;
}

async function stopAgent(a: RunningAgent): Promise<void> {
  a.conn.close();
  if (a.child.exitCode === null && a.child.signalCode === null) {
    a.child.stdin.end();
    const timer = setTimeout(() => a.child.kill('SIGKILL'), 2000);
    await a.exited;
    clearTimeout(timer);
  }
}

async function initialize(a: RunningAgent): Promise<acp.InitializeResponse> {
  return a.agent.request('initialize', {
    protocolVersion: acp.PROTOCOL_VERSION,
    clientCapabilities: {},
    clientInfo: { name: 'reference-agent-test', version: '0.0.0' },
  });
}

async function newSession(a: RunningAgent, mcpServers: acp.McpServer[] = []): Promise<string> {
  const res = await a.agent.request('session/new', { cwd: '/workspace', mcpServers });
  return res.sessionId;
}

/** Sends one prompt; returns the stop reason, the reply text and the updates of this turn. */
async function prompt(
  a: RunningAgent,
  sessionId: string,
  text: string,
): Promise<{ stopReason: acp.StopReason; text: string; updates: acp.SessionUpdate[] }> {
  const from = a.updates.length;
  const res = await a.agent.request('session/prompt', { sessionId, prompt: [{ type: 'text', text }] });
  await new Promise((r) => setImmediate(r));
  const updates = a.updates
    .slice(from)
    .filter((u) => u.sessionId === sessionId)
    .map((u) => u.update);
  const reply = updates
    .map((u) => (u.sessionUpdate === 'agent_message_chunk' && u.content.type === 'text' ? u.content.text : ''))
    .join('');
  return { stopReason: res.stopReason, text: reply, updates };
}

async function ready(workspace: string, policy: PermissionPolicy = 'allow'): Promise<{ a: RunningAgent; sid: string }> {
  const a = startAgent(workspace, policy);
  await initialize(a);
  return { a, sid: await newSession(a) };
}

async function freshWorkspace(): Promise<string> {
  return mkdtemp(path.join(tmpRoot, 'ws-'));
}

beforeAll(async () => {
  tmpRoot = await mkdtemp(path.join(os.tmpdir(), 'reference-agent-test-'));
  bundlePath = path.join(tmpRoot, 'agent.mjs');
  await bundleReferenceAgent(bundlePath);
  await startMcpServer();
});

afterEach(async () => {
  await Promise.all(running.splice(0).map(stopAgent));
});

afterAll(async () => {
  await new Promise<void>((resolve) => {
    mcpServer.closeAllConnections();
    mcpServer.close(() => resolve());
  });
  await rm(tmpRoot, { recursive: true, force: true });
});

describe('reference agent (bundled)', () => {
  it('bundles to one self-contained file', async () => {
    expect(existsSync(bundlePath)).toBe(true);
    const src = await readFile(bundlePath, 'utf8');
    expect(src).not.toMatch(/from\s*["']@agentclientprotocol|from\s*["']@modelcontextprotocol/);
    expect((await stat(bundlePath)).size).toBeGreaterThan(10_000);
  });

  it('initializes advertising loadSession and http MCP', async () => {
    const a = startAgent(await freshWorkspace());
    const init = await initialize(a);
    expect(init.protocolVersion).toBe(acp.PROTOCOL_VERSION);
    expect(init.agentCapabilities?.loadSession).toBe(true);
    expect(init.agentCapabilities?.mcpCapabilities?.http).toBe(true);
  });

  it('creates sessions and loads known and unknown ones', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    expect(sid).toMatch(/\S/);
    expect(await newSession(a)).not.toBe(sid);
    await expect(a.agent.request('session/load', { sessionId: sid, cwd: '/workspace', mcpServers: [] })).resolves.toBeDefined();
    await expect(
      a.agent.request('session/load', { sessionId: 'never-seen-before', cwd: '/workspace', mcpServers: [] }),
    ).resolves.toBeDefined();
    expect((await prompt(a, 'never-seen-before', 'echo still here')).text).toBe('still here');
  });

  it('echo replies with the text, trimmed command, end_turn', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    const r = await prompt(a, sid, '  echo hello   world  ');
    expect(r).toMatchObject({ stopReason: 'end_turn', text: 'hello   world' });
    // text blocks are concatenated
    const from = a.updates.length;
    const res = await a.agent.request('session/prompt', {
      sessionId: sid,
      prompt: [
        { type: 'text', text: 'echo ab' },
        { type: 'text', text: 'cd' },
      ],
    });
    expect(res.stopReason).toBe('end_turn');
    const chunk = a.updates.slice(from).map((u) => u.update).find((u) => u.sessionUpdate === 'agent_message_chunk');
    expect(chunk && chunk.sessionUpdate === 'agent_message_chunk' && chunk.content.type === 'text' && chunk.content.text).toBe('abcd');
  });

  it('write puts the file into the outbox and refuses paths', async () => {
    const ws = await freshWorkspace();
    const { a, sid } = await ready(ws);
    expect((await prompt(a, sid, 'write report.txt hello outbox')).text).toBe('wrote report.txt (12 bytes)');
    expect(await readFile(path.join(ws, 'outbox', 'report.txt'), 'utf8')).toBe('hello outbox');
    expect((await prompt(a, sid, 'write ../escape.txt x')).text).toMatch(/^refused/);
    expect((await prompt(a, sid, 'write a/b.txt x')).text).toMatch(/^refused/);
    expect(existsSync(path.join(ws, 'escape.txt'))).toBe(false);
  });

  it('sh runs a command in the workspace and reports exit code and output', async () => {
    const ws = await freshWorkspace();
    const { a, sid } = await ready(ws);
    expect((await prompt(a, sid, 'sh echo out; echo err >&2; pwd')).text).toBe(`exit 0\nout\n${ws}\nerr\n`);
    expect((await prompt(a, sid, 'sh exit 7')).text).toBe('exit 7\n');
  });

  it('remembers across sessions and across a restart of the process', async () => {
    const ws = await freshWorkspace();
    const first = await ready(ws);
    expect((await prompt(first.a, first.sid, 'remember colour deep blue')).text).toBe('remembered colour');
    const other = await newSession(first.a);
    expect((await prompt(first.a, other, 'recall colour')).text).toBe('deep blue');
    expect((await prompt(first.a, other, 'recall size')).text).toBe('nothing remembered for size');
    await stopAgent(first.a);
    expect(await first.a.exited).toBe(0);

    const second = await ready(ws);
    expect((await prompt(second.a, second.sid, 'recall colour')).text).toBe('deep blue');
    const mem = JSON.parse(await readFile(path.join(ws, '.reference-agent', 'memory.json'), 'utf8')) as unknown;
    expect(mem).toEqual({ colour: 'deep blue' });
  });

  it('ask: a client that allows grants permission', async () => {
    const { a, sid } = await ready(await freshWorkspace(), 'allow');
    expect((await prompt(a, sid, 'ask delete the production database')).text).toBe('permission granted');
    expect(a.permissionRequests).toHaveLength(1);
    const req = a.permissionRequests[0]!;
    expect(req.sessionId).toBe(sid);
    expect(req.toolCall.title).toBe('delete the production database');
    expect(req.options.map((o) => o.kind).sort()).toEqual(['allow_once', 'reject_once']);
  });

  it('ask: a client that rejects (or cancels) denies permission', async () => {
    const rejecting = await ready(await freshWorkspace(), 'reject');
    expect((await prompt(rejecting.a, rejecting.sid, 'ask send an email')).text).toBe('permission denied');
    const cancelling = await ready(await freshWorkspace(), 'cancel');
    expect((await prompt(cancelling.a, cancelling.sid, 'ask send an email')).text).toBe('permission denied');
  });

  it('progress sends n updates before the reply', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    const r = await prompt(a, sid, 'progress 5');
    expect(r.text).toBe('done 5');
    expect(r.stopReason).toBe('end_turn');
    const kinds = r.updates.map((u) => u.sessionUpdate);
    expect(kinds).toEqual(['plan', 'plan', 'plan', 'plan', 'plan', 'agent_message_chunk']);
  });

  it('stall waits until session/cancel, then stops with cancelled', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    let settled = false;
    const pending = a.agent.request('session/prompt', { sessionId: sid, prompt: [{ type: 'text', text: 'stall' }] });
    void pending.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    await a.agent.notify('session/cancel', { sessionId: sid });
    expect((await pending).stopReason).toBe('cancelled');
    // the session is usable afterwards
    expect((await prompt(a, sid, 'echo after')).text).toBe('after');
  });

  it('slow waits and replies', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    const t0 = Date.now();
    expect((await prompt(a, sid, 'slow 150')).text).toBe('slept 150');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  it('unknown commands list the grammar', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    expect((await prompt(a, sid, 'dance now')).text).toBe(
      'unknown command: dance; try echo, write, sh, remember, recall, ask, mcp, progress, stall, hang, crash, slow, prompt',
    );
  });

  it('crash exits the process with code 3', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    const pending = a.agent.request('session/prompt', { sessionId: sid, prompt: [{ type: 'text', text: 'crash' }] });
    pending.catch(() => undefined);
    expect(await a.exited).toBe(3);
    await expect(pending).rejects.toBeDefined();
  });

  it('mcp calls a tool on the session MCP server (with its headers)', async () => {
    const a = startAgent(await freshWorkspace());
    await initialize(a);
    const sid = await newSession(a, [
      { type: 'http', name: 'tools', url: mcpUrl, headers: [{ name: 'Authorization', value: 'Bearer test-token' }] },
    ]);
    mcpAuthSeen.length = 0;
    expect((await prompt(a, sid, 'mcp add {"a":2,"b":3}')).text).toBe('5');
    expect(mcpAuthSeen.length).toBeGreaterThan(0);
    expect(mcpAuthSeen.every((h) => h === 'Bearer test-token')).toBe(true);

    const err = await prompt(a, sid, 'mcp nosuch {}');
    expect(err.text).toBe('mcp error -32602: Tool nosuch not found');
    expect((await prompt(a, sid, 'mcp add {not json')).text).toMatch(/^mcp error: invalid JSON/);
  });

  it('mcp without an MCP server says so', async () => {
    const { a, sid } = await ready(await freshWorkspace());
    expect((await prompt(a, sid, 'mcp add {"a":1,"b":1}')).text).toBe('mcp error: no MCP server');
  });
});
