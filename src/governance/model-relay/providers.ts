/**
 * What differs between the providers, as data: the routes the relay serves under each provider's
 * prefix, where each API carries its key, the header that carries the real one upstream, the
 * error body each API's clients understand, and the sandbox environment. Everything here is
 * fixed: nothing from a request chooses an upstream path, a header name or a query parameter
 * that is not listed.
 */
import type http from 'node:http';
import type { ModelProvider } from './types.js';

/** One API call the relay serves. */
export interface Route {
  provider: ModelProvider;
  method: 'GET' | 'POST' | 'HEAD';
  /** For logs and events: `POST /v1/messages`. */
  name: string;
  /** Path below the provider's base URL, built from constants and a checked model id. */
  upstreamPath: string;
  /** Where the model id is: the JSON body's `model`, the path (Gemini), or nowhere (lists). */
  modelFrom: 'body' | 'path' | 'none';
  /** The model id from the path (Gemini). */
  pathModel?: string;
  /** The call spends tokens: the daily budget is checked before and usage counted after. */
  metered: boolean;
  /** A model list: answered with only the allowed models. */
  listsModels: boolean;
  /** Query parameters passed on (all others are dropped). */
  query: readonly string[];
}

export interface ProviderSpec {
  provider: ModelProvider;
  /** The relay path prefix for this provider. */
  prefix: string;
  /** The API key(s) the request presents, in every place this API accepts one. */
  credentials(req: http.IncomingMessage, query: URLSearchParams): string[];
  /** Header carrying the real key upstream. */
  authHeader(key: string): Record<string, string>;
  /** The sandbox environment for this provider (see IssuedToken.env). */
  env(relayUrl: string, token: string): Record<string, string>;
  /** An error body in this API's own format, for the relay's own refusals. */
  error(status: number, message: string): { body: string; headers: Record<string, string> };
  match(method: string, path: string): Route | undefined;
}

/**
 * Request headers passed upstream; every other one is dropped (hop-by-hop headers, the sandbox's
 * credentials, cookies, SDK telemetry, organization/project selectors, forwarding headers).
 */
export const FORWARDED_REQUEST_HEADERS: readonly string[] = Object.freeze([
  'content-type',
  'accept',
  'user-agent',
  'anthropic-version',
  'anthropic-beta',
  'openai-beta',
  'x-goog-api-client',
  'idempotency-key',
]);

/** Response headers never passed back: hop-by-hop, cookies, and lengths we recompute. */
export const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'set-cookie',
  'alt-svc',
]);

const JSON_HEADERS = { 'content-type': 'application/json' };

function bearer(req: http.IncomingMessage): string[] {
  const h = req.headers.authorization;
  if (h === undefined) return [];
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(h);
  // A malformed Authorization header still counts as presented (and fails the check).
  return [m ? m[1]! : h];
}

