/**
 * The model relay with the providers' official SDKs in front and the fake provider APIs behind:
 * the real key reaches the provider and only it; the sandbox's token works only during a turn of
 * its profile; model allowlist, daily budget, pass-through of provider errors, usage from JSON and
 * streams, model lists filtered.
 */
import { randomUUID } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { upstreamUrl } from '../src/governance/model-relay/forward.js';
import { createModelRelay, type ModelProvider } from '../src/governance/model-relay/index.js';
import { anthropic as anthropicSpec } from '../src/governance/model-relay/providers.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import { authHeaders, rawRequest, startHarness, streamingCall, type Harness } from './fakes/providers/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

const PROVIDERS: ModelProvider[] = ['anthropic', 'openai', 'gemini'];
const MODEL: Record<ModelProvider, string> = { anthropic: 'claude-sonnet-4-5-20250929', openai: 'gpt-5-codex', gemini: 'gemini-2.5-flash' };

/** A fresh profile with an open turn and a token for `provider`. */
function session(provider: ModelProvider, over: Parameters<Harness['issue']>[1] = {}) {
  const profile = `p-${randomUUID()}`;
  const turnId = `t-${randomUUID()}`;
  const issued = h.issue(provider, { profile, ...over });
  h.relay.beginTurn({ profile, turnId });
  return { profile, turnId, ...issued };
}

const anthropicClient = (env: Record<string, string>) => new Anthropic({ apiKey: env.ANTHROPIC_API_KEY!, baseURL: env.ANTHROPIC_BASE_URL!, maxRetries: 0 });
const openaiClient = (env: Record<string, string>) => new OpenAI({ apiKey: env.OPENAI_API_KEY!, baseURL: env.OPENAI_BASE_URL!, maxRetries: 0 });
const geminiClient = (env: Record<string, string>) => new GoogleGenAI({ apiKey: env.GEMINI_API_KEY!, httpOptions: { baseUrl: env.GOOGLE_GEMINI_BASE_URL! } });

/** Every header and query value the fake saw, to prove the relay token never arrived. */
function everythingSeen(provider: ModelProvider): string {
  return JSON.stringify(h.fakes[provider].requests.map((r) => ({ h: r.headers, q: r.query, c: r.credential })));
}

