/**
 * Request bodies are bounded on every endpoint before anything is verified (hostile: nobody needs
 * credentials to send a body). Through the real HTTP server (@hono/node-server, as `agent-vm up`
 * serves), a 256 MiB chunked upload (no Content-Length) to each endpoint is refused with 413
 * after the server read at most the limit plus a few socket reads, and memory does not grow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import type { Hono } from 'hono';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../src/body-limit.js';
import { createClickUpAdapter } from '../src/adapters/clickup/index.js';
import { createDiscordAdapter } from '../src/adapters/discord/index.js';
import { createLocalAdapter } from '../src/adapters/local/index.js';
import { createSlackAdapter } from '../src/adapters/slack/index.js';
import type { ChannelAdapter, HoldingIntake } from '../src/adapters/types.js';
import { createLogger } from '../src/log.js';
import { createApp } from '../src/server.js';
import { PUBLIC_KEY_HEX } from './helpers/discord.js';
import { chunkedUpload, serveApp, type Served } from './helpers/upload.js';

const MiB = 1024 * 1024;
const logger = createLogger('silent');
/**
 * What the server may read past the limit: the chunk that crosses it plus what the HTTP stack had
 * already buffered (Node's socket reads are up to 64 KiB; measured ≈ 190 KiB with the headers).
 * Bounded whatever the body's size: an unbounded read takes the whole 256 MiB.
 */
const OVERREAD = 256 * 1024;

let intakeCalls = 0;
const intake: HoldingIntake = {
  async accept() {
    intakeCalls += 1;
    return { status: 'accepted', profile: 'p' };
  },
  async hold() {
    intakeCalls += 1;
    return { status: 'held' };
  },
  async route() {
    return { status: 'accepted', profile: 'p' };
  },
  async drop() {},
  async held() {
    return [];
  },
};

const adapters: ChannelAdapter[] = [];
let app: Hono;
let served: Served;

beforeAll(async () => {
  adapters.push(
    createSlackAdapter({ signingSecret: 'slack-secret', botToken: 'xoxb-test', apiUrl: 'http://127.0.0.1:9/api/', intake, logger }),
    createDiscordAdapter({ publicKey: PUBLIC_KEY_HEX, applicationId: '1100000000000000001', apiUrl: 'http://127.0.0.1:9/api', intake, logger }),
    createClickUpAdapter({ webhookSecret: 'clickup-secret', token: 'pk_test', apiUrl: 'http://127.0.0.1:9/api/v2', intake, logger }),
    createLocalAdapter({ intake, watcher: { watch: async function* () {} }, apiToken: 'a-token-of-sixteen-chars', logger }),
  );
  app = createApp({ logger, checks: [], registry: new Registry() });
  for (const a of adapters) if (a.routes) app.route('/', a.routes);
  served = await serveApp(app);
});

afterAll(async () => {
  await served?.close();
  for (const a of adapters) await a.close?.();
});

const endpoints = ['/slack/events', '/slack/interactivity', '/discord/interactions', '/clickup/webhook', '/v1/messages', '/v1/approvals/x', '/not/a/route'];

