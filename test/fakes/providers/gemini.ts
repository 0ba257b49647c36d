/**
 * A local stand-in for the Gemini API (https://ai.google.dev/api), faithful enough for
 * @google/genai and Gemini CLI:
 *   - `POST /v1beta/models/{model}:generateContent` → a GenerateContentResponse (candidates with
 *     content.parts: text or functionCall {name, args}; finishReason; usageMetadata);
 *   - `:streamGenerateContent?alt=sse` → `data: <chunk>` events separated by CRLF CRLF, as Google
 *     sends them, each chunk with usageMetadata (the last one complete); without `alt=sse`, one
 *     JSON array of the chunks;
 *   - `:countTokens` → `{totalTokens}`; `GET /v1beta/models` → the model list;
 *   - the key as `x-goog-api-key` or `?key=`; a wrong key is 400 API_KEY_INVALID and a missing one
 *     403, as the real API answers; 429 RESOURCE_EXHAUSTED (with RetryInfo and, when scripted,
 *     `retry-after`), 500 INTERNAL.
 */
import type http from 'node:http';
import { id, pieces, sendJson, startFake, startSse, usageFor, writeSse, type ErrorReply, type FakeOptions, type FakeProvider, type FakeUsage, type Reply, type SseEvent } from './common.js';

const STATUS: Record<number, string> = { 400: 'INVALID_ARGUMENT', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 503: 'UNAVAILABLE' };

function sendError(res: http.ServerResponse, code: number, message: string, details?: unknown[], headers: Record<string, string> = {}): void {
  sendJson(res, code, { error: { code, message, status: STATUS[code] ?? 'UNKNOWN', ...(details ? { details } : {}) } }, headers);
}

function scriptedError(res: http.ServerResponse, r: ErrorReply): void {
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  if (r.retryAfter !== undefined) headers['retry-after'] = String(r.retryAfter);
  if (r.error === 429) {
    const details = [
      { '@type': 'type.googleapis.com/google.rpc.QuotaFailure', violations: [{ quotaMetric: 'generativelanguage.googleapis.com/generate_content_requests', quotaId: 'GenerateRequestsPerMinutePerProjectPerModel' }] },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${r.retryAfter ?? 30}s` },
    ];
    return sendError(res, 429, r.message ?? 'You exceeded your current quota, please check your plan and billing details.', details, headers);
  }
  sendError(res, r.error, r.message ?? 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting', undefined, headers);
}

function usageMetadata(u: FakeUsage, final: boolean) {
  return {
    promptTokenCount: u.input,
    ...(final ? { candidatesTokenCount: u.output } : {}),
    totalTokenCount: u.input + (final ? u.output + (u.reasoning ?? 0) : 0),
    ...(u.cacheRead ? { cachedContentTokenCount: u.cacheRead } : {}),
    ...(final && u.reasoning ? { thoughtsTokenCount: u.reasoning } : {}),
    promptTokensDetails: [{ modality: 'TEXT', tokenCount: u.input }],
  };
}

/** The parts a reply streams as, one chunk each: text pieces, then the function call whole (Gemini never splits args). */
function partsOf(reply: Reply): Array<Record<string, unknown>> {
  const parts: Array<Record<string, unknown>> = [];
  if (reply.text) for (const p of pieces(reply.text)) parts.push({ text: p });
  if ('toolCall' in reply) parts.push({ functionCall: { name: reply.toolCall.name, args: reply.toolCall.args ?? {} } });
  if (parts.length === 0) parts.push({ text: '' });
  return parts;
}

function chunk(parts: Array<Record<string, unknown>>, model: string, respId: string, u: FakeUsage, final: boolean) {
  return {
    candidates: [{ content: { parts, role: 'model' }, ...(final ? { finishReason: 'STOP' } : {}), index: 0 }],
    usageMetadata: usageMetadata(u, final),
    modelVersion: model,
    responseId: respId,
  };
}

export function geminiChunks(model: string, reply: Reply, u: FakeUsage): unknown[] {
  const respId = id('', 11);
  const parts = partsOf(reply);
  return parts.map((p, i) => chunk([p], model, respId, u, i === parts.length - 1));
}

export function geminiJson(model: string, reply: Reply, u: FakeUsage) {
  const parts: Array<Record<string, unknown>> = [];
  if (reply.text) parts.push({ text: reply.text });
  if ('toolCall' in reply) parts.push({ functionCall: { name: reply.toolCall.name, args: reply.toolCall.args ?? {} } });
  return chunk(parts.length > 0 ? parts : [{ text: '' }], model, id('', 11), u, true);
}

export const GEMINI_MODELS = ['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.5-flash-lite'];

export function startFakeGemini(o: FakeOptions = {}): Promise<FakeProvider> {
  const models = o.models ?? GEMINI_MODELS;
  const apiKey = o.apiKey ?? id('AIzaFake', 16);
  return startFake(
    { ...o, apiKey, provider: 'Gemini' },
    (req, query) => {
      const h = req.headers['x-goog-api-key'];
      return typeof h === 'string' ? h : (query.get('key') ?? undefined);
    },
    async (x) => {
      const { req, res, path, query } = x;
      if (x.record.credential === undefined) {
        return sendError(res, 403, 'Method doesn\'t allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.');
      }
      if (x.record.credential !== apiKey) {
        return sendError(res, 400, 'API key not valid. Please pass a valid API key.', [
          { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } },
        ]);
      }
      if (req.method === 'GET' && /^\/v1(beta)?\/models$/.test(path)) {
        return sendJson(res, 200, { models: models.map((m) => ({ name: `models/${m}`, displayName: m, supportedGenerationMethods: ['generateContent', 'countTokens'] })) });
      }
      const m = /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens)$/.exec(path);
      if (req.method !== 'POST' || !m) return sendError(res, 404, `Requested entity was not found.`);
      const model = m[1]!;
      if (!models.includes(model)) return sendError(res, 404, `models/${model} is not found for API version v1beta, or is not supported for generateContent.`);
      const body = x.body as { contents?: unknown } | undefined;
      if (!body || !Array.isArray(body.contents) && typeof body.contents !== 'string') {
        return sendError(res, 400, '* GenerateContentRequest.contents: contents is not specified');
      }
      if (m[2] === 'countTokens') return sendJson(res, 200, { totalTokens: Math.max(1, Math.ceil(x.record.bodyBytes / 4)), promptTokensDetails: [] });
      const reply = x.next();
      if ('error' in reply) return scriptedError(res, reply);
      const u = usageFor(reply, x.record.bodyBytes);
      if (m[2] === 'generateContent') return sendJson(res, 200, geminiJson(model, reply, u));
      const chunks = geminiChunks(model, reply, u);
      if (query.get('alt') !== 'sse') return sendJson(res, 200, chunks);
      startSse(res, { 'x-content-type-options': 'nosniff' });
      const events: SseEvent[] = chunks.map((data) => ({ data }));
      await writeSse(res, events, reply, '\r\n');
    },
  );
}