function header(req: http.IncomingMessage, name: string): string[] {
  const v = req.headers[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

const MODEL_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const anthropicErrorType: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  529: 'overloaded_error',
};

export const anthropic: ProviderSpec = {
  provider: 'anthropic',
  prefix: '/anthropic',
  credentials: (req) => [...header(req, 'x-api-key'), ...bearer(req)],
  authHeader: (key) => ({ 'x-api-key': key }),
  env: (url, token) => ({ ANTHROPIC_BASE_URL: `${url}/anthropic`, ANTHROPIC_API_KEY: token }),
  error(status, message) {
    const type = anthropicErrorType[status] ?? 'api_error';
    return { headers: JSON_HEADERS, body: JSON.stringify({ type: 'error', error: { type, message } }) };
  },
  match(method, path) {
    const base = { provider: 'anthropic' as const, listsModels: false, query: ['beta'] };
    if (method === 'POST' && path === '/v1/messages') {
      return { ...base, method, name: 'POST /v1/messages', upstreamPath: path, modelFrom: 'body', metered: true };
    }
    if (method === 'POST' && path === '/v1/messages/count_tokens') {
      return { ...base, method, name: 'POST /v1/messages/count_tokens', upstreamPath: path, modelFrom: 'body', metered: false };
    }
    if (method === 'GET' && path === '/v1/models') {
      return { ...base, method, name: 'GET /v1/models', upstreamPath: path, modelFrom: 'none', metered: false, listsModels: true, query: ['beta', 'limit'] };
    }
    return undefined;
  },
};

export const openai: ProviderSpec = {
  provider: 'openai',
  prefix: '/openai',
  credentials: (req) => bearer(req),
  authHeader: (key) => ({ authorization: `Bearer ${key}` }),
  env: (url, token) => ({ OPENAI_BASE_URL: `${url}/openai/v1`, OPENAI_API_KEY: token }),
  error(status, message) {
    const [type, code] =
      status === 401 ? ['invalid_request_error', 'invalid_api_key']
      : status === 403 ? ['invalid_request_error', 'model_not_allowed']
      : status === 404 ? ['invalid_request_error', 'not_found']
      : status === 413 ? ['invalid_request_error', 'request_too_large']
      : status === 429 ? ['insufficient_quota', 'insufficient_quota']
      : status >= 500 ? ['server_error', null]
      : ['invalid_request_error', null];
    return { headers: JSON_HEADERS, body: JSON.stringify({ error: { message, type, param: null, code } }) };
  },
  match(method, path) {
    const base = { provider: 'openai' as const, listsModels: false, query: [] };
    if (method === 'POST' && path === '/v1/responses') {
      return { ...base, method, name: 'POST /v1/responses', upstreamPath: path, modelFrom: 'body', metered: true };
    }
    if (method === 'POST' && path === '/v1/chat/completions') {
      return { ...base, method, name: 'POST /v1/chat/completions', upstreamPath: path, modelFrom: 'body', metered: true };
    }
    if (method === 'GET' && path === '/v1/models') {
      return { ...base, method, name: 'GET /v1/models', upstreamPath: path, modelFrom: 'none', metered: false, listsModels: true };
    }
    return undefined;
  },
};

const googleStatus: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  413: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
};

export const gemini: ProviderSpec = {
  provider: 'gemini',
  prefix: '/gemini',
  credentials: (req, query) => [...header(req, 'x-goog-api-key'), ...query.getAll('key')],
  authHeader: (key) => ({ 'x-goog-api-key': key }),
  env: (url, token) => ({ GOOGLE_GEMINI_BASE_URL: `${url}/gemini`, GEMINI_API_KEY: token }),
  error(status, message) {
    return {
      headers: JSON_HEADERS,
      body: JSON.stringify({ error: { code: status, message, status: googleStatus[status] ?? 'UNKNOWN' } }),
    };
  },
  match(method, path) {
    const m = /^\/(v1beta|v1)\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens)$/.exec(path);
    if (method !== 'POST' || !m || !MODEL_SEGMENT.test(m[2]!) || m[2] === '.' || m[2] === '..') return undefined;
    const [, version, model, verb] = m as unknown as [string, string, string, string];
    return {
      provider: 'gemini',
      method: 'POST',
      name: `POST /${version}/models/{model}:${verb}`,
      upstreamPath: `/${version}/models/${model}:${verb}`,
      modelFrom: 'path',
      pathModel: model,
      metered: verb !== 'countTokens',
      listsModels: false,
      query: verb === 'streamGenerateContent' ? ['alt'] : [],
    };
  },
};

export const PROVIDERS: Readonly<Record<ModelProvider, ProviderSpec>> = Object.freeze({ anthropic, openai, gemini });

/** A path the relay is willing to look at: plain segments, no dot segments, no escapes. */
const SAFE_PATH = /^(?:\/[A-Za-z0-9_:.-]+)+\/?$|^\/$/;

/**
 * Splits a raw request target into provider and the API path below its prefix. Anything
 * unusual (percent-escapes, `.`/`..` segments, empty segments, absolute-form URLs) is refused
 * here, before any route is matched: the upstream path is never derived from raw input.
 */
export function splitTarget(raw: string): { provider?: ProviderSpec; path: string; query: URLSearchParams } | undefined {
  if (raw.length > 8192) return undefined;
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  const search = q === -1 ? '' : raw.slice(q + 1);
  if (!SAFE_PATH.test(path)) return undefined;
  const segments = path.split('/').slice(1);
  if (segments.some((s) => s === '.' || s === '..')) return undefined;
  let query: URLSearchParams;
  try {
    query = new URLSearchParams(search);
  } catch {
    return undefined;
  }
  for (const spec of Object.values(PROVIDERS)) {
    if (path === spec.prefix || path === `${spec.prefix}/`) return { provider: spec, path: '/', query };
    if (path.startsWith(`${spec.prefix}/`)) return { provider: spec, path: path.slice(spec.prefix.length), query };
  }
  return { path, query };
}
