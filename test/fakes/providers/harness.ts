/**
 * A model relay in front of the three fake provider APIs, as the model relay tests and the bench
 * use it: real keys in a secret resolver, events and budget recorded, and small helpers for raw
 * HTTP (which the SDKs would normalise away) and for holding a stream open.
 */
import http from 'node:http';
import net from 'node:net';
import { createModelRelay, memoryBudget, type ModelBinding, type ModelProvider, type ModelRelay, type ModelRelayEvent, type ModelRelayOptions } from '../../../src/governance/model-relay/index.js';
import { createSecretResolver } from '../../../src/governance/secrets.js';
import { createLogger } from '../../../src/log.js';
import { until } from '../../helpers/wait.js';
import { startFakeAnthropic } from './anthropic.js';
import { startFakeGemini } from './gemini.js';
import { startFakeOpenAI } from './openai.js';
import type { FakeProvider } from './common.js';

export interface Harness {
  relay: ModelRelay;
  fakes: Record<ModelProvider, FakeProvider>;
  events: ModelRelayEvent[];
  budget: ReturnType<typeof memoryBudget>;
  /** Secret names holding each fake's real key. */
  keyRef: Record<ModelProvider, string>;
  /** Issues a token for `provider` (default allow: the fake's first models) and returns it with env. */
  issue(provider: ModelProvider, over?: Partial<ModelBinding>): { token: string; env: Record<string, string> };
  eventsOf<T extends ModelRelayEvent['type']>(type: T): Array<Extract<ModelRelayEvent, { type: T }>>;
  /** Waits until an event of `type` arrives (events are emitted asynchronously). */
  waitFor<T extends ModelRelayEvent['type']>(type: T, pred?: (e: Extract<ModelRelayEvent, { type: T }>) => boolean, timeoutMs?: number): Promise<Extract<ModelRelayEvent, { type: T }>>;
  close(): Promise<void>;
}

export const DEFAULT_ALLOW: Record<ModelProvider, string[]> = {
  anthropic: ['claude-sonnet-4-5-20250929', 'claude-haiku-4-5-20251001'],
  openai: ['gpt-5-codex', 'gpt-5', 'gpt-4.1'],
  gemini: ['gemini-2.5-flash', 'gemini-2.5-pro'],
};

export async function startHarness(over: Partial<ModelRelayOptions> = {}): Promise<Harness> {
  const [anthropic, openai, gemini] = await Promise.all([startFakeAnthropic(), startFakeOpenAI(), startFakeGemini()]);
  const fakes = { anthropic, openai, gemini };
  const events: ModelRelayEvent[] = [];
  const budget = memoryBudget();
  const keyRef = { anthropic: 'ANTHROPIC_REAL_KEY', openai: 'OPENAI_REAL_KEY', gemini: 'GEMINI_REAL_KEY' };
  const secrets = createSecretResolver({ env: { ANTHROPIC_REAL_KEY: anthropic.apiKey, OPENAI_REAL_KEY: openai.apiKey, GEMINI_REAL_KEY: gemini.apiKey } });
  const relay = await createModelRelay({
    listen: { host: '127.0.0.1', port: 0 },
    upstreams: { anthropic: anthropic.url, openai: openai.url, gemini: gemini.url },
    secrets,
    logger: createLogger('silent'),
    onEvent: (e) => void events.push(e),
    budget,
    ...over,
  });
  const eventsOf = <T extends ModelRelayEvent['type']>(type: T) => events.filter((e): e is Extract<ModelRelayEvent, { type: T }> => e.type === type);
  return {
    relay,
    fakes,
    events,
    budget,
    keyRef,
    issue(provider, o = {}) {
      return relay.issueToken({ profile: 'p1', provider, key: `secret://${keyRef[provider]}`, allow: DEFAULT_ALLOW[provider], ...o });
    },
    eventsOf,
    waitFor(type, pred = () => true, timeoutMs = 3000) {
      return until(`a ${type} event`, () => eventsOf(type).find(pred), { timeoutMs, everyMs: 5 }).catch((err: Error) => {
        throw new Error(`${err.message}; saw ${events.map((e) => e.type).join(', ')}`);
      });
    },
    async close() {
      await relay.close();
      await Promise.all(Object.values(fakes).map((f) => f.close()));
    },
  };
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request with exactly these headers and body (no client-side normalisation of the path). */
export function rawRequest(url: string, o: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<RawResponse> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method: o.method ?? 'POST', path: o.path, headers: o.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/**
 * Sends `head` (a raw request head, CRLFs included) and returns whatever comes back until the
 * server closes, or until what came back matches `until` (then the client hangs up).
 */
export function rawSocket(url: string, head: string, until?: RegExp): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port) }, () => s.write(head));
    const chunks: Buffer[] = [];
    s.on('data', (c) => {
      chunks.push(c);
      if (until?.test(Buffer.concat(chunks).toString('latin1'))) s.destroy();
    });
    s.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', (e) => (chunks.length > 0 ? resolve(Buffer.concat(chunks).toString('latin1')) : reject(e)));
    s.setTimeout(5000, () => s.destroy(new Error('raw socket timed out')));
  });
}

export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Auth headers the way each provider's client sends `token`. */
export function authHeaders(provider: ModelProvider, token: string): Record<string, string> {
  if (provider === 'anthropic') return { 'x-api-key': token, 'anthropic-version': '2023-06-01' };
  if (provider === 'openai') return { authorization: `Bearer ${token}` };
  return { 'x-goog-api-key': token };
}

/** A minimal valid streaming request for each provider, through the relay at `base` (the env's base URL). */
export function streamingCall(provider: ModelProvider, model: string): { path: string; body: string } {
  if (provider === 'anthropic') {
    return { path: '/anthropic/v1/messages', body: JSON.stringify({ model, max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'hi' }] }) };
  }
  if (provider === 'openai') return { path: '/openai/v1/responses', body: JSON.stringify({ model, stream: true, input: 'hi' }) };
  return { path: `/gemini/v1beta/models/${model}:streamGenerateContent?alt=sse`, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }) };
}
