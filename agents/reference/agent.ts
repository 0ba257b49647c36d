/**
 * Reference agent: a deterministic ACP agent with no language model, for demos and tests.
 *
 * Speaks ACP v1 over stdio (newline-delimited JSON-RPC). stdout IS the protocol: diagnostics go
 * to stderr only. One command per prompt: the first paragraph of the concatenated text blocks
 * (later paragraphs are context the gateway appends, such as a task description or the paths
 * of attached files, and are ignored):
 *
 *   echo <text>                 → <text>
 *   write <name> <content...>   → writes <cwd>/outbox/<name>; "wrote <name> (<n> bytes)"
 *   sh <command line>           → /bin/sh -c in the session's cwd, 20 s timeout; "exit <code>\n<stdout><stderr>"
 *   remember <key> <value...>   → <workspace>/.reference-agent/memory.json; "remembered <key>"
 *   recall <key>                → the value, or "nothing remembered for <key>"
 *   ask <action description>    → session/request_permission; "permission granted" | "permission denied"
 *   mcp <tool> [<json args>]    → tools/call on the first http MCP server of the session
 *   progress <n>                → n `plan` session/updates, then "done <n>"
 *   stall                       → waits for session/cancel, then stopReason "cancelled"
 *   hang                        → never answers, and ignores session/cancel (a stuck agent)
 *   crash                       → process.exit(3)
 *   slow <ms>                   → "slept <ms>"
 *   prompt                      → the whole prompt as received, every paragraph (to see the context)
 *
 * Each session works in the `cwd` the client gave in session/new (or session/load): the gateway
 * gives every conversation its own directory, with its own outbox/ and inbox/. Without a cwd the
 * workspace root is used. The workspace root is $AGENT_WORKSPACE, default /workspace; when it is
 * elsewhere (the tests' fake driver runs this agent on the host), a cwd under /workspace is
 * mapped into it. This file is bundled (esbuild, see bundle.ts) into one .mjs because the
 * sandbox image has node but no node_modules.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import * as acp from '@agentclientprotocol/sdk';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const SANDBOX_WORKSPACE = '/workspace';
const WORKSPACE = process.env.AGENT_WORKSPACE ?? SANDBOX_WORKSPACE;
const SH_TIMEOUT_MS = 20_000;
const MAX_PROGRESS = 10_000;
const COMMANDS = 'echo, write, sh, remember, recall, ask, mcp, progress, stall, hang, crash, slow, prompt';

function log(...parts: unknown[]): void {
  process.stderr.write(`[reference-agent] ${parts.map(String).join(' ')}\n`);
}

interface SessionState {
  mcpServers: acp.McpServer[];
  /** The session's working directory (host path). */
  cwd: string;
  /** Aborted by session/cancel; replaced at the start of each prompt turn. */
  turn: AbortController | null;
}

const sessions = new Map<string, SessionState>();

function session(id: string): SessionState {
  let s = sessions.get(id);
  if (!s) {
    s = { mcpServers: [], cwd: WORKSPACE, turn: null };
    sessions.set(id, s);
  }
  return s;
}

/** The session cwd as a path on this machine: a path under /workspace maps into $AGENT_WORKSPACE. */
function resolveCwd(cwd: string | undefined): string {
  if (!cwd || !path.isAbsolute(cwd)) return WORKSPACE;
  const normal = path.normalize(cwd);
  if (WORKSPACE === SANDBOX_WORKSPACE) return normal;
  if (normal === SANDBOX_WORKSPACE) return WORKSPACE;
  if (normal.startsWith(`${SANDBOX_WORKSPACE}/`)) return path.join(WORKSPACE, normal.slice(SANDBOX_WORKSPACE.length + 1));
  return normal;
}

/** Splits "cmd rest of line" into ["cmd", "rest of line"]. */
function splitFirst(text: string): [string, string] {
  const m = /^(\S+)(?:\s+([\s\S]*))?$/.exec(text);
  return m ? [m[1] ?? '', m[2] ?? ''] : ['', ''];
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

// ---------------------------------------------------------------- memory

const memoryFile = (): string => path.join(WORKSPACE, '.reference-agent', 'memory.json');
let memoryChain: Promise<unknown> = Promise.resolve();

async function readMemory(): Promise<Record<string, string>> {
  try {
    const parsed: unknown = JSON.parse(await readFile(memoryFile(), 'utf8'));
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, string>) : {};
  } catch {
    return {};
  }
}

