/**
 * A local stand-in for the OpenAI API (https://platform.openai.com/docs/api-reference), faithful
 * enough for the `openai` SDK and Codex:
 *   - `POST /v1/responses`, JSON or SSE (`stream: true`, as Codex always asks): `event:` + `data:`
 *     lines with `sequence_number`; response.created, response.in_progress,
 *     response.output_item.added, response.content_part.added, response.output_text.delta/.done,
 *     response.content_part.done, response.function_call_arguments.delta/.done,
 *     response.output_item.done, response.completed (with usage); no `[DONE]`;
 *   - `POST /v1/chat/completions`, JSON or `data:`-only chunks (`chat.completion.chunk`, tool_calls
 *     deltas, finish_reason), the `usage` chunk with `choices: []` when
 *     `stream_options.include_usage`, then `data: [DONE]`;
 *   - `GET /v1/models`; the key as `authorization: Bearer`;
 *   - `x-request-id`, `openai-version`, `openai-processing-ms`, `x-ratelimit-*` on every answer;
 *     429 with `retry-after`, 500 `server_error`, in the API's error format.
 */
import type http from 'node:http';
import { id, jsonPieces, pieces, sendJson, startFake, startSse, usageFor, writeSse, type ErrorReply, type FakeOptions, type FakeProvider, type FakeUsage, type Reply, type SseEvent } from './common.js';

function commonHeaders(): Record<string, string> {
  return {
    'x-request-id': id('req_'),
    'openai-version': '2020-10-01',
    'openai-processing-ms': '42',
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-remaining-requests': '9999',
    'x-ratelimit-reset-requests': '6ms',
    'x-ratelimit-limit-tokens': '2000000',
    'x-ratelimit-remaining-tokens': '1999000',
    'x-ratelimit-reset-tokens': '30ms',
  };
}

function sendError(res: http.ServerResponse, status: number, message: string, type: string, code: string | null, headers: Record<string, string> = {}): void {
  sendJson(res, status, { error: { message, type, param: null, code } }, { ...commonHeaders(), ...headers });
}

function scriptedError(res: http.ServerResponse, r: ErrorReply): void {
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  if (r.retryAfter !== undefined) headers['retry-after'] = String(r.retryAfter);
  if (r.error === 429) {
    headers['x-ratelimit-remaining-requests'] ??= '0';
    return sendError(res, 429, r.message ?? 'Rate limit reached for requests. Please try again later.', 'requests', 'rate_limit_exceeded', headers);
  }
  sendError(res, r.error, r.message ?? 'The server had an error while processing your request. Sorry about that!', r.error >= 500 ? 'server_error' : 'invalid_request_error', null, headers);
}

const now = () => Math.floor(Date.now() / 1000);

function responsesUsage(u: FakeUsage) {
  return {
    input_tokens: u.input,
    input_tokens_details: { cached_tokens: u.cacheRead ?? 0 },
    output_tokens: u.output,
    output_tokens_details: { reasoning_tokens: u.reasoning ?? 0 },
    total_tokens: u.input + u.output,
  };
}