describe('request bodies', () => {
  it('refuses a 256 MiB chunked body on every endpoint with 413, reading at most the limit plus a few socket reads, without lasting growth', async () => {
    const figures: Array<{ endpoint: string; status: number | undefined; bytesRead: number }> = [];
    // One refusal first, so code paths loaded on first use are not counted as growth.
    await chunkedUpload(`${served.url}/warm-up`, { totalBytes: 4 * MiB });
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    for (const endpoint of endpoints) {
      const before = served.bytesRead().length;
      const r = await chunkedUpload(`${served.url}${endpoint}`, { totalBytes: 256 * MiB, headers: { authorization: 'Bearer a-token-of-sixteen-chars' } });
      // The connection is closed once the answer is out: its count is final.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const read = served.bytesRead().slice(before).reduce((a, b) => a + b, 0);
      figures.push({ endpoint, status: r.status, bytesRead: read });
      expect(r.status, endpoint).toBe(413);
      expect(JSON.parse(r.body), endpoint).toMatchObject({ error: 'payload_too_large' });
      expect(read, `${endpoint}: server read ${read} bytes`).toBeLessThanOrEqual(DEFAULT_MAX_BODY_BYTES + OVERREAD);
    }
    global.gc?.();
    const rssAfter = process.memoryUsage().rss;
    // Seven 256 MiB attempts; the unbounded read grew RSS by 600+ MiB for one.
    expect(rssAfter - rssBefore, `RSS ${rssBefore} -> ${rssAfter}`).toBeLessThan(32 * MiB);
    expect(intakeCalls).toBe(0);
    console.info(JSON.stringify({ refused: figures, rssBeforeMiB: +(rssBefore / MiB).toFixed(1), rssAfterMiB: +(rssAfter / MiB).toFixed(1) }));
  });

  it('refuses a declared 256 MiB Content-Length through the real server after reading next to nothing', async () => {
    const figures: Array<{ endpoint: string; bytesRead: number }> = [];
    for (const endpoint of endpoints) {
      const before = served.bytesRead().length;
      const r = await chunkedUpload(`${served.url}${endpoint}`, { totalBytes: 256 * MiB, declared: true, headers: { authorization: 'Bearer a-token-of-sixteen-chars' } });
      await new Promise((resolve) => setTimeout(resolve, 50));
      const read = served.bytesRead().slice(before).reduce((a, b) => a + b, 0);
      figures.push({ endpoint, bytesRead: read });
      expect(r.status, endpoint).toBe(413);
      expect(read, `${endpoint}: server read ${read} bytes`).toBeLessThanOrEqual(OVERREAD);
    }
    expect(intakeCalls).toBe(0);
    console.info(JSON.stringify({ refusedByContentLength: figures }));
  });

  it('refuses a declared Content-Length over the limit without reading the body', async () => {
    for (const endpoint of endpoints) {
      const res = await app.request(endpoint, {
        method: 'POST',
        headers: { 'content-length': String(DEFAULT_MAX_BODY_BYTES + 1), 'content-type': 'application/json' },
        body: new ReadableStream({
          pull() {
            throw new Error(`${endpoint} read a body whose declared length is over the limit`);
          },
        }),
        duplex: 'half',
      } as RequestInit);
      expect(res.status, endpoint).toBe(413);
      expect(await res.json()).toMatchObject({ error: 'payload_too_large' });
    }
  });

  it('hands a body within the limit on whole, and reads it once under nested limits', async () => {
    const { Hono } = await import('hono');
    const inner = new Hono();
    inner.post('/echo', limitBody(64), async (c) => c.json({ got: await c.req.text() }));
    const outer = createApp({ logger, checks: [], registry: new Registry(), maxBodyBytes: 128 });
    outer.route('/', inner);
    const ok = await outer.request('/echo', { method: 'POST', body: 'x'.repeat(64) });
    expect(await ok.json()).toEqual({ got: 'x'.repeat(64) });
    // Within the app's limit, over the route's: the route's own limit holds.
    const over = await outer.request('/echo', { method: 'POST', body: 'x'.repeat(65) });
    expect(over.status).toBe(413);
    expect(over.headers.get('connection')).toBe('close');
    expect((await outer.request('/echo', { method: 'POST', body: 'x'.repeat(129) })).status).toBe(413);
  });

  it('reads a body with a declared length straight from the Node request, through the real server, nested limits included', async () => {
    const { Hono } = await import('hono');
    const inner = new Hono();
    inner.post('/echo', limitBody(64), async (c) => c.json({ got: await c.req.text(), type: c.req.header('content-type') }));
    const outer = createApp({ logger, checks: [], registry: new Registry(), maxBodyBytes: 128 });
    outer.route('/', inner);
    const s = await serveApp(outer);
    try {
      const ok = await fetch(`${s.url}/echo`, { method: 'POST', body: 'é'.repeat(32), headers: { 'content-type': 'text/plain; charset=utf-8' } });
      expect(await ok.json()).toEqual({ got: 'é'.repeat(32), type: 'text/plain; charset=utf-8' });
      const over = await fetch(`${s.url}/echo`, { method: 'POST', body: 'x'.repeat(65) });
      expect(over.status).toBe(413);
      expect(over.headers.get('connection')).toBe('close');
      // Keep-alive: the next request on the server still reads its own body, whole.
      const again = await fetch(`${s.url}/echo`, { method: 'POST', body: 'y'.repeat(10) });
      expect(await again.json()).toMatchObject({ got: 'y'.repeat(10) });
    } finally {
      await s.close();
    }
  });

  it('hands the body read from the Node request to every way of reading it: Hono, the raw request, a clone', async () => {
    const { Hono } = await import('hono');
    const app = createApp({ logger, checks: [], registry: new Registry(), maxBodyBytes: 1024 });
    const inner = new Hono();
    inner.post('/json', async (c) => c.json({ json: await c.req.json(), text: await c.req.text(), bytes: (await c.req.arrayBuffer()).byteLength }));
    inner.post('/raw', async (c) => c.json({ raw: await c.req.raw.text(), used: c.req.raw.bodyUsed, method: c.req.raw.method, sig: c.req.raw.headers.get('x-sig') }));
    inner.post('/clone', async (c) => c.json({ clone: await c.req.raw.clone().text(), form: (await c.req.formData()).get('a') }));
    app.route('/', inner);
    const s = await serveApp(app);
    try {
      const body = JSON.stringify({ a: 'é\u0000', n: 1 });
      const j = await (await fetch(`${s.url}/json`, { method: 'POST', body, headers: { 'content-type': 'application/json' } })).json();
      expect(j).toEqual({ json: { a: 'é\u0000', n: 1 }, text: body, bytes: Buffer.byteLength(body) });
      const r = await (await fetch(`${s.url}/raw`, { method: 'POST', body, headers: { 'x-sig': 'v0=1' } })).json();
      expect(r).toEqual({ raw: body, used: true, method: 'POST', sig: 'v0=1' });
      const form = await (await fetch(`${s.url}/clone`, { method: 'POST', body: 'a=b%20c', headers: { 'content-type': 'application/x-www-form-urlencoded' } })).json();
      expect(form).toEqual({ clone: 'a=b%20c', form: 'b c' });
    } finally {
      await s.close();
    }
  });
});