function remember(key: string, value: string): Promise<void> {
  const next = memoryChain.then(async () => {
    const mem = await readMemory();
    mem[key] = value;
    const file = memoryFile();
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(mem, null, 2) + '\n');
    await rename(tmp, file);
  });
  memoryChain = next.catch(() => undefined);
  return next;
}

// ---------------------------------------------------------------- commands

function runSh(command: string, cwd: string, signal: AbortSignal): Promise<string> {
  return new Promise((resolve) => {
    void mkdir(path.join(cwd, 'outbox'), { recursive: true })
      .catch(() => undefined)
      .then(() => {
        const child = spawn('/bin/sh', ['-c', command], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let timedOut = false;
        child.stdout.on('data', (d: Buffer) => out.push(d));
        child.stderr.on('data', (d: Buffer) => err.push(d));
        const kill = (): void => {
          child.kill('SIGKILL');
        };
        const timer = setTimeout(() => {
          timedOut = true;
          kill();
        }, SH_TIMEOUT_MS);
        signal.addEventListener('abort', kill, { once: true });
        child.on('error', (e) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', kill);
          resolve(`exit 127\n${e.message}`);
        });
        child.on('close', (code, sig) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', kill);
          // timeout(1) convention: 124 on timeout; 128+n style is not portable, so signals → 137.
          const exit = timedOut ? 124 : (code ?? (sig ? 137 : 1));
          const tail = timedOut ? `timed out after ${SH_TIMEOUT_MS} ms\n` : '';
          resolve(`exit ${exit}\n${Buffer.concat(out).toString('utf8')}${Buffer.concat(err).toString('utf8')}${tail}`);
        });
      });
  });
}

async function writeOutbox(cwd: string, rest: string): Promise<string> {
  const [name, content] = splitFirst(rest);
  if (!name) return 'usage: write <name> <content...>';
  if (name.includes('/') || name.includes('\\') || name.includes('..') || name === '.') {
    return `refused: invalid file name ${JSON.stringify(name)}`;
  }
  const dir = path.join(cwd, 'outbox');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, name), content);
  return `wrote ${name} (${Buffer.byteLength(content)} bytes)`;
}

