/**
 * A local stand-in for the Anthropic Messages API (https://docs.anthropic.com/en/api/messages),
 * faithful enough for @anthropic-ai/sdk and Claude Code:
 *   - `HEAD /` (Claude Code's reachability probe) → 200;
 *   - `POST /v1/messages` (`?beta=true` accepted), JSON or SSE (`stream: true`): message_start,
 *     content_block_start / ping / content_block_delta (text_delta, input_json_delta for tool_use)
 *     / content_block_stop, message_delta (stop_reason, usage), message_stop;
 *   - `POST /v1/messages/count_tokens` → `{input_tokens}`; `GET /v1/models` → the model list;
 *   - the key in `x-api-key` (or `authorization: Bearer`, as ANTHROPIC_AUTH_TOKEN sends it);
 *     `anthropic-version` required, as the real API does;
 *   - `request-id`, `anthropic-organization-id` and `anthropic-ratelimit-*` headers on every answer;
 *     429 with `retry-after`, 500 `api_error`, 529 `overloaded_error`, in the API's error format.
 */
import type http from 'node:http';
import { id, jsonPieces, pieces, sendJson, startFake, startSse, usageFor, writeSse, type ErrorReply, type FakeOptions, type FakeProvider, type Reply, type SseEvent } from './common.js';

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};

function commonHeaders(): Record<string, string> {
  const reset = new Date(Date.now() + 60_000).toISOString().replace(/\.\d+Z$/, 'Z');
  return {
    'request-id': id('req_'),
    'anthropic-organization-id': '00000000-0000-4000-8000-000000000000',
    'anthropic-ratelimit-requests-limit': '4000',
    'anthropic-ratelimit-requests-remaining': '3999',
    'anthropic-ratelimit-requests-reset': reset,
    'anthropic-ratelimit-tokens-limit': '400000',
    'anthropic-ratelimit-tokens-remaining': '399000',
    'anthropic-ratelimit-tokens-reset': reset,
  };
}

function sendError(res: http.ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { type: 'error', error: { type: ERROR_TYPES[status] ?? 'api_error', message } }, { ...commonHeaders(), ...headers });
}

function scriptedError(res: http.ServerResponse, r: ErrorReply): void {
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  if (r.retryAfter !== undefined) headers['retry-after'] = String(r.retryAfter);
  if (r.error === 429) headers['anthropic-ratelimit-requests-remaining'] = '0';
  const message = r.message ?? (r.error === 429 ? 'Number of requests has exceeded your rate limit.' : r.error === 529 ? 'Overloaded' : 'Internal server error');
  // commonHeaders first so a scripted header wins.
  sendJson(res, r.error, { type: 'error', error: { type: ERROR_TYPES[r.error] ?? 'api_error', message } }, { ...commonHeaders(), ...headers });
}

interface Block {
  type: 'text' | 'tool_use';
  text?: string;
  id?: string;
  name?: string;
  input?: unknown;
}

function blocksOf(reply: Reply): Block[] {
  const blocks: Block[] = [];
  if (reply.text !== undefined && reply.text !== '') blocks.push({ type: 'text', text: reply.text });
  if ('toolCall' in reply) blocks.push({ type: 'tool_use', id: reply.toolCall.id ?? id('toolu_'), name: reply.toolCall.name, input: reply.toolCall.args ?? {} });
  if (blocks.length === 0) blocks.push({ type: 'text', text: '' });
  return blocks;
}

function usageJson(u: ReturnType<typeof usageFor>) {
  return { input_tokens: u.input, cache_creation_input_tokens: u.cacheWrite ?? 0, cache_read_input_tokens: u.cacheRead ?? 0, output_tokens: u.output };
}