describe('the key never enters the sandbox', () => {
  it('env: the base URL on the relay and the token in each provider\'s usual variable', () => {
    const a = session('anthropic');
    expect(a.env).toEqual({ ANTHROPIC_BASE_URL: `${h.relay.url}/anthropic`, ANTHROPIC_API_KEY: a.token });
    expect(session('openai').env).toMatchObject({ OPENAI_BASE_URL: `${h.relay.url}/openai/v1` });
    expect(session('gemini').env).toMatchObject({ GOOGLE_GEMINI_BASE_URL: `${h.relay.url}/gemini` });
    expect(a.token).not.toContain(h.fakes.anthropic.apiKey);
  });

  it('Anthropic SDK (x-api-key and Bearer auth token) streams through; only the real key reaches the provider', async () => {
    const s = session('anthropic');
    h.fakes.anthropic.enqueue({ text: 'first', toolCall: { name: 'bash', args: { cmd: 'ls' } } }, { text: 'second' });
    const m1 = await anthropicClient(s.env).messages.stream({ model: MODEL.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'x' }] }).finalMessage();
    expect(m1.content[1]).toMatchObject({ type: 'tool_use', name: 'bash', input: { cmd: 'ls' } });
    const bearer = new Anthropic({ authToken: s.token, apiKey: null, baseURL: s.env.ANTHROPIC_BASE_URL!, maxRetries: 0 });
    const m2 = await bearer.messages.create({ model: MODEL.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'x' }] });
    expect(m2.content[0]).toMatchObject({ type: 'text', text: 'second' });
    const seen = h.fakes.anthropic.requests.slice(-2);
    expect(seen.map((r) => r.credential)).toEqual([h.fakes.anthropic.apiKey, h.fakes.anthropic.apiKey]);
    expect(seen.map((r) => r.headers.authorization)).toEqual([undefined, undefined]);
    expect(everythingSeen('anthropic')).not.toContain(s.token);
  });

  it('OpenAI SDK (Responses stream, Chat Completions) streams through; only the real key reaches the provider', async () => {
    const s = session('openai');
    h.fakes.openai.enqueue({ toolCall: { name: 'shell', args: { command: ['pwd'] } } }, { text: 'chat answer' });
    let completed: OpenAI.Responses.Response | undefined;
    for await (const e of await openaiClient(s.env).responses.create({ model: MODEL.openai, input: 'x', stream: true })) {
      if (e.type === 'response.completed') completed = e.response;
    }
    expect(completed?.output[0]).toMatchObject({ type: 'function_call', name: 'shell' });
    const chat = await openaiClient(s.env).chat.completions.stream({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'x' }] }).finalChatCompletion();
    expect(chat.choices[0]!.message.content).toBe('chat answer');
    expect(h.fakes.openai.requests.slice(-2).map((r) => r.credential)).toEqual([h.fakes.openai.apiKey, h.fakes.openai.apiKey]);
    expect(everythingSeen('openai')).not.toContain(s.token);
  });

  it('Gemini SDK (x-goog-api-key) and ?key= stream through; only the real key reaches the provider, never in the query', async () => {
    const s = session('gemini');
    h.fakes.gemini.enqueue({ text: 'from gemini', toolCall: { name: 'ls', args: {} } }, { text: 'by query key' });
    const texts: string[] = [];
    for await (const c of await geminiClient(s.env).models.generateContentStream({ model: MODEL.gemini, contents: 'x' })) if (c.text) texts.push(c.text);
    expect(texts.join('')).toBe('from gemini');
    const r = await rawRequest(h.relay.url, {
      path: `/gemini/v1beta/models/${MODEL.gemini}:generateContent?key=${s.token}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }] }),
    });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).candidates[0].content.parts[0].text).toBe('by query key');
    const last = h.fakes.gemini.requests.at(-1)!;
    expect(last.query).toEqual({});
    expect(last.headers['x-goog-api-key']).toBe(h.fakes.gemini.apiKey);
    expect(everythingSeen('gemini')).not.toContain(s.token);
  });

  it('only the listed request headers go upstream (no cookies, forwarding, org selectors, hop-by-hop)', async () => {
    const s = session('openai');
    await rawRequest(h.relay.url, {
      path: '/openai/v1/chat/completions',
      headers: {
        ...authHeaders('openai', s.token), 'content-type': 'application/json', 'openai-beta': 'responses=v1', 'user-agent': 'codex_cli_rs/0.1',
        cookie: 'a=b', 'x-forwarded-for': '10.0.0.1', 'openai-organization': 'org-evil', 'proxy-authorization': 'Basic eA==', 'x-api-key': s.token, 'x-custom': '1',
      },
      body: JSON.stringify({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'x' }] }),
    });
    const seen = h.fakes.openai.requests.at(-1)!.headers;
    expect(Object.keys(seen).sort()).toEqual(['accept-encoding', 'authorization', 'connection', 'content-length', 'content-type', 'host', 'openai-beta', 'user-agent'].sort());
    expect(seen['user-agent']).toBe('codex_cli_rs/0.1');
  });
});

describe('a token is honoured only during a turn of its profile', () => {
  it('refused before the turn, honoured during it, refused after endTurn (replay) — 401 in each format, never forwarded', async () => {
    for (const provider of PROVIDERS) {
      const profile = `p-${randomUUID()}`;
      const { token } = h.issue(provider, { profile });
      const call = streamingCall(provider, MODEL[provider]);
      const send = () => rawRequest(h.relay.url, { path: call.path, headers: { ...authHeaders(provider, token), 'content-type': 'application/json' }, body: call.body });
      const before = h.fakes[provider].requests.length;
      const r0 = await send();
      expect(r0.status).toBe(401);
      h.relay.beginTurn({ profile, turnId: `t-${provider}` });
      expect((await send()).status).toBe(200);
      h.relay.endTurn(`t-${provider}`);
      const r2 = await send();
      expect(r2.status).toBe(401);
      expect(h.fakes[provider].requests.length).toBe(before + 1);
      const body = JSON.parse(r2.body);
      if (provider === 'anthropic') expect(body).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
      if (provider === 'openai') expect(body).toMatchObject({ error: { type: 'invalid_request_error', code: 'invalid_api_key' } });
      if (provider === 'gemini') expect(body).toMatchObject({ error: { code: 401, status: 'UNAUTHENTICATED' } });
      expect(h.events.some((e) => e.type === 'unauthorized' && e.profile === profile && e.reason === 'no_turn')).toBe(true);
    }
  });

  it('revoke refuses at once even during a turn; unknown, wrong-provider and conflicting credentials are refused too', async () => {
    const s = session('anthropic');
    await expect(anthropicClient(s.env).messages.create({ model: MODEL.anthropic, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })).resolves.toBeTruthy();
    h.relay.revoke(s.token);
    await expect(anthropicClient(s.env).messages.create({ model: MODEL.anthropic, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    await h.waitFor('unauthorized', (e) => e.profile === s.profile && e.reason === 'revoked');
    const o = session('openai');
    const wrongProvider = await rawRequest(h.relay.url, { path: '/anthropic/v1/messages', headers: { 'x-api-key': o.token, 'content-type': 'application/json' }, body: '{}' });
    expect(wrongProvider.status).toBe(401);
    const a = session('anthropic');
    const conflicting = await rawRequest(h.relay.url, { path: '/anthropic/v1/messages', headers: { 'x-api-key': a.token, authorization: 'Bearer other-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxx' }, body: '{}' });
    expect(conflicting.status).toBe(401);
    const unknown = await rawRequest(h.relay.url, { path: '/openai/v1/responses', headers: { authorization: `Bearer avmr_${'x'.repeat(43)}` }, body: '{}' });
    expect(unknown.status).toBe(401);
    expect(unknown.headers['x-should-retry']).toBe('false');
  });

  it('ending the last turn cuts a stream in flight at once; another open turn of the profile keeps it', async () => {
    const s = session('anthropic');
    h.relay.beginTurn({ profile: s.profile, turnId: `${s.turnId}-b` });
    let release!: () => void;
    const until = new Promise<void>((r) => (release = r));
    h.fakes.anthropic.enqueue({ text: 'one two three four five six seven', hold: { afterEvents: 3, until } });
    const stream = anthropicClient(s.env).messages.stream({ model: MODEL.anthropic, max_tokens: 50, messages: [{ role: 'user', content: 'x' }] });
    await new Promise<void>((r) => stream.on('streamEvent', (e) => e.type === 'message_start' && r()));
    h.relay.endTurn(`${s.turnId}-b`); // another turn is still open: the stream goes on
    h.relay.endTurn(s.turnId);
    const outcome = await stream.finalMessage().then(() => 'completed', () => 'cut');
    release();
    expect(outcome).toBe('cut');
  });

  it('issueToken is idempotent per (profile, provider); a persisted token is honoured; bad bindings are refused', () => {
    const profile = `p-${randomUUID()}`;
    const a = h.issue('anthropic', { profile });
    expect(h.issue('anthropic', { profile, allow: ['claude-haiku-4-5-20251001'] }).token).toBe(a.token);
    const persisted = `tok_${'a'.repeat(40)}`;
    expect(h.issue('openai', { profile, token: persisted }).env.OPENAI_API_KEY).toBe(persisted);
    expect(() => h.issue('gemini', { profile, token: persisted })).toThrow(/another profile or provider/);
    expect(() => h.issue('gemini', { profile, token: 'short' })).toThrow(/32-256/);
    expect(() => h.issue('gemini', { profile, key: 'GEMINI_REAL_KEY' })).toThrow(/secret:\/\/NAME/);
    expect(() => h.issue('gemini', { profile, dailyTokens: 0 })).toThrow(/positive integer/);
  });
});

describe('policy: allowed models and the daily budget', () => {
  it('a model not in allow is 403 in each format with a clear note, and no upstream call', async () => {
    for (const provider of PROVIDERS) {
      const s = session(provider);
      const before = h.fakes[provider].requests.length;
      const call = streamingCall(provider, provider === 'gemini' ? 'gemini-2.5-flash-lite' : 'forbidden-model');
      const r = await rawRequest(h.relay.url, { path: call.path, headers: { ...authHeaders(provider, s.token), 'content-type': 'application/json' }, body: call.body });
      expect(r.status).toBe(403);
      expect(r.body).toContain('is not allowed for this agent; allowed:');
      expect(h.fakes[provider].requests.length).toBe(before);
      const e = await h.waitFor('model_denied', (x) => x.profile === s.profile);
      expect(e.note).toMatch(/^model ".+" is not allowed for this agent; allowed: /);
      expect(e.allowed.length).toBeGreaterThan(0);
      expect(e.turnIds).toEqual([s.turnId]);
    }
    const s = session('openai');
    await expect(openaiClient(s.env).responses.create({ model: 'o3-pro', input: 'x' })).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);
  });

  it('a spent daily budget is 429 with a clear message, no upstream call, and renews the next UTC day', async () => {
    let clock = Date.parse('2030-01-01T23:59:00Z');
    const local = await startHarness({ now: () => clock });
    try {
      const profile = `p-${randomUUID()}`;
      const { env } = local.issue('anthropic', { profile, dailyTokens: 100 });
      local.relay.beginTurn({ profile, turnId: 't1' });
      local.fakes.anthropic.enqueue({ text: 'spend', usage: { input: 90, output: 20 } });
      const client = new Anthropic({ apiKey: env.ANTHROPIC_API_KEY!, baseURL: env.ANTHROPIC_BASE_URL!, maxRetries: 3 });
      await client.messages.create({ model: MODEL.anthropic, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
      await local.waitFor('usage', (e) => e.profile === profile);
      await new Promise((r) => setTimeout(r, 20));
      const calls = local.fakes.anthropic.requests.length;
      const err = await client.messages.create({ model: MODEL.anthropic, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.RateLimitError);
      expect((err as Error).message).toContain('daily model budget of this agent is spent (110 of 100 tokens today, UTC)');
      // x-should-retry: false — the SDK gave up at once instead of retrying three times.
      expect(local.eventsOf('budget_exhausted').filter((e) => e.profile === profile)).toHaveLength(1);
      expect(local.fakes.anthropic.requests.length).toBe(calls);
      expect(local.eventsOf('budget_exhausted')[0]).toMatchObject({ used: 110, limit: 100, day: '2030-01-01' });
      clock += 120_000;
      await expect(client.messages.create({ model: MODEL.anthropic, max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })).resolves.toBeTruthy();
    } finally {
      await local.close();
    }
  });

  it('a budget store that fails refuses the call (fail closed)', async () => {
    const local = await startHarness({ budget: { used: () => Promise.reject(new Error('db down')), add: () => undefined } });
    try {
      const { token } = local.issue('openai', { profile: 'pb', dailyTokens: 10 });
      local.relay.beginTurn({ profile: 'pb', turnId: 't' });
      const call = streamingCall('openai', 'gpt-5');
      const r = await rawRequest(local.relay.url, { path: call.path, headers: { ...authHeaders('openai', token), 'content-type': 'application/json' }, body: call.body });
      expect(r.status).toBe(503);
      expect(local.fakes.openai.requests).toHaveLength(0);
    } finally {
      await local.close();
    }
  });

  it('an unresolvable key is 502 with a note naming the secret, never a value', async () => {
    const s = session('gemini', { key: 'secret://NO_SUCH_KEY' });
    const call = streamingCall('gemini', MODEL.gemini);
    const r = await rawRequest(h.relay.url, { path: call.path, headers: authHeaders('gemini', s.token), body: call.body });
    expect(r.status).toBe(502);
    expect((await h.waitFor('key_unresolved', (e) => e.profile === s.profile)).note).toContain('secret://NO_SUCH_KEY');
  });
});

describe('provider errors pass through with their retry headers', () => {
  it('429 and 500 from each provider reach the client with retry-after and rate-limit headers, and an event', async () => {
    for (const provider of PROVIDERS) {
      const s = session(provider);
      h.fakes[provider].enqueue({ error: 429, retryAfter: 9 }, { error: 500 });
      const call = streamingCall(provider, MODEL[provider]);
      const send = () => rawRequest(h.relay.url, { path: call.path, headers: { ...authHeaders(provider, s.token), 'content-type': 'application/json' }, body: call.body });
      const r429 = await send();
      expect(r429.status).toBe(429);
      expect(r429.headers['retry-after']).toBe('9');
      if (provider === 'anthropic') expect(r429.headers['anthropic-ratelimit-requests-remaining']).toBe('0');
      if (provider === 'openai') expect(r429.headers['x-ratelimit-remaining-requests']).toBe('0');
      if (provider === 'gemini') expect(JSON.parse(r429.body).error.status).toBe('RESOURCE_EXHAUSTED');
      const r500 = await send();
      expect(r500.status).toBe(500);
      const e = await h.waitFor('upstream_error', (x) => x.profile === s.profile && x.status === 429);
      expect(e).toMatchObject({ retryAfter: '9', provider });
      expect(e.note).toContain(`the ${provider} API answered 429`);
      await h.waitFor('upstream_error', (x) => x.profile === s.profile && x.status === 500);
    }
  });

  it('the SDK sees the provider\'s own error type through the relay (and would retry as designed)', async () => {
    const s = session('openai');
    h.fakes.openai.enqueue({ error: 429, retryAfter: 0 }, { text: 'after retry' });
    const client = new OpenAI({ apiKey: s.token, baseURL: s.env.OPENAI_BASE_URL!, maxRetries: 1 });
    const r = await client.responses.create({ model: MODEL.openai, input: 'x' });
    expect(r.output_text).toBe('after retry');
  });
});

describe('usage is read from JSON and from streams', () => {
  const usage = { input: 40, output: 7, cacheRead: 3 };

  it.each(PROVIDERS)('%s: JSON and SSE usage are reported per turn and counted in the budget', async (provider) => {
    const s = session(provider);
    h.fakes[provider].enqueue({ text: 'json', usage }, { text: 'sse', usage });
    const call = streamingCall(provider, MODEL[provider]);
    const jsonBody = provider === 'gemini' ? call.body : JSON.stringify({ ...JSON.parse(call.body), stream: false });
    const jsonPath = provider === 'gemini' ? call.path.replace(':streamGenerateContent?alt=sse', ':generateContent') : call.path;
    const headers = { ...authHeaders(provider, s.token), 'content-type': 'application/json' };
    expect((await rawRequest(h.relay.url, { path: jsonPath, headers, body: jsonBody })).status).toBe(200);
    expect((await rawRequest(h.relay.url, { path: call.path, headers, body: call.body })).status).toBe(200);
    await h.waitFor('usage', (e) => e.profile === s.profile && e.streamed);
    const seen = h.eventsOf('usage').filter((e) => e.profile === s.profile);
    expect(seen.map((e) => e.streamed)).toEqual([false, true]);
    const total = provider === 'anthropic' ? 50 : 47;
    for (const e of seen) {
      expect(e.usage).toMatchObject({ inputTokens: 40, outputTokens: 7, cacheReadTokens: 3, totalTokens: total });
      expect(e.turnIds).toEqual([s.turnId]);
      expect(e.model).toBe(MODEL[provider]);
    }
    await new Promise((r) => setTimeout(r, 10));
    expect(await h.budget.used(s.profile, new Date().toISOString().slice(0, 10))).toBe(2 * total);
  });

  it('openai chat completions: the relay asks for the usage chunk when a stream did not', async () => {
    const s = session('openai');
    h.fakes.openai.enqueue({ text: 'counted', usage: { input: 5, output: 2 } });
    const chat = await openaiClient(s.env).chat.completions.stream({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'x' }] }).finalChatCompletion();
    expect(chat.choices[0]!.message.content).toBe('counted');
    expect(h.fakes.openai.requests.at(-1)!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect((await h.waitFor('usage', (e) => e.profile === s.profile)).usage.totalTokens).toBe(7);
  });

  it('count_tokens and countTokens are allowed-model checked but not metered', async () => {
    const s = session('anthropic');
    const count = await anthropicClient(s.env).messages.countTokens({ model: MODEL.anthropic, messages: [{ role: 'user', content: 'x' }] });
    expect(count.input_tokens).toBeGreaterThan(0);
    const g = session('gemini');
    expect((await geminiClient(g.env).models.countTokens({ model: MODEL.gemini, contents: 'x' })).totalTokens).toBeGreaterThan(0);
    await h.waitFor('call', (e) => e.profile === g.profile);
    expect(h.eventsOf('usage').filter((e) => e.profile === s.profile || e.profile === g.profile)).toEqual([]);
  });
});

describe('model lists and the reachability probe', () => {
  it('GET /v1/models lists only the allowed models (Anthropic and OpenAI)', async () => {
    const o = session('openai', { allow: ['gpt-5'] });
    const ids = [];
    for await (const m of openaiClient(o.env).models.list()) ids.push(m.id);
    expect(ids).toEqual(['gpt-5']);
    const a = session('anthropic', { allow: ['claude-haiku-4-5-20251001'] });
    const aIds = [];
    for await (const m of anthropicClient(a.env).models.list()) aIds.push(m.id);
    expect(aIds).toEqual(['claude-haiku-4-5-20251001']);
  });

  it('HEAD / and HEAD /anthropic answer 200 without a key and without an upstream call', async () => {
    const before = h.fakes.anthropic.requests.length;
    expect((await rawRequest(h.relay.url, { method: 'HEAD', path: '/' })).status).toBe(200);
    expect((await rawRequest(h.relay.url, { method: 'HEAD', path: '/anthropic' })).status).toBe(200);
    expect(h.fakes.anthropic.requests.length).toBe(before);
  });
});

describe('settings', () => {
  it('AGENTVM_*_API_URL default to the public APIs, can be overridden, and must be URLs', async () => {
    expect(loadConfig({}).modelApis).toEqual({ anthropic: 'https://api.anthropic.com', openai: 'https://api.openai.com', gemini: 'https://generativelanguage.googleapis.com' });
    const c = loadConfig({ AGENTVM_ANTHROPIC_API_URL: 'https://proxy.example/anthropic', AGENTVM_OPENAI_API_URL: 'http://127.0.0.1:9', AGENTVM_GEMINI_API_URL: 'https://g.example' });
    expect(c.modelApis.anthropic).toBe('https://proxy.example/anthropic');
    // A base URL with a path (an enterprise proxy) keeps it; only listed query parameters follow.
    const route = anthropicSpec.match('POST', '/v1/messages')!;
    expect(upstreamUrl(new URL('https://proxy.example/anthropic/'), route, new URLSearchParams('beta=true&key=x')).href).toBe('https://proxy.example/anthropic/v1/messages?beta=true');
    expect(() => loadConfig({ AGENTVM_OPENAI_API_URL: 'not a url' })).toThrow(/AGENTVM_OPENAI_API_URL/);
    const relay = await createModelRelay({ listen: { host: '127.0.0.1', port: 0 }, upstreams: c.modelApis, secrets: createSecretResolver({ env: {} }), logger: createLogger('silent') });
    await relay.close();
    await relay.close();
    await expect(createModelRelay({ listen: { host: '127.0.0.1', port: 0 }, upstreams: { ...c.modelApis, gemini: 'ftp://x' }, secrets: createSecretResolver({ env: {} }), logger: createLogger('silent') })).rejects.toThrow(/must be http/);
  });
});
