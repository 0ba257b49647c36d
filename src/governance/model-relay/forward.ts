/**
 * One call upstream: the request body as read (bounded) with only the listed headers and the
 * real key, the answer streamed back chunk by chunk as it arrives (backpressure: the provider is
 * read no faster than the sandbox reads), usage metered on the side, and model lists filtered.
 */
import http from 'node:http';
import https from 'node:https';
import { DROPPED_RESPONSE_HEADERS, FORWARDED_REQUEST_HEADERS, type ProviderSpec, type Route } from './providers.js';
import { createUsageMeter } from './usage.js';
import type { ModelUsage } from './types.js';

/** Largest model list the relay reads to filter. */
const MAX_MODEL_LIST_BYTES = 4 * 1024 * 1024;

export interface ForwardCall {
  spec: ProviderSpec;
  route: Route;
  base: URL;
  query: URLSearchParams;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  body: Buffer | undefined;
  key: string;
  allow: readonly string[];
  agents: { http: http.Agent; https: https.Agent };
  idleTimeoutMs: number;
}

export interface ForwardHooks {
  /** The provider answered (status and headers known), before any byte goes back. */
  onResponse(status: number, headers: http.IncomingHttpHeaders): void;
  /** The upstream request could not be made or failed before answering. */
  onFailure(err: Error): void;
  /** The call is over. `completed`: the whole answer reached the sandbox. */
  onDone(r: { status: number; completed: boolean; bytesOut: number; firstByteAt?: number; usage?: ModelUsage; metered: boolean; streamed: boolean }): void;
  /** Registers the way to stop this call at once (revocation). */
  setCut(cut: () => void): void;
}

export function upstreamUrl(base: URL, route: Route, query: URLSearchParams): URL {
  const url = new URL(base.href);
  url.pathname = `${base.pathname.replace(/\/+$/, '')}${route.upstreamPath}`;
  const out = new URLSearchParams();
  for (const name of route.query) for (const v of query.getAll(name)) out.append(name, v);
  url.search = out.toString();
  url.hash = '';
  return url;
}

export function requestHeaders(c: Pick<ForwardCall, 'req' | 'spec' | 'key' | 'body'>): Record<string, string> {
  const h: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const v = c.req.headers[name];
    if (typeof v === 'string') h[name] = v;
  }
  // Identity, so the usage can be read on the way through.
  h['accept-encoding'] = 'identity';
  if (c.body !== undefined) h['content-length'] = String(c.body.length);
  Object.assign(h, c.spec.authHeader(c.key));
  return h;
}

function responseHeaders(headers: http.IncomingHttpHeaders, dropLength: boolean): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || DROPPED_RESPONSE_HEADERS.has(k) || (dropLength && k === 'content-length')) continue;
    out[k] = v;
  }
  return out;
}

/** `{data:[{id}]}` (Anthropic, OpenAI) keeping only allowed ids; undefined when it is not such a list. */
export function filterModelList(text: string, allow: readonly string[]): string | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || !Array.isArray((v as { data?: unknown }).data)) return undefined;
  const list = v as { data: Array<{ id?: unknown }>; first_id?: unknown; last_id?: unknown };
  list.data = list.data.filter((m) => typeof m?.id === 'string' && allow.includes(m.id));
  if ('first_id' in list) list.first_id = (list.data[0]?.id as string | undefined) ?? null;
  if ('last_id' in list) list.last_id = (list.data.at(-1)?.id as string | undefined) ?? null;
  return JSON.stringify(list);
}

export function forward(c: ForwardCall, hooks: ForwardHooks): void {
  const target = upstreamUrl(c.base, c.route, c.query);
  const isHttps = target.protocol === 'https:';
  const up = (isHttps ? https : http).request(target, {
    method: c.route.method,
    headers: requestHeaders(c),
    agent: isHttps ? c.agents.https : c.agents.http,
  });
  let finished = false;
  let status = 0;
  let bytesOut = 0;
  let firstByteAt: number | undefined;
  let meter: ReturnType<typeof createUsageMeter> | undefined;
  let streamed = false;
  const metered = c.route.metered;

  const done = (completed: boolean) => {
    if (finished) return;
    finished = true;
    const usage = meter?.end();
    hooks.onDone({ status, completed, bytesOut, metered, streamed, ...(firstByteAt === undefined ? {} : { firstByteAt }), ...(usage ? { usage } : {}) });
  };
  const cut = () => {
    up.destroy();
    c.res.destroy();
    done(false);
  };
  hooks.setCut(cut);

  up.setTimeout(c.idleTimeoutMs, () => up.destroy(new Error(`no answer from the provider for ${Math.round(c.idleTimeoutMs / 1000)} s`)));
  up.on('error', (err) => {
    if (finished) return;
    if (status === 0) {
      hooks.onFailure(err);
      finished = true;
      return;
    }
    c.res.destroy();
    done(false);
  });
  // The sandbox went away (or was cut): stop reading from the provider.
  c.res.on('close', () => {
    if (!c.res.writableFinished) {
      up.destroy();
      done(false);
    }
  });

  up.on('response', (ur) => {
    status = ur.statusCode ?? 502;
    hooks.onResponse(status, ur.headers);
    const contentType = String(ur.headers['content-type'] ?? '');
    const encoded = ur.headers['content-encoding'] !== undefined && ur.headers['content-encoding'] !== 'identity';
    streamed = contentType.startsWith('text/event-stream');

    if (c.route.listsModels && status === 200 && !encoded) {
      const chunks: Buffer[] = [];
      let size = 0;
      ur.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_MODEL_LIST_BYTES) return void ur.destroy(new Error('model list too large'));
        chunks.push(chunk);
      });
      ur.on('end', () => {
        firstByteAt = performance.now();
        const filtered = filterModelList(Buffer.concat(chunks).toString('utf8'), c.allow);
        const body = filtered ?? JSON.stringify({ object: 'list', data: [] });
        bytesOut = Buffer.byteLength(body);
        c.res.writeHead(200, { ...responseHeaders(ur.headers, true), 'content-length': String(bytesOut) });
        c.res.end(body, () => done(true));
      });
      ur.on('error', () => {
        c.res.destroy();
        done(false);
      });
      return;
    }

    if (metered && status < 300 && !encoded) meter = createUsageMeter(c.spec.provider, streamed ? 'sse' : 'json');
    c.res.writeHead(status, responseHeaders(ur.headers, false));
    // Headers go out now, not with the first chunk: SSE clients start their clocks on them.
    c.res.flushHeaders();
    ur.on('data', (chunk: Buffer) => {
      if (firstByteAt === undefined) firstByteAt = performance.now();
      bytesOut += chunk.length;
      meter?.push(chunk);
      if (!c.res.write(chunk)) {
        ur.pause();
        c.res.once('drain', () => ur.resume());
      }
    });
    ur.on('end', () => {
      c.res.end(() => done(true));
    });
    ur.on('aborted', () => {
      c.res.destroy();
      done(false);
    });
    ur.on('error', () => {
      c.res.destroy();
      done(false);
    });
  });

  up.end(c.body);
}