export function streamEvents(model: string, reply: Reply, u: ReturnType<typeof usageFor>): SseEvent[] {
  const msgId = id('msg_');
  const blocks = blocksOf(reply);
  const events: SseEvent[] = [
    {
      event: 'message_start',
      data: {
        type: 'message_start',
        message: { id: msgId, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { ...usageJson(u), output_tokens: 1 } },
      },
    },
  ];
  blocks.forEach((b, index) => {
    if (b.type === 'text') {
      events.push({ event: 'content_block_start', data: { type: 'content_block_start', index, content_block: { type: 'text', text: '' } } });
      if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
      for (const p of pieces(b.text ?? '')) events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: { type: 'text_delta', text: p } } });
    } else {
      events.push({ event: 'content_block_start', data: { type: 'content_block_start', index, content_block: { type: 'tool_use', id: b.id, name: b.name, input: {} } } });
      if (index === 0) events.push({ event: 'ping', data: { type: 'ping' } });
      events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: '' } } });
      for (const p of jsonPieces(JSON.stringify(b.input))) events.push({ event: 'content_block_delta', data: { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: p } } });
    }
    events.push({ event: 'content_block_stop', data: { type: 'content_block_stop', index } });
  });
  events.push({
    event: 'message_delta',
    data: { type: 'message_delta', delta: { stop_reason: 'toolCall' in reply ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: u.output } },
  });
  events.push({ event: 'message_stop', data: { type: 'message_stop' } });
  return events;
}

export function messageJson(model: string, reply: Reply, u: ReturnType<typeof usageFor>) {
  return {
    id: id('msg_'),
    type: 'message',
    role: 'assistant',
    model,
    content: blocksOf(reply).map((b) => (b.type === 'text' ? { type: 'text', text: b.text } : { type: 'tool_use', id: b.id, name: b.name, input: b.input })),
    stop_reason: 'toolCall' in reply ? 'tool_use' : 'end_turn',
    stop_sequence: null,
    usage: usageJson(u),
  };
}

export const ANTHROPIC_MODELS = ['claude-sonnet-4-5-20250929', 'claude-haiku-4-5-20251001', 'claude-opus-4-1-20250805'];

export function startFakeAnthropic(o: FakeOptions = {}): Promise<FakeProvider> {
  const models = o.models ?? ANTHROPIC_MODELS;
  const apiKey = o.apiKey ?? id('sk-ant-api03-fake-', 16);
  return startFake(
    { ...o, apiKey, provider: 'Anthropic' },
    (req) => {
      const key = req.headers['x-api-key'];
      if (typeof key === 'string') return key;
      const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
      return m?.[1];
    },
    async (x) => {
      const { req, res, path } = x;
      if (req.method === 'HEAD' && path === '/') return void res.writeHead(200, commonHeaders()).end();
      if (x.record.credential !== apiKey) return sendError(res, 401, 'invalid x-api-key');
      if (req.method === 'GET' && path === '/v1/models') {
        const data = models.map((m) => ({ type: 'model', id: m, display_name: m, created_at: '2025-01-01T00:00:00Z' }));
        return sendJson(res, 200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }, commonHeaders());
      }
      if (req.method !== 'POST' || (path !== '/v1/messages' && path !== '/v1/messages/count_tokens')) {
        return sendError(res, 404, `Not found: ${req.method} ${path}`);
      }
      if (req.headers['anthropic-version'] === undefined) return sendError(res, 400, 'anthropic-version: header is required');
      const body = x.body as { model?: unknown; max_tokens?: unknown; messages?: unknown; stream?: unknown } | undefined;
      if (!body || typeof body.model !== 'string') return sendError(res, 400, 'model: Field required');
      if (!Array.isArray(body.messages)) return sendError(res, 400, 'messages: Field required');
      if (path === '/v1/messages/count_tokens') {
        return sendJson(res, 200, { input_tokens: Math.max(1, Math.ceil(x.record.bodyBytes / 4)) }, commonHeaders());
      }
      if (typeof body.max_tokens !== 'number') return sendError(res, 400, 'max_tokens: Field required');
      const reply = x.next();
      if ('error' in reply) return scriptedError(res, reply);
      const u = usageFor(reply, x.record.bodyBytes);
      if (body.stream !== true) return sendJson(res, 200, messageJson(body.model, reply, u), commonHeaders());
      startSse(res, commonHeaders());
      await writeSse(res, streamEvents(body.model, reply, u), reply);
    },
  );
}
