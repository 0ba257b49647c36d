/**
 * Hostile input at the MCP proxy, on both database backends: tool names, arguments, JSON-RPC ids
 * and methods holding NUL, lone surrogates, bidi controls, megabyte strings and deep nesting, sent
 * raw over HTTP the way a compromised agent would. After every request the proxy must still answer
 * a normal allowed call, list its tools, keep an intact audit chain (`verify`), and have written a
 * row for every decision it made; every call that reached the upstream has its allow row. No
 * answer may carry SQL or driver text, and closing loses no row.
 *
 * Before the audit trail made rows storable centrally, the first case (`up__x\0`) wedged the
 * profile: the row could not be inserted, the queue retried it forever, and every later call was
 * denied with a message quoting the failed INSERT.
 */
import { Writable } from 'node:stream';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog, type AuditLog, type AuditRow } from '../src/governance/audit.js';
import { createMcpProxy, type McpProxy, type McpSessionEndpoint } from '../src/governance/mcp-proxy.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import type { Store } from '../src/store/index.js';
import { mcpClient, startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { storeBackends } from './helpers/stores.js';

const MB = 1_000_000;

function manifest(id: string, url: string): Profile {
  const r = validateProfile(
    {
      version: 1, id, name: id, agent: { command: ['node', 'agent.mjs'] }, risk: 'L1',
      bindings: [{ platform: 'local', channels: [id] }],
      tools: { servers: [{ name: 'srv', url }], allow: ['srv.echo', 'srv.add'] },
    },
    `${id}.yaml`,
  );
  if (!r.profile) throw new Error(JSON.stringify(r.issues));
  return r.profile;
}

const rpc = (method: unknown, params: unknown, id: unknown = 1): string => JSON.stringify({ jsonrpc: '2.0', id, method, params });
const call = (name: unknown, args: unknown, id: unknown = 1): string => rpc('tools/call', { name, arguments: args }, id);
const nested = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;

/** What a hostile agent sends, and whether the upstream must see it (an allowed tool, forwarded). */
const CASES: Array<{ what: string; body: () => string; forwarded?: boolean }> = [
  { what: 'tool name with NUL (issue 10.2)', body: () => call('up__x\u0000', {}) },
  { what: 'allowed name plus NUL', body: () => call('srv__echo\u0000', { text: 'x' }) },
  { what: 'lone high surrogate as name', body: () => call('\ud800', {}) },
  { what: 'allowed name plus lone low surrogate', body: () => call('srv__echo\udfff', { text: 'x' }) },
  { what: 'bidi override and line breaks in name', body: () => call('srv__echo\u202e\r\n[ok]', { text: 'x' }) },
  { what: '1 MB tool name', body: () => call('a'.repeat(MB), {}) },
  { what: '1 MB name cut inside a surrogate pair', body: () => call(`x${'\u{1F600}'.repeat(240_000)}`, {}) },
  { what: 'prototype names', body: () => call('__proto__', { constructor: { prototype: 1 } }) },
  { what: 'constructor name', body: () => call('constructor', {}) },
  { what: 'non-string name', body: () => call({ toString: 'x' }, {}) },
  { what: 'allowed call, NUL in argument', body: () => call('srv__echo', { text: 'a\u0000b' }), forwarded: true },
  { what: 'allowed call, lone surrogate in argument', body: () => call('srv__echo', { text: 'a\ud800b' }), forwarded: true },
  { what: 'allowed call, NUL and surrogate in argument keys', body: () => call('srv__echo', { text: 'k', '\u0000': 1, '\udc00': [1] }), forwarded: true },
  { what: 'allowed call, 1 MB argument', body: () => call('srv__echo', { text: 'y'.repeat(MB) }), forwarded: true },
  { what: 'allowed call, 60k keys', body: () => call('srv__echo', { text: 'k', ...Object.fromEntries(Array.from({ length: 60_000 }, (_, i) => [`k${i}`, i])) }), forwarded: true },
  {
    what: 'allowed call, arguments nested 100k deep',
    body: () => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"srv__echo","arguments":{"text":"d","deep":${nested(100_000)}}}}`,
  },
  { what: 'denied call, arguments nested 100k deep', body: () => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"srv__nope","arguments":{"d":${nested(100_000)}}}}` },
  { what: 'arguments not an object', body: () => call('srv__echo', ['text']) },
  { what: 'id with NUL', body: () => call('srv__nope', {}, 'id\u0000') },
  { what: 'id lone surrogate', body: () => call('srv__nope', {}, '\ud800') },
  { what: 'id 500 kB', body: () => call('srv__nope', {}, 'i'.repeat(500_000)) },
  { what: 'id huge number', body: () => call('srv__nope', {}, 1e308) },
  { what: 'id object', body: () => call('srv__nope', {}, { a: 1 }) },
  { what: 'method with NUL', body: () => rpc('tools/call\u0000', { name: 'srv__echo', arguments: { text: 'x' } }) },
  { what: 'method lone surrogate', body: () => rpc('\ud800', {}) },
  { what: 'method 1 MB', body: () => rpc('m'.repeat(MB), {}) },
  { what: 'method __proto__', body: () => rpc('__proto__', {}) },
  { what: 'tools/list with hostile cursor', body: () => rpc('tools/list', { cursor: '\u0000\ud800' }) },
  { what: 'not JSON', body: () => '{"jsonrpc":"2.0",' },
  { what: 'JSON nested 200k deep', body: () => nested(200_000) },
  { what: 'empty batch', body: () => '[]' },
  { what: 'batch of hostile calls', body: () => `[${call('up__x\u0000', {}, 1)},${call('\ud800', {}, 2)}]` },
];