async function ask(client: acp.AgentContext, sessionId: string, description: string): Promise<string> {
  const res = await client.request('session/request_permission', {
    sessionId,
    toolCall: {
      toolCallId: `ask-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      title: description || 'unspecified action',
      kind: 'other',
      status: 'pending',
      rawInput: { action: description },
    },
    options: [
      { optionId: 'allow', name: 'Allow once', kind: 'allow_once' },
      { optionId: 'reject', name: 'Reject', kind: 'reject_once' },
    ],
  });
  const granted = res.outcome.outcome === 'selected' && res.outcome.optionId === 'allow';
  return granted ? 'permission granted' : 'permission denied';
}

function mcpErrorText(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  let message = e instanceof Error ? e.message : String(e);
  if (typeof code === 'number') {
    message = message.replace(/^MCP error -?\d+:\s*/, '');
    return `mcp error ${code}: ${message}`;
  }
  return `mcp error: ${message}`;
}

async function callMcp(state: SessionState, rest: string): Promise<string> {
  const server = state.mcpServers.find(
    (s): s is acp.McpServerHttp & { type: 'http' } => 'type' in s && s.type === 'http' && 'url' in s,
  );
  if (!server) return 'mcp error: no MCP server';
  const [tool, json] = splitFirst(rest);
  if (!tool) return 'mcp error: usage: mcp <tool> <json args>';
  let args: Record<string, unknown> = {};
  if (json.trim()) {
    try {
      const parsed: unknown = JSON.parse(json);
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return 'mcp error: arguments must be a JSON object';
      args = parsed as Record<string, unknown>;
    } catch (e) {
      return `mcp error: invalid JSON arguments: ${(e as Error).message}`;
    }
  }
  const headers: Record<string, string> = {};
  for (const h of server.headers) headers[h.name] = h.value;
  const client = new Client({ name: 'reference-agent', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers } });
  try {
    await client.connect(transport);
    const result = await client.callTool({ name: tool, arguments: args });
    const content = Array.isArray(result.content) ? (result.content as Array<{ type?: string; text?: string }>) : [];
    const text = content
      .filter((c) => c.type === 'text' && typeof c.text === 'string')
      .map((c) => c.text)
      .join('');
    if (result.isError) {
      const m = /^MCP error (-?\d+):\s*([\s\S]*)$/.exec(text);
      return m ? `mcp error ${m[1]}: ${m[2]}` : `mcp error: ${text}`;
    }
    if (!text && 'toolResult' in result) return JSON.stringify(result.toolResult);
    return text;
  } catch (e) {
    return mcpErrorText(e);
  } finally {
    await client.close().catch(() => undefined);
  }
}

async function progress(client: acp.AgentContext, sessionId: string, n: number, signal: AbortSignal): Promise<void> {
  for (let i = 1; i <= n && !signal.aborted; i++) {
    const entries: acp.PlanEntry[] = [];
    for (let j = 1; j <= n && n <= 50; j++) {
      entries.push({ content: `step ${j}`, priority: 'medium', status: j <= i ? 'completed' : j === i + 1 ? 'in_progress' : 'pending' });
    }
    if (n > 50) entries.push({ content: `step ${i} of ${n}`, priority: 'medium', status: 'completed' });
    await client.notify('session/update', { sessionId, update: { sessionUpdate: 'plan', entries } });
  }
}

type TurnResult = { reply: string | null; stopReason?: acp.StopReason };

async function runCommand(client: acp.AgentContext, sessionId: string, text: string, whole: string, signal: AbortSignal): Promise<TurnResult> {
  const [cmd, rest] = splitFirst(text);
  const cwd = session(sessionId).cwd;
  switch (cmd) {
    case 'echo':
      return { reply: rest };
    case 'write':
      return { reply: await writeOutbox(cwd, rest) };
    case 'sh':
      if (!rest) return { reply: 'usage: sh <command line>' };
      return { reply: await runSh(rest, cwd, signal) };
    case 'remember': {
      const [key, value] = splitFirst(rest);
      if (!key) return { reply: 'usage: remember <key> <value...>' };
      await remember(key, value);
      return { reply: `remembered ${key}` };
    }
    case 'recall': {
      const key = rest.trim();
      const mem = await readMemory();
      return { reply: Object.prototype.hasOwnProperty.call(mem, key) ? String(mem[key]) : `nothing remembered for ${key}` };
    }
    case 'ask':
      return { reply: await ask(client, sessionId, rest) };
    case 'mcp':
      return { reply: await callMcp(session(sessionId), rest) };
    case 'progress': {
      const n = Number.parseInt(rest, 10);
      if (!Number.isFinite(n) || n < 0 || String(n) !== rest.trim()) return { reply: 'usage: progress <n>' };
      const count = Math.min(n, MAX_PROGRESS);
      await progress(client, sessionId, count, signal);
      return { reply: `done ${count}` };
    }
    case 'stall':
      await new Promise<void>((resolve) => {
        if (signal.aborted) return resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      return { reply: null, stopReason: 'cancelled' };
    case 'hang':
      // A stuck agent: this prompt never ends, whatever the client sends.
      await new Promise<never>(() => undefined);
      return { reply: null };
    case 'crash':
      log('crash requested: exiting with code 3');
      process.exit(3);
    // eslint-disable-next-line no-fallthrough
    case 'slow': {
      const ms = Number.parseInt(rest, 10);
      if (!Number.isFinite(ms) || ms < 0) return { reply: 'usage: slow <ms>' };
      await sleep(ms, signal);
      return { reply: `slept ${ms}` };
    }
    case 'prompt':
      return { reply: whole };
    default:
      return { reply: `unknown command: ${cmd}; try ${COMMANDS}` };
  }
}

function wholePrompt(blocks: acp.ContentBlock[]): string {
  return blocks
    .map((b) => (b.type === 'text' ? b.text : ''))
    .join('')
    .trim();
}

/** The command is the first paragraph; later ones are context the gateway adds (task, attachments). */
function promptText(blocks: acp.ContentBlock[]): string {
  return (wholePrompt(blocks).split(/\n[ \t]*\n/)[0] ?? '').trim();
}

// ---------------------------------------------------------------- ACP wiring

let sessionCounter = 0;

// Faults at start, for self-healing tests: REFERENCE_AGENT_CRASH_STARTS=N exits on the first N
// starts (counted in the workspace, so a restart sees the count); REFERENCE_AGENT_CRASH_IF=<file>
// exits on every start while <workspace>/<file> exists (a poisoned workspace);
// REFERENCE_AGENT_HANG_START=1 never answers initialize.
{
  const crashStarts = Number(process.env.REFERENCE_AGENT_CRASH_STARTS ?? '0');
  if (crashStarts > 0) {
    const counter = path.join(WORKSPACE, '.reference-agent', 'starts');
    let n = 0;
    try {
      n = Number(readFileSync(counter, 'utf8')) || 0;
    } catch {
      n = 0;
    }
    mkdirSync(path.dirname(counter), { recursive: true });
    writeFileSync(counter, String(n + 1));
    if (n < crashStarts) {
      log(`crash on start ${n + 1} of ${crashStarts}`);
      process.exit(4);
    }
  }
  const poison = process.env.REFERENCE_AGENT_CRASH_IF;
  if (poison && existsSync(path.join(WORKSPACE, poison))) {
    log(`poisoned workspace: ${poison} exists`);
    process.exit(5);
  }
}
const hangAtStart = process.env.REFERENCE_AGENT_HANG_START === '1';

function initializeResponse(): acp.InitializeResponse {
  return {
    protocolVersion: acp.PROTOCOL_VERSION,
    agentCapabilities: {
      // REFERENCE_AGENT_LOAD=0: an agent that cannot continue sessions (tests the gateway's fallback).
      loadSession: process.env.REFERENCE_AGENT_LOAD !== '0',
      promptCapabilities: { image: false, audio: false, embeddedContext: false },
      mcpCapabilities: { http: true, sse: false },
    },
    agentInfo: { name: 'reference-agent', title: 'agent-vm reference agent', version: '1.0.0' },
    authMethods: [],
  };
}

const app = acp
  .agent({ name: 'reference-agent' })
  .onRequest('initialize', async () => {
    if (hangAtStart) await new Promise<never>(() => undefined);
    return initializeResponse();
  })
  .onRequest('authenticate', () => ({}))
  .onRequest('session/new', ({ params }) => {
    const sessionId = `ref-${process.pid}-${Date.now().toString(36)}-${++sessionCounter}`;
    const s = session(sessionId);
    s.mcpServers = params.mcpServers ?? [];
    s.cwd = resolveCwd(params.cwd);
    return { sessionId };
  })
  .onRequest('session/load', ({ params }) => {
    const s = session(params.sessionId);
    s.mcpServers = params.mcpServers ?? [];
    s.cwd = resolveCwd(params.cwd);
    return {};
  })
  .onRequest('session/prompt', async ({ params, client, signal }) => {
    const state = session(params.sessionId);
    state.turn?.abort();
    const turn = new AbortController();
    state.turn = turn;
    const onAbort = (): void => turn.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const text = promptText(params.prompt);
      const result = await runCommand(client, params.sessionId, text, wholePrompt(params.prompt), turn.signal);
      if (result.reply !== null) {
        await client.notify('session/update', {
          sessionId: params.sessionId,
          update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: result.reply } },
        });
      }
      const stopReason: acp.StopReason = result.stopReason ?? (turn.signal.aborted ? 'cancelled' : 'end_turn');
      return { stopReason };
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (state.turn === turn) state.turn = null;
    }
  })
  .onNotification('session/cancel', ({ params }) => {
    sessions.get(params.sessionId)?.turn?.abort();
  });

const stream = acp.ndJsonStream(
  Writable.toWeb(process.stdout) as WritableStream<Uint8Array>,
  Readable.toWeb(process.stdin) as ReadableStream<Uint8Array>,
);
const connection = app.connect(stream);
log(`ready; workspace ${WORKSPACE}`);
void connection.closed.then(
  () => {
    log('connection closed');
    process.exit(0);
  },
  (e: unknown) => {
    log('connection failed:', e instanceof Error ? e.message : String(e));
    process.exit(1);
  },
);
