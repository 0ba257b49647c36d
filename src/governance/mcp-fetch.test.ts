import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fetchWithinOrigin } from '@modelcontextprotocol/sdk/shared/transport.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUpstreamFetch, ResponseTooLargeError } from './mcp-fetch.js';

/** A hostile tool server: each path answers differently. */
let server: http.Server;
let base: string;
const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const path = req.url ?? '';
      if (path === '/json') return res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 's1' }).end('{"ok":true}');
      if (path === '/big-declared') return res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10_000_000) }).end();
      if (path === '/endless') {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        const pump = () => {
          while (res.write(chunk)) if (res.destroyed) return;
          if (!res.destroyed) res.once('drain', pump);
        };
        res.on('close', () => res.removeAllListeners('drain'));
        return pump();
      }
      if (path === '/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: message\ndata: {"a":1}\n\n');
        return setTimeout(() => res.end('event: message\ndata: {"b":2}\n\n'), 20);
      }
      if (path === '/sse-endless') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const t = setInterval(() => res.write(`data: ${'x'.repeat(8192)}\n\n`), 1);
        return res.on('close', () => clearInterval(t));
      }
      if (path === '/hang') return; // never answers
      if (path === '/moved') return res.writeHead(307, { location: '/json' }).end();
      if (path === '/accepted') return res.writeHead(202).end();
      if (path === '/cut') {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
        res.write('{"partial":');
        return setTimeout(() => res.socket?.destroy(), 20);
      }
      if (path === '/odd-status') return res.writeHead(999, 'Not a real status').end('{}');
      if (path === '/odd-reason') return res.writeHead(200, 'caf\u00e9 \u00ff', { 'content-type': 'application/json', 'x-odd': 'caf\u00e9' }).end('{"ok":1}');
      res.writeHead(404).end('nope');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('upstream fetch (bounded, keep-alive)', () => {
  const { fetch: f, close } = createUpstreamFetch({ maxBytes: 1024 * 1024 });
  afterAll(() => close());

  it('sends the body and headers, and answers with status, headers and body as fetch does', async () => {
    const r = await f(`${base}/json`, { method: 'POST', headers: new Headers({ 'content-type': 'application/json', authorization: 'Bearer t' }), body: '{"x":1}' });
    expect(r.status).toBe(200);
    expect(r.ok).toBe(true);
    expect(r.headers.get('mcp-session-id')).toBe('s1');
    expect(await r.json()).toEqual({ ok: true });
    expect(seen.at(-1)).toMatchObject({ method: 'POST', body: '{"x":1}', headers: { authorization: 'Bearer t', 'content-type': 'application/json' } });
    const nf = await f(`${base}/nothing`, { method: 'GET' });
    expect([nf.status, await nf.text()]).toEqual([404, 'nope']);
    expect((await f(`${base}/accepted`, { method: 'POST', body: '{}' })).status).toBe(202);
  });

  it('refuses a body declared larger than the bound before reading it', async () => {
    await expect(f(`${base}/big-declared`, { method: 'POST', body: '{}' })).rejects.toBeInstanceOf(ResponseTooLargeError);
  });

  it('stops reading an endless answer at the bound', async () => {
    await expect(f(`${base}/endless`, { method: 'POST', body: '{}' })).rejects.toBeInstanceOf(ResponseTooLargeError);
  });

  it('streams an event stream as it arrives, and fails an endless one at the bound', async () => {
    const r = await f(`${base}/sse`, { method: 'POST', body: '{}' });
    expect(r.headers.get('content-type')).toBe('text/event-stream');
    expect(await r.text()).toBe('event: message\ndata: {"a":1}\n\nevent: message\ndata: {"b":2}\n\n');
    const endless = await f(`${base}/sse-endless`, { method: 'GET' });
    await expect(endless.text()).rejects.toThrow(/larger than 1048576 bytes/);
  });

  it('aborts through the signal', async () => {
    const ac = new AbortController();
    const p = f(`${base}/hang`, { method: 'POST', body: '{}', signal: ac.signal });
    setTimeout(() => ac.abort(new Error('cancelled by the client')), 20);
    await expect(p).rejects.toThrow();
  });

  it('an abort while an event stream is read ends the stream; a long-lived signal keeps no listener per request', async () => {
    const session = new AbortController(); // as the SDK's transport passes one signal for all its requests
    for (let i = 0; i < 30; i++) await (await f(`${base}/json`, { method: 'POST', body: '{}', signal: session.signal })).json();
    await (await f(`${base}/sse`, { method: 'POST', body: '{}', signal: session.signal })).text();
    await new Promise((r) => setImmediate(r));
    expect(EventEmitter.getEventListeners(session.signal, 'abort')).toHaveLength(0);
    const ac = new AbortController();
    const r = await f(`${base}/sse-endless`, { method: 'GET', signal: ac.signal });
    const reading = r.text();
    setTimeout(() => ac.abort(new Error('cancelled by the client')), 20);
    await expect(reading).rejects.toThrow(/cancelled by the client|aborted/);
  });

  it('fails the call, and throws nothing out of its event handlers, on a status a Response cannot hold', async () => {
    await expect(f(`${base}/odd-status`, { method: 'POST', body: '{}' })).rejects.toThrow(RangeError);
    const r = await f(`${base}/odd-reason`, { method: 'POST', body: '{}' });
    expect([r.status, await r.json()]).toEqual([200, { ok: 1 }]);
  });

  it('fails, rather than waits, when the server hangs up in the middle of an answer', async () => {
    await expect(f(`${base}/cut`, { method: 'POST', body: '{}' })).rejects.toThrow();
  });

  it('returns a redirect as it is; the SDK follows it within the origin, and the request is sent once', async () => {
    const before = seen.length;
    const r = await fetchWithinOrigin(f)(`${base}/moved`, { method: 'POST', body: '{"y":2}', headers: { 'content-type': 'application/json' } });
    expect(await r.json()).toEqual({ ok: true });
    expect(seen.slice(before).map((x) => `${x.method} ${x.url}`)).toEqual(['POST /moved', 'POST /json']);
    const raw = await f(`${base}/moved`, { method: 'POST', body: '{}', redirect: 'manual' });
    expect([raw.status, raw.headers.get('location')]).toEqual([307, '/json']);
    await expect(f(`${base}/moved`, { method: 'POST', body: '{}', redirect: 'error' })).rejects.toThrow(/redirect/);
  });
});