/** Requests that the proxy decided (an answer from our handler), as opposed to protocol errors from the SDK. */
function decisions(json: unknown): number {
  const msgs = Array.isArray(json) ? json : [json];
  let n = 0;
  for (const m of msgs as Array<{ result?: unknown; error?: { message?: string } }>) {
    if (m && typeof m === 'object' && 'result' in m && m.result && typeof m.result === 'object' && 'content' in (m.result as object)) n++;
    else if (m?.error?.message?.startsWith('Unknown tool:')) n++;
  }
  return n;
}

describe.each(storeBackends('fuzz'))('MCP proxy under hostile input ($kind)', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  let audit: AuditLog;
  let upstream: FakeUpstream;
  let proxy: McpProxy;
  let ep: McpSessionEndpoint;
  let client: Client;
  const logs: string[] = [];
  const profile = `fuzz-${backend.kind}`;
  let expectedCallRows = 0;

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    audit = createAuditLog(store.audit);
    upstream = await startFakeUpstream();
    const logger = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) }));
    proxy = await createMcpProxy({
      listen: { host: '127.0.0.1', port: 0 }, pins: store.pins, audit, logger, upstreamTimeoutMs: 10_000,
      secrets: createSecretResolver({ env: {} }),
    });
    await proxy.register(manifest(profile, upstream.url));
    ep = proxy.sessionEndpoint({ profile, sessionKey: 'hostile', turnId: 'turn-1' });
    client = await mcpClient(ep);
  });

  afterAll(async () => {
    await client?.close().catch(() => undefined);
    await proxy?.close();
    await upstream?.close();
    await close?.();
  });

  async function send(body: string): Promise<{ status: number; text: string; json: unknown }> {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    for (const h of ep.headers) headers[h.name] = h.value;
    const res = await fetch(ep.url, { method: 'POST', headers, body });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, text, json };
  }

  async function callRows(): Promise<AuditRow[]> {
    await proxy.flush();
    const all: AuditRow[] = [];
    for (let after = 0; ; ) {
      const page = await store.audit.after(after, 1000);
      if (page.length === 0) return all.filter((r) => r.profile === profile && r.action === 'tool.call');
      all.push(...page);
      after = page.at(-1)!.seq;
    }
  }

  it.each(CASES.map((c, i) => ({ ...c, i })))('$what: still serves, verifies, and audits every decision', async ({ body, forwarded, i }) => {
    const upstreamBefore = upstream.totalCalls();
    const r = await send(body());
    expect(r.status).toBeLessThan(500);
    // Nothing internal reaches the agent.
    expect(r.text).not.toMatch(/Failed query|insert into|audit trail cannot|PostgresError|invalid byte sequence/i);
    expectedCallRows += decisions(r.json);

    const marker = `still-ok-${i}`;
    const ok = await client.callTool({ name: 'srv__echo', arguments: { text: marker } });
    expect(ok.isError).toBeFalsy();
    expect((ok.content as Array<{ text: string }>)[0]?.text).toBe(marker);
    expectedCallRows += 1;
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['srv__add', 'srv__echo']);

    const rows = await callRows();
    expect(rows).toHaveLength(expectedCallRows);
    expect(rows.at(-1)).toMatchObject({ decision: 'allow', subject: 'srv.echo', data: { turn: 'turn-1' } });
    const executed = upstream.totalCalls() - upstreamBefore;
    if (forwarded) expect(executed).toBe(2);
    // Every call the upstream saw has its allow row.
    const allowRows = rows.filter((x) => x.decision === 'allow').length;
    expect(allowRows).toBeGreaterThanOrEqual(upstream.totalCalls());
    expect(await audit.verify()).toMatchObject({ ok: true });
  });

  it('stored the hostile names storably, with the hash of what was sent, and lost nothing at close', async () => {
    const rows = await callRows();
    const nul = rows.find((x) => x.subject?.startsWith('up__x'));
    expect(nul).toMatchObject({ decision: 'deny', subject: 'up__x\u2400', reason: 'not in the tool allowlist' });
    expect((nul!.data as { subjectSha256?: string }).subjectSha256).toMatch(/^[0-9a-f]{64}$/);
    const long = rows.find((x) => x.subject?.startsWith('aaaa'));
    expect(long!.subject!.length).toBeLessThanOrEqual(256);
    const deep = rows.find((x) => x.reason === 'the arguments cannot be audited (nested too deeply)');
    expect(deep).toMatchObject({ decision: 'deny', subject: 'srv.echo', data: { argsHash: null } });
    await proxy.close();
    expect(logs.join('')).not.toContain('rows unwritten');
    expect(await audit.verify()).toMatchObject({ ok: true });
  });
});