function responseObject(respId: string, model: string, status: string, output: unknown[], usage: unknown) {
  return {
    id: respId, object: 'response', created_at: now(), status, background: false, error: null, incomplete_details: null,
    instructions: null, max_output_tokens: null, model, output, parallel_tool_calls: true, previous_response_id: null,
    reasoning: { effort: null, summary: null }, store: false, temperature: 1, text: { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: 'auto', tools: [], top_p: 1, truncation: 'disabled', usage, user: null, metadata: {},
  };
}

/** The output items of a reply: a message with the text, then a function call. */
function outputItems(reply: Reply) {
  const items: Array<Record<string, unknown>> = [];
  if (reply.text !== undefined && reply.text !== '' || !('toolCall' in reply)) {
    items.push({ id: id('msg_'), type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', annotations: [], logprobs: [], text: reply.text ?? '' }] });
  }
  if ('toolCall' in reply) {
    items.push({ id: id('fc_'), type: 'function_call', status: 'completed', arguments: JSON.stringify(reply.toolCall.args ?? {}), call_id: reply.toolCall.id ?? id('call_'), name: reply.toolCall.name });
  }
  return items;
}

export function responsesEvents(model: string, reply: Reply, u: FakeUsage): SseEvent[] {
  const respId = id('resp_');
  const items = outputItems(reply);
  const out: SseEvent[] = [];
  let seq = 0;
  const push = (type: string, data: Record<string, unknown>) => out.push({ event: type, data: { type, sequence_number: seq++, ...data } });
  push('response.created', { response: responseObject(respId, model, 'in_progress', [], null) });
  push('response.in_progress', { response: responseObject(respId, model, 'in_progress', [], null) });
  items.forEach((item, output_index) => {
    const item_id = item.id;
    if (item.type === 'message') {
      const text = (item.content as Array<{ text: string }>)[0]!.text;
      push('response.output_item.added', { output_index, item: { ...item, status: 'in_progress', content: [] } });
      push('response.content_part.added', { item_id, output_index, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } });
      for (const delta of pieces(text)) push('response.output_text.delta', { item_id, output_index, content_index: 0, delta, logprobs: [] });
      push('response.output_text.done', { item_id, output_index, content_index: 0, text, logprobs: [] });
      push('response.content_part.done', { item_id, output_index, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text } });
    } else {
      const args = item.arguments as string;
      push('response.output_item.added', { output_index, item: { ...item, status: 'in_progress', arguments: '' } });
      for (const delta of jsonPieces(args)) push('response.function_call_arguments.delta', { item_id, output_index, delta });
      push('response.function_call_arguments.done', { item_id, output_index, name: item.name, arguments: args });
    }
    push('response.output_item.done', { output_index, item });
  });
  push('response.completed', { response: responseObject(respId, model, 'completed', items, responsesUsage(u)) });
  return out;
}

function chatUsage(u: FakeUsage) {
  return {
    prompt_tokens: u.input, completion_tokens: u.output, total_tokens: u.input + u.output,
    prompt_tokens_details: { cached_tokens: u.cacheRead ?? 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: u.reasoning ?? 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

function chatJson(model: string, reply: Reply, u: FakeUsage) {
  const tool = 'toolCall' in reply ? reply.toolCall : undefined;
  return {
    id: id('chatcmpl-'), object: 'chat.completion', created: now(), model, system_fingerprint: 'fp_fake', service_tier: 'default',
    choices: [{
      index: 0,
      message: {
        role: 'assistant', content: reply.text ?? null, refusal: null, annotations: [],
        ...(tool ? { tool_calls: [{ id: tool.id ?? id('call_'), type: 'function', function: { name: tool.name, arguments: JSON.stringify(tool.args ?? {}) } }] } : {}),
      },
      logprobs: null,
      finish_reason: tool ? 'tool_calls' : 'stop',
    }],
    usage: chatUsage(u),
  };
}

export function chatChunks(model: string, reply: Reply, u: FakeUsage, includeUsage: boolean): SseEvent[] {
  const base = { id: id('chatcmpl-'), object: 'chat.completion.chunk', created: now(), model, system_fingerprint: 'fp_fake', service_tier: 'default' };
  const usage = includeUsage ? { usage: null } : {};
  const chunk = (delta: Record<string, unknown>, finish: string | null = null): SseEvent => ({
    data: { ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...usage },
  });
  const out: SseEvent[] = [chunk({ role: 'assistant', content: '', refusal: null })];
  if (reply.text) for (const p of pieces(reply.text)) out.push(chunk({ content: p }));
  if ('toolCall' in reply) {
    const t = reply.toolCall;
    out.push(chunk({ tool_calls: [{ index: 0, id: t.id ?? id('call_'), type: 'function', function: { name: t.name, arguments: '' } }] }));
    for (const p of jsonPieces(JSON.stringify(t.args ?? {}))) out.push(chunk({ tool_calls: [{ index: 0, function: { arguments: p } }] }));
  }
  out.push(chunk({}, 'toolCall' in reply ? 'tool_calls' : 'stop'));
  if (includeUsage) out.push({ data: { ...base, choices: [], usage: chatUsage(u) } });
  out.push({ data: '[DONE]' });
  return out;
}

export const OPENAI_MODELS = ['gpt-5', 'gpt-5-mini', 'gpt-5-codex', 'gpt-4.1'];

export function startFakeOpenAI(o: FakeOptions = {}): Promise<FakeProvider> {
  const models = o.models ?? OPENAI_MODELS;
  const apiKey = o.apiKey ?? id('sk-proj-fake-', 16);
  return startFake(
    { ...o, apiKey, provider: 'OpenAI' },
    (req) => /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1],
    async (x) => {
      const { req, res, path } = x;
      if (x.record.credential !== apiKey) {
        return sendError(res, 401, 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.', 'invalid_request_error', 'invalid_api_key');
      }
      if (req.method === 'GET' && path === '/v1/models') {
        return sendJson(res, 200, { object: 'list', data: models.map((m) => ({ id: m, object: 'model', created: 1_700_000_000, owned_by: 'openai' })) }, commonHeaders());
      }
      if (req.method !== 'POST' || (path !== '/v1/responses' && path !== '/v1/chat/completions')) {
        return sendError(res, 404, `Invalid URL (${req.method} ${path})`, 'invalid_request_error', null);
      }
      const body = x.body as { model?: unknown; stream?: unknown; stream_options?: { include_usage?: unknown }; input?: unknown; messages?: unknown } | undefined;
      if (!body || typeof body.model !== 'string') return sendError(res, 400, "Missing required parameter: 'model'.", 'invalid_request_error', 'missing_required_parameter');
      if (path === '/v1/chat/completions' && !Array.isArray(body.messages)) {
        return sendError(res, 400, "Missing required parameter: 'messages'.", 'invalid_request_error', 'missing_required_parameter');
      }
      if (path === '/v1/responses' && body.input === undefined) {
        return sendError(res, 400, "Missing required parameter: 'input'.", 'invalid_request_error', 'missing_required_parameter');
      }
      const reply = x.next();
      if ('error' in reply) return scriptedError(res, reply);
      const u = usageFor(reply, x.record.bodyBytes);
      if (path === '/v1/responses') {
        if (body.stream !== true) {
          const events = responsesEvents(body.model, reply, u);
          return sendJson(res, 200, (events.at(-1)!.data as { response: unknown }).response, commonHeaders());
        }
        startSse(res, commonHeaders());
        return writeSse(res, responsesEvents(body.model, reply, u), reply);
      }
      if (body.stream !== true) return sendJson(res, 200, chatJson(body.model, reply, u), commonHeaders());
      startSse(res, commonHeaders());
      await writeSse(res, chatChunks(body.model, reply, u, body.stream_options?.include_usage === true), reply);
    },
  );
}
