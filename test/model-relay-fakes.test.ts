/**
 * The fake provider APIs against the providers' own SDKs, straight (no relay): if the official
 * clients parse what the fakes stream (text, tool calls, usage, errors with retry headers), the
 * fakes are faithful enough to drive the real agents built on those clients.
 */
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI, type FakeProvider } from './fakes/providers/index.js';

let anthropic: FakeProvider;
let openai: FakeProvider;
let gemini: FakeProvider;

beforeAll(async () => {
  [anthropic, openai, gemini] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeGemini()]);
});
afterAll(async () => {
  await Promise.all([anthropic?.close(), openai?.close(), gemini?.close()]);
});

describe('fake Anthropic API with @anthropic-ai/sdk', () => {
  const client = () => new Anthropic({ apiKey: anthropic.apiKey, baseURL: anthropic.url, maxRetries: 0 });

  it('streams text and a tool_use block the SDK assembles, with usage', async () => {
    anthropic.enqueue({ text: 'Let me look.', toolCall: { name: 'read_file', args: { path: 'a.txt', lines: [1, 2] } }, usage: { input: 21, output: 9, cacheRead: 4 } });
    const final = await client().messages.stream({ model: 'claude-sonnet-4-5-20250929', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    expect(final.content[0]).toMatchObject({ type: 'text', text: 'Let me look.' });
    expect(final.content[1]).toMatchObject({ type: 'tool_use', name: 'read_file', input: { path: 'a.txt', lines: [1, 2] } });
    expect(final.stop_reason).toBe('tool_use');
    expect(final.usage).toMatchObject({ input_tokens: 21, output_tokens: 9, cache_read_input_tokens: 4 });
    const raw = anthropic.requests.at(-1)!;
    expect(raw.headers['anthropic-version']).toBeTruthy();
    expect(raw.credential).toBe(anthropic.apiKey);
  });

  it('answers the beta endpoint (?beta=true), count_tokens, models and HEAD /', async () => {
    // Claude Code's bundled SDK calls the beta endpoint as /v1/messages?beta=true.
    anthropic.enqueue({ text: 'beta ok' });
    const r = await fetch(`${anthropic.url}/v1/messages?beta=true`, {
      method: 'POST',
      headers: { 'x-api-key': anthropic.apiKey, 'anthropic-version': '2023-06-01', 'anthropic-beta': 'claude-code-20250219', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-haiku-4-5-20251001', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(r.headers.get('request-id')).toMatch(/^req_/);
    expect(((await r.json()) as Anthropic.Message).content[0]).toMatchObject({ type: 'text', text: 'beta ok' });
    expect(anthropic.requests.at(-1)!.query.beta).toBe('true');
    const count = await client().messages.countTokens({ model: 'claude-haiku-4-5-20251001', messages: [{ role: 'user', content: 'x' }] });
    expect(count.input_tokens).toBeGreaterThan(0);
    const models = [];
    for await (const m of client().models.list()) models.push(m.id);
    expect(models).toContain('claude-sonnet-4-5-20250929');
    expect((await fetch(anthropic.url, { method: 'HEAD' })).status).toBe(200);
  });

  it('429 carries retry-after and the SDK error type; a wrong key is authentication_error', async () => {
    anthropic.enqueue({ error: 429, retryAfter: 7 });
    const err = await client().messages.create({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    expect((err as InstanceType<typeof Anthropic.RateLimitError>).headers.get('retry-after')).toBe('7');
    const bad = await new Anthropic({ apiKey: 'nope', baseURL: anthropic.url, maxRetries: 0 }).messages.create({ model: 'm', max_tokens: 1, messages: [] }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(Anthropic.AuthenticationError);
  });
});

describe('fake OpenAI API with openai', () => {
  const client = () => new OpenAI({ apiKey: openai.apiKey, baseURL: `${openai.url}/v1`, maxRetries: 0 });

  it('streams a Responses function call then text, with usage on response.completed', async () => {
    openai.enqueue({ toolCall: { name: 'shell', args: { command: ['ls', '-la'] } }, usage: { input: 30, output: 12 } }, { text: 'Done listing.' });
    const types: string[] = [];
    let completed: OpenAI.Responses.Response | undefined;
    for await (const e of await client().responses.create({ model: 'gpt-5-codex', input: 'list files', stream: true })) {
      types.push(e.type);
      if (e.type === 'response.completed') completed = e.response;
    }
    expect(types).toEqual(expect.arrayContaining(['response.created', 'response.output_item.added', 'response.function_call_arguments.delta', 'response.output_item.done', 'response.completed']));
    expect(completed?.output[0]).toMatchObject({ type: 'function_call', name: 'shell', arguments: JSON.stringify({ command: ['ls', '-la'] }) });
    expect(completed?.usage).toMatchObject({ input_tokens: 30, output_tokens: 12 });
    const final = await client().responses.stream({ model: 'gpt-5-codex', input: 'again' }).finalResponse();
    expect(final.output_text).toBe('Done listing.');
  });

  it('streams Chat Completions tool calls and the usage chunk, and lists models', async () => {
    openai.enqueue({ toolCall: { name: 'get_weather', args: { city: 'Oslo' } }, usage: { input: 11, output: 6 } });
    const final = await client().chat.completions.stream({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'weather?' }], stream_options: { include_usage: true } }).finalChatCompletion();
    expect(final.choices[0]!.message.tool_calls?.[0]).toMatchObject({ type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } });
    expect(final.usage).toMatchObject({ prompt_tokens: 11, completion_tokens: 6 });
    const models = [];
    for await (const m of client().models.list()) models.push(m.id);
    expect(models).toContain('gpt-5');
  });

  it('429 and 500 are the SDK error types, with retry-after', async () => {
    openai.enqueue({ error: 429, retryAfter: 3 }, { error: 500 });
    const e1 = await client().responses.create({ model: 'gpt-5', input: 'x' }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(OpenAI.RateLimitError);
    expect((e1 as InstanceType<typeof OpenAI.RateLimitError>).headers?.get('retry-after')).toBe('3');
    const e2 = await client().responses.create({ model: 'gpt-5', input: 'x' }).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(OpenAI.InternalServerError);
  });
});

describe('fake Gemini API with @google/genai', () => {
  const client = () => new GoogleGenAI({ apiKey: gemini.apiKey, httpOptions: { baseUrl: gemini.url } });

  it('streams text and a functionCall over SSE with usageMetadata', async () => {
    gemini.enqueue({ text: 'Checking the file now.', toolCall: { name: 'read_file', args: { path: 'x' } }, usage: { input: 15, output: 8, reasoning: 3 } });
    const texts: string[] = [];
    const calls: unknown[] = [];
    let usage: unknown;
    for await (const c of await client().models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' })) {
      if (c.text) texts.push(c.text);
      if (c.functionCalls) calls.push(...c.functionCalls);
      if (c.usageMetadata) usage = c.usageMetadata;
    }
    expect(texts.join('')).toBe('Checking the file now.');
    expect(calls).toEqual([expect.objectContaining({ name: 'read_file', args: { path: 'x' } })]);
    expect(usage).toMatchObject({ promptTokenCount: 15, candidatesTokenCount: 8, thoughtsTokenCount: 3 });
    const raw = gemini.requests.at(-1)!;
    expect(raw.path).toMatch(/^\/v1(beta)?\/models\/gemini-2\.5-flash:streamGenerateContent$/);
    expect(raw.query.alt).toBe('sse');
    expect(raw.headers['x-goog-api-key']).toBe(gemini.apiKey);
  });

  it('generateContent, countTokens, and 429 with RetryInfo', async () => {
    gemini.enqueue({ text: 'plain' }, { error: 429, retryAfter: 5 });
    const r = await client().models.generateContent({ model: 'gemini-2.5-pro', contents: 'x' });
    expect(r.text).toBe('plain');
    const count = await client().models.countTokens({ model: 'gemini-2.5-pro', contents: 'x' });
    expect(count.totalTokens).toBeGreaterThan(0);
    const err = await client().models.generateContent({ model: 'gemini-2.5-pro', contents: 'x' }).catch((e: unknown) => e);
    expect(String(err)).toMatch(/429|RESOURCE_EXHAUSTED/);
  });
});
