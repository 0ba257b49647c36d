/**
 * The model relay against what a compromised agent might send, and its streaming claim: answers
 * go through chunk by chunk (a provider that pauses mid-stream has already been heard by the
 * client), oversized bodies are refused without being read, and malformed paths, names and headers
 * never reach a provider.
 */
import http from 'node:http';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelProvider } from '../src/governance/model-relay/index.js';
import { authHeaders, deferred, rawRequest, rawSocket, startHarness, streamingCall, type Harness } from './fakes/providers/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ maxRequestBytes: 64 * 1024 });
});
afterAll(async () => {
  await h?.close();
});

const PROVIDERS: ModelProvider[] = ['anthropic', 'openai', 'gemini'];
const MODEL: Record<ModelProvider, string> = { anthropic: 'claude-sonnet-4-5-20250929', openai: 'gpt-5-codex', gemini: 'gemini-2.5-flash' };

function session(provider: ModelProvider) {
  const profile = `p-${randomUUID()}`;
  const turnId = `t-${randomUUID()}`;
  const issued = h.issue(provider, { profile });
  h.relay.beginTurn({ profile, turnId });
  return { profile, turnId, ...issued };
}

const totalRequests = () => Object.values(h.fakes).reduce((n, f) => n + f.requests.length, 0);

describe('streaming is unbuffered', () => {
  it.each(PROVIDERS)('%s: the first events reach the client while the provider is still paused mid-stream', async (provider) => {
    const s = session(provider);
    const gate = deferred();
    h.fakes[provider].enqueue({ text: 'alpha beta gamma delta epsilon zeta eta theta', hold: { afterEvents: 2, until: gate.promise } });
    const call = streamingCall(provider, MODEL[provider]);
    const u = new URL(h.relay.url);
    const chunks: string[] = [];
    const firstChunk = deferred();
    const done = new Promise<{ status: number; contentType: string | undefined }>((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, method: 'POST', path: call.path, headers: { ...authHeaders(provider, s.token), 'content-type': 'application/json' } }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          chunks.push(c);
          firstChunk.resolve();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'] }));
      });
      req.on('error', reject);
      req.end(call.body);
    });
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no byte before the provider finished: the relay buffers')), 3000));
    await Promise.race([firstChunk.promise, timeout]);
    // The provider has not finished: it is waiting on the gate.
    expect(h.fakes[provider].requests.at(-1)!.status).toBe(0);
    const early = chunks.join('');
    expect(early).toMatch(provider === 'anthropic' ? /message_start/ : provider === 'openai' ? /response\.created/ : /candidates/);
    expect(early).not.toMatch(/message_stop|response\.completed|"finishReason"/);
    gate.resolve();
    const r = await done;
    expect(r.status).toBe(200);
    expect(r.contentType).toMatch(/^text\/event-stream/);
    expect(chunks.join('')).toMatch(provider === 'anthropic' ? /message_stop/ : provider === 'openai' ? /response\.completed/ : /"finishReason":"STOP"/);
  });

  it('a client that goes away mid-stream stops the upstream read (call reported incomplete)', async () => {
    const s = session('openai');
    const gate = deferred();
    h.fakes.openai.enqueue({ text: 'a b c d e f g h i j k', hold: { afterEvents: 3, until: gate.promise } });
    const call = streamingCall('openai', MODEL.openai);
    const u = new URL(h.relay.url);
    await new Promise<void>((resolve) => {
      const req = http.request({ host: u.hostname, port: u.port, method: 'POST', path: call.path, headers: { ...authHeaders('openai', s.token), 'content-type': 'application/json' } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end(call.body);
    });
    const e = await h.waitFor('call', (x) => x.profile === s.profile);
    expect(e.completed).toBe(false);
    gate.resolve();
  });
});

