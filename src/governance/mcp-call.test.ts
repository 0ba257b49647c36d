import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leanToolCall, type LeanCallTarget } from './mcp-call.js';
import { createUpstreamFetch, ResponseTooLargeError } from './mcp-fetch.js';

/** A hostile tool server: the tool's name says how it answers. */
let server: http.Server;
let base: string;
const seen: Array<{ headers: http.IncomingHttpHeaders; body: Record<string, any> }> = [];
const http1 = createUpstreamFetch({ maxBytes: 64 * 1024 });

const reply = (res: http.ServerResponse, msg: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(msg));
const ok = (id: unknown) => ({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'done' }] } });

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString()));
    req.on('end', () => {
      const body = JSON.parse(raw) as Record<string, any>;
      seen.push({ headers: req.headers, body });
      if (body.method !== 'tools/call') return res.writeHead(202).end();
      const { id } = body;
      switch (body.params.name as string) {
        case 'json':
          return reply(res, ok(id));
        case 'batch':
          return reply(res, [{ jsonrpc: '2.0', method: 'notifications/message', params: {} }, ok(id)]);
        case 'error':
          return reply(res, { jsonrpc: '2.0', id, error: { code: -32602, message: 'bad arguments', data: { why: 'x' } } });
        case 'invalid':
          return reply(res, { jsonrpc: '2.0', id, result: { content: 'not a list' } });
        case 'other-id':
          return reply(res, ok(12345));
        case 'http500':
          return res.writeHead(500, { 'content-type': 'text/plain' }).end('boom');
        case 'not-json':
          return res.writeHead(200, { 'content-type': 'application/json' }).end('<html>');
        case 'huge':
          return reply(res, { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'x'.repeat(100_000) }] } });
        case 'sse': {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          // A ping and a changed tool list first, split across writes, then the answer (CRLF lines).
          res.write('event: message\ndata: {"jsonrpc":"2.0","id":"p1","method":"ping"}\n\n');
          res.write('data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\ndata: {"jsonrpc":"2.0",');
          return setTimeout(() => res.end(`"id":${id},"result":{"content":[{"type":"text","text":"é streamed"}]}}\r\n\r\n`), 10);
        }
        case 'sse-early-end':
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          return res.end('data: {"jsonrpc":"2.0","method":"notifications/message","params":{}}\n\n');
        case 'sse-endless': {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const t = setInterval(() => res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { x: 'y'.repeat(4096) } })}\n\n`), 1);
          return res.on('close', () => clearInterval(t));
        }
        case 'slow':
          return; // never answers
        default:
          return reply(res, { jsonrpc: '2.0', id, error: { code: -32601, message: 'unknown' } });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
});

afterAll(async () => {
  http1.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

let listChanged = 0;
const target = (over: Partial<LeanCallTarget> = {}): LeanCallTarget => ({
  url: new URL(base),
  headers: { Authorization: 'Bearer upstream-secret', Accept: 'text/html' },
  session: () => ({ sessionId: 'sess-1', protocolVersion: '2025-06-18' }),
  http: http1,
  timeoutMs: 5000,
  onListChanged: () => listChanged++,
  ...over,
});
const lastCall = () => seen.filter((s) => s.body.method === 'tools/call').at(-1)!;
const settle = () => new Promise((r) => setTimeout(r, 50));

describe('leanToolCall', () => {
  it('sends one JSON-RPC tools/call on the SDK session, with the server headers, and returns the result', async () => {
    const r = await leanToolCall(target(), 'json', { a: 1 });
    expect(r).toEqual({ content: [{ type: 'text', text: 'done' }] });
    const s = lastCall();
    expect(s.body).toMatchObject({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'json', arguments: { a: 1 } } });
    expect(typeof s.body.id).toBe('number');
    expect(s.headers).toMatchObject({ 'mcp-session-id': 'sess-1', 'mcp-protocol-version': '2025-06-18', authorization: 'Bearer upstream-secret', 'content-type': 'application/json' });
    // The protocol's accept header wins over a configured one.
    expect(s.headers.accept).toBe('application/json, text/event-stream');
  });

  it('finds its answer in a batch and reads an event stream, answering a ping and noting a changed tool list', async () => {
    expect(await leanToolCall(target(), 'batch', {})).toEqual({ content: [{ type: 'text', text: 'done' }] });
    const before = listChanged;
    expect(await leanToolCall(target(), 'sse', {})).toEqual({ content: [{ type: 'text', text: 'é streamed' }] });
    expect(listChanged).toBe(before + 1);
    await settle();
    expect(seen.some((s) => s.body.id === 'p1' && s.body.result !== undefined)).toBe(true);
  });

  it('throws the server error as McpError, and refuses a malformed result, a stray answer, a non-JSON body and an HTTP error', async () => {
    const err = await leanToolCall(target(), 'error', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect(err).toMatchObject({ code: -32602, data: { why: 'x' } });
    await expect(leanToolCall(target(), 'invalid', {})).rejects.toThrow(/not a tools\/call result/);
    await expect(leanToolCall(target(), 'other-id', {})).rejects.toThrow(/did not answer the call/);
    await expect(leanToolCall(target(), 'not-json', {})).rejects.toThrow(/not JSON/);
    await expect(leanToolCall(target(), 'http500', {})).rejects.toThrow(/HTTP 500.*boom/);
    await expect(leanToolCall(target(), 'sse-early-end', {})).rejects.toThrow(/closed its event stream before answering/);
  });

  it('bounds the answer, whole or streamed', async () => {
    await expect(leanToolCall(target(), 'huge', {})).rejects.toBeInstanceOf(ResponseTooLargeError);
    await expect(leanToolCall(target(), 'sse-endless', {})).rejects.toBeInstanceOf(ResponseTooLargeError);
  });

  it('times out as McpError(RequestTimeout) and tells the server the call was cancelled', async () => {
    const err = await leanToolCall(target({ timeoutMs: 100 }), 'slow', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(McpError);
    expect((err as McpError).code).toBe(ErrorCode.RequestTimeout);
    const id = lastCall().body.id;
    await settle();
    expect(seen.some((s) => s.body.method === 'notifications/cancelled' && s.body.params.requestId === id)).toBe(true);
  });

  it('ends with the caller signal, with its reason, and tells the server', async () => {
    const ac = new AbortController();
    const call = leanToolCall(target(), 'slow', {}, ac.signal);
    await settle();
    ac.abort(new Error('cancelled by the client'));
    await expect(call).rejects.toThrow('cancelled by the client');
    const id = lastCall().body.id;
    await settle();
    expect(seen.some((s) => s.body.method === 'notifications/cancelled' && s.body.params.requestId === id && s.body.params.reason === 'cancelled by the client')).toBe(true);
    // An already aborted signal sends nothing.
    const n = seen.length;
    const gone = new AbortController();
    gone.abort(new Error('gone'));
    await expect(leanToolCall(target(), 'json', {}, gone.signal)).rejects.toThrow('gone');
    await settle();
    expect(seen.length).toBe(n);
  });
});
