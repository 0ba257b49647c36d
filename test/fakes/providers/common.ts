/**
 * What the fake model provider APIs share: a scripted queue of replies, a record of every request
 * (method, path, query, headers including the credential seen, parsed body), SSE writing with an
 * optional pause mid-stream, and an HTTP server on a free port of 127.0.0.1.
 *
 * A reply is text, a tool call (optionally preceded by text), or an error status. An empty queue
 * answers with `defaultText`. The fakes check the credential exactly as the real APIs carry it, so
 * a test can prove that only the real key arrived.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { closeServer, headersOf, listen, readBody } from '../http.js';

export interface FakeUsage {
  input: number;
  output: number;
  /** Anthropic: cache_read_input_tokens; OpenAI: cached_tokens; Gemini: cachedContentTokenCount. */
  cacheRead?: number;
  /** Anthropic: cache_creation_input_tokens. */
  cacheWrite?: number;
  /** OpenAI: reasoning_tokens (inside output); Gemini: thoughtsTokenCount (outside candidates). */
  reasoning?: number;
}

/** Stops a stream after `afterEvents` events until `until` settles (proves the relay does not buffer). */
export interface Hold {
  afterEvents: number;
  until: Promise<unknown>;
}

export interface StreamPacing {
  hold?: Hold;
  /** Milliseconds between events. Default 0 (each event still goes out as its own write). */
  delayMs?: number;
}

export type FakeReply =
  | ({ text: string; usage?: FakeUsage } & StreamPacing)
  | ({ toolCall: { name: string; args: unknown; id?: string }; text?: string; usage?: FakeUsage } & StreamPacing)
  | { error: number; retryAfter?: number; message?: string; headers?: Record<string, string> };

export interface FakeRequest {
  method: string;
  /** Path without the query, as the fake received it. */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** The credential in the place this API carries it (x-api-key, Bearer, x-goog-api-key or ?key=). */
  credential: string | undefined;
  /** Parsed JSON body, or undefined when there was none (or it was not JSON). */
  body: unknown;
  bodyBytes: number;
  status: number;
}

export interface FakeProvider {
  /** Origin, e.g. `http://127.0.0.1:41234`: the provider's base URL. */
  url: string;
  /** The real key this fake accepts. */
  apiKey: string;
  requests: FakeRequest[];
  /** Replies for the next calls that produce model output, in order. */
  enqueue(...replies: FakeReply[]): void;
  /** Replies still queued. */
  pending(): number;
  close(): Promise<void>;
}

export interface FakeOptions {
  apiKey?: string;
  /** Answer when the queue is empty. Default: `Hello from the fake <provider> API.` */
  defaultText?: string;
  /** Models listed by the list endpoints. */
  models?: string[];
}

export type Reply = Exclude<FakeReply, { error: number }>;
export type ErrorReply = Extract<FakeReply, { error: number }>;

export interface Exchange {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  path: string;
  query: URLSearchParams;
  body: unknown;
  record: FakeRequest;
  /** The next scripted reply (or the default text). */
  next(): FakeReply;
}

export const id = (prefix: string, n = 12) => `${prefix}${randomBytes(n).toString('hex').slice(0, n * 2)}`;

/** Default usage: about four bytes a token, as the providers' own rules of thumb. */
export function usageFor(reply: Reply, bodyBytes: number): FakeUsage {
  if (reply.usage) return reply.usage;
  const out = ('toolCall' in reply ? JSON.stringify(reply.toolCall.args ?? {}).length : 0) + (reply.text?.length ?? 0);
  return { input: Math.max(1, Math.ceil(bodyBytes / 4)), output: Math.max(1, Math.ceil(out / 4)) };
}

/** Splits text into a few word-aligned pieces, as the providers' deltas come. */
export function pieces(text: string, words = 3): string[] {
  const parts = text.match(/\S+\s*|\s+/g) ?? [];
  const out: string[] = [];
  for (let i = 0; i < parts.length; i += words) out.push(parts.slice(i, i + words).join(''));
  return out.length > 0 ? out : [''];
}

/** Splits a JSON string into small pieces, as input_json_delta / arguments deltas come. */
export function jsonPieces(json: string, size = 8): string[] {
  const out: string[] = [];
  for (let i = 0; i < json.length; i += size) out.push(json.slice(i, i + size));
  return out;
}

export interface SseEvent {
  event?: string;
  data: unknown;
}

/** Writes SSE events one write each, honouring the reply's pacing. `eol` is `\n` (Anthropic, OpenAI) or `\r\n` (Google). */
export async function writeSse(res: http.ServerResponse, events: SseEvent[], pacing: StreamPacing, eol = '\n'): Promise<void> {
  for (let i = 0; i < events.length; i++) {
    if (res.destroyed) return;
    if (pacing.hold && i === pacing.hold.afterEvents) await pacing.hold.until.catch(() => undefined);
    if (pacing.delayMs) await new Promise((r) => setTimeout(r, pacing.delayMs));
    const e = events[i]!;
    const data = typeof e.data === 'string' ? e.data : JSON.stringify(e.data);
    res.write(`${e.event === undefined ? '' : `event: ${e.event}${eol}`}data: ${data}${eol}${eol}`);
  }
  res.end();
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

export function startSse(res: http.ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', ...headers });
  res.flushHeaders();
}

/**
 * Starts a fake: `handle` serves one exchange (and sets `record.status` through the response);
 * `credentialOf` says where this API carries its key.
 */
export async function startFake(
  o: FakeOptions & { provider: string },
  credentialOf: (req: http.IncomingMessage, query: URLSearchParams) => string | undefined,
  handle: (x: Exchange) => Promise<void> | void,
): Promise<FakeProvider> {
  const apiKey = o.apiKey ?? id('sk-fake-', 16);
  const queue: FakeReply[] = [];
  const requests: FakeRequest[] = [];
  const defaultText = o.defaultText ?? `Hello from the fake ${o.provider} API.`;
  const server = http.createServer((req, res) => {
    void (async () => {
      const raw = await readBody(req);
      const u = new URL(req.url ?? '/', 'http://fake');
      let body: unknown;
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          body = undefined;
        }
      }
      const record: FakeRequest = {
        method: req.method ?? '',
        path: u.pathname,
        query: Object.fromEntries(u.searchParams),
        headers: headersOf(req),
        credential: credentialOf(req, u.searchParams),
        body,
        bodyBytes: raw.length,
        status: 0,
      };
      requests.push(record);
      res.on('finish', () => {
        record.status = res.statusCode;
      });
      await handle({ req, res, path: u.pathname, query: u.searchParams, body, record, next: () => queue.shift() ?? { text: defaultText } });
    })().catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: String(err) });
      else res.destroy();
    });
  });
  const url = await listen(server);
  return {
    url,
    apiKey,
    requests,
    enqueue: (...r) => void queue.push(...r),
    pending: () => queue.length,
    close: () => closeServer(server),
  };
}