describe('request bodies are bounded', () => {
  it('a declared Content-Length over the cap is 413 before any of the body is read', async () => {
    const s = session('anthropic');
    const before = totalRequests();
    const answer = await rawSocket(h.relay.url, `POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: ${s.token}\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n`, /request_too_large/);
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toContain('request_too_large');
    expect(totalRequests()).toBe(before);
  });

  it('a chunked body is counted as it arrives: 413 while the client is still sending, the rest never read', async () => {
    // Repeated: the 413 must reach the client every time, never lost to a reset.
    for (let round = 0; round < 5; round++) await chunkedOverLimit();
  });

  it('a client that keeps sending after the 413 is cut after the bounded drain', async () => {
    const s = session('openai');
    const u = new URL(h.relay.url);
    const t0 = Date.now();
    const outcome = await new Promise<{ sent: number; answer: string }>((resolve) => {
      const sock = net.connect({ host: u.hostname, port: Number(u.port) });
      let sent = 0;
      let answer = '';
      const chunk = Buffer.alloc(64 * 1024, 'a');
      const pump = () => {
        while (!sock.destroyed && sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!sock.write(`${chunk.length.toString(16)}\r\n${chunk.toString('latin1')}\r\n`)) return void sock.once('drain', pump);
        }
      };
      sock.on('connect', () => {
        sock.write(`POST /openai/v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.token}\r\ntransfer-encoding: chunked\r\n\r\n`);
        pump();
      });
      sock.on('data', (d) => void (answer += d.toString('latin1')));
      sock.on('error', () => undefined);
      sock.on('close', () => resolve({ sent, answer }));
    });
    expect(outcome.answer).toMatch(/^HTTP\/1\.1 413 /);
    // Cut long before the 64 MiB the client meant to send (cap + drain + socket buffers).
    expect(outcome.sent).toBeLessThan(32 * 1024 * 1024);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

/** Sends a chunked body past the cap, slowly, until the relay answers; checks the answer came early. */
async function chunkedOverLimit(): Promise<void> {
  const s = session('openai');
  const u = new URL(h.relay.url);
  const result = await new Promise<{ answer: string; sentAtAnswer: number }>((resolve, reject) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    let sent = 0;
    let answer = '';
    let sentAtAnswer = -1;
    const chunk = Buffer.alloc(16 * 1024, 'a');
    let timer: NodeJS.Timeout | undefined;
    sock.on('connect', () => {
      sock.write(`POST /openai/v1/responses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${s.token}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`);
      timer = setInterval(() => {
        if (sentAtAnswer >= 0 || sent > 8 * 1024 * 1024 || sock.destroyed) return;
        sock.write(`${chunk.length.toString(16)}\r\n`);
        sock.write(chunk);
        sock.write('\r\n');
        sent += chunk.length;
      }, 1);
    });
    sock.on('data', (d) => {
      if (sentAtAnswer < 0) sentAtAnswer = sent;
      answer += d.toString('latin1');
      // A client reads the refusal and stops sending; the relay drops what was still in flight.
      if (answer.includes('request_too_large')) sock.destroy();
    });
    const finish = () => {
      clearInterval(timer);
      resolve({ answer, sentAtAnswer });
    };
    sock.on('close', finish);
    sock.on('error', () => (answer ? finish() : reject(new Error('connection failed before an answer'))));
  });
  expect(result.answer).toMatch(/^HTTP\/1\.1 413 /);
  expect(result.sentAtAnswer).toBeGreaterThan(64 * 1024);
  expect(result.sentAtAnswer).toBeLessThan(1024 * 1024);
}

describe('hostile inputs', () => {
  it('a NUL in the model name is refused (403), shown escaped in the note, and never forwarded', async () => {
    const s = session('anthropic');
    const before = totalRequests();
    const r = await rawRequest(h.relay.url, {
      path: '/anthropic/v1/messages',
      headers: { ...authHeaders('anthropic', s.token), 'content-type': 'application/json' },
      body: JSON.stringify({ model: `${MODEL.anthropic}\u0000\u202e`, max_tokens: 5, messages: [] }),
    });
    expect(r.status).toBe(403);
    expect(r.body).not.toContain('\\u0000\u202e');
    const e = await h.waitFor('model_denied', (x) => x.profile === s.profile);
    expect(e.model).toBe(`${MODEL.anthropic}\\u0000\\u202e`);
    expect(e.note).not.toMatch(/[\u0000\u202e]/);
    expect(totalRequests()).toBe(before);
  });

  it('bodies that are not JSON or name no model are 400 in the provider format', async () => {
    const s = session('openai');
    const headers = { ...authHeaders('openai', s.token), 'content-type': 'application/json' };
    const notJson = await rawRequest(h.relay.url, { path: '/openai/v1/responses', headers, body: '{"model":' });
    expect(notJson.status).toBe(400);
    expect(JSON.parse(notJson.body).error.message).toContain('not JSON');
    const noModel = await rawRequest(h.relay.url, { path: '/openai/v1/responses', headers, body: JSON.stringify({ model: { $ne: null }, input: 'x' }) });
    expect(noModel.status).toBe(400);
  });

  it('a 1 MB header is refused (431) and the relay keeps serving', async () => {
    const answer = await rawSocket(h.relay.url, `POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(1024 * 1024)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    const s = session('gemini');
    const call = streamingCall('gemini', MODEL.gemini);
    expect((await rawRequest(h.relay.url, { path: call.path, headers: authHeaders('gemini', s.token), body: call.body })).status).toBe(200);
  });

  it('path tricks (dot segments, escapes, absolute form, odd model segments) are 404 and never forwarded', async () => {
    const o = session('openai');
    const g = session('gemini');
    const before = totalRequests();
    const targets = [
      ['/anthropic/../openai/v1/responses', o.token],
      ['/anthropic/%2e%2e/openai/v1/responses', o.token],
      ['/openai/v1/responses/../../anthropic/v1/messages', o.token],
      ['/openai/./v1/responses', o.token],
      ['//openai/v1/responses', o.token],
      ['/openai/v1//responses', o.token],
      ['/openai%2fv1/responses', o.token],
      ['http://api.openai.com/openai/v1/responses', o.token],
      ['/openai/v1/files', o.token],
      ['/gemini/v1beta/models/..:generateContent', g.token],
      ['/gemini/v1beta/models/gemini-2.5-flash%2F..%2F..%2Ffoo:generateContent', g.token],
      ['/gemini/v1beta/models/gemini-2.5-flash:generateContent/..', g.token],
      ['/gemini/v1beta/tunedModels/x:generateContent', g.token],
    ] as const;
    for (const [target, token] of targets) {
      const answer = await rawSocket(
        h.relay.url,
        `POST ${target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nx-goog-api-key: ${token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`,
      );
      expect(answer, target).toMatch(/^HTTP\/1\.1 40[04] /);
    }
    expect(totalRequests()).toBe(before);
  });

  it('query parameters other than the listed ones are dropped (Gemini alt=sse passes, key= never does)', async () => {
    const s = session('gemini');
    const call = streamingCall('gemini', MODEL.gemini);
    const r = await rawRequest(h.relay.url, { path: `${call.path}&key=${s.token}&$fields=x&upload_protocol=raw`, headers: {}, body: call.body });
    expect(r.status).toBe(200);
    expect(h.fakes.gemini.requests.at(-1)!.query).toEqual({ alt: 'sse' });
  });

  it('a provider that cannot be reached is 502 in its format, with an event', async () => {
    const closed = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(port));
      });
    });
    const local = await startHarness({ upstreams: { anthropic: `http://127.0.0.1:${closed}`, openai: `http://127.0.0.1:${closed}`, gemini: `http://127.0.0.1:${closed}` } });
    try {
      const { token } = local.issue('anthropic', { profile: 'pu' });
      local.relay.beginTurn({ profile: 'pu', turnId: 't' });
      const call = streamingCall('anthropic', MODEL.anthropic);
      const r = await rawRequest(local.relay.url, { path: call.path, headers: { ...authHeaders('anthropic', token), 'content-type': 'application/json' }, body: call.body });
      expect(r.status).toBe(502);
      expect(JSON.parse(r.body)).toMatchObject({ type: 'error', error: { type: 'api_error' } });
      expect((await local.waitFor('upstream_error', (e) => e.profile === 'pu')).status).toBe(502);
    } finally {
      await local.close();
    }
  });
});
