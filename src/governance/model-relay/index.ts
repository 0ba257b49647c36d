/**
 * The model relay (see types.ts for the seam and why tokens work the way they do). Per request:
 *
 *   1. the path picks the provider (`/anthropic`, `/openai`, `/gemini`) and one of its fixed
 *      routes; anything else (escapes, dot segments, other paths) is refused before any check;
 *   2. the key the request presents, wherever that API carries one, must be a token issued for
 *      this provider and a profile with an open turn (401 in the provider's format otherwise);
 *   3. the body is read with a counter (413 past the cap, at once for a declared length; what
 *      follows is drained for at most 1 MiB or 2 s so the refusal is read, then cut);
 *   4. the model must be in the binding's `allow` (403 and an event otherwise; no upstream call);
 *   5. a metered call needs budget left today (429 and an event otherwise; no upstream call);
 *   6. the real key is resolved (`secret://`) and the call forwarded with only listed headers;
 *      the answer streams back unbuffered, usage is counted, upstream errors become events.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { AgentVmError, describeError } from '../../errors.js';
import { printable } from '../../text.js';
import { memoryBudget, secondsToUtcMidnight, utcDay } from './budget.js';
import { forward } from './forward.js';
import { PROVIDERS, splitTarget, type ProviderSpec, type Route } from './providers.js';
import { TokenBook, type Entry } from './tokens.js';
import type { IssuedToken, ModelProvider, ModelRelay, ModelRelayEvent, ModelRelayOptions } from './types.js';

export type * from './types.js';
export { MODEL_PROVIDERS } from './types.js';
export { memoryBudget, utcDay } from './budget.js';
export { FORWARDED_REQUEST_HEADERS } from './providers.js';

export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * After a refusal sent before the request body was read, the rest of the body is read and dropped
 * for a short while (at most this long and this many bytes), then the connection is cut. Closing a
 * socket that still has unread data makes the kernel answer with a reset, which can destroy the
 * refusal before the client reads it (and the client would retry a "network error").
 */
const LINGER_MS = 2000;
const LINGER_BYTES = 1024 * 1024;

function linger(req: http.IncomingMessage): void {
  let drained = 0;
  const cut = () => req.socket.destroy();
  const timer = setTimeout(cut, LINGER_MS);
  timer.unref();
  req.on('data', (c: Buffer) => {
    drained += c.length;
    if (drained > LINGER_BYTES) cut();
  });
  req.once('end', () => clearTimeout(timer));
  req.socket.once('close', () => clearTimeout(timer));
  req.resume();
}

/** The relay's own refusals: never retried by the providers' SDKs (they honour x-should-retry). */
const NO_RETRY = { 'x-should-retry': 'false' };

function parseUpstreams(u: Record<ModelProvider, string>): Record<ModelProvider, URL> {
  const out = {} as Record<ModelProvider, URL>;
  for (const p of Object.keys(PROVIDERS) as ModelProvider[]) {
    let url: URL;
    try {
      url = new URL(u[p]);
    } catch {
      throw new AgentVmError('model_relay_config', `the ${p} API URL is not a URL`, { status: 400 });
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new AgentVmError('model_relay_config', `the ${p} API URL must be http(s)`, { status: 400 });
    }
    out[p] = url;
  }
  return out;
}

export async function createModelRelay(o: ModelRelayOptions): Promise<ModelRelay> {
  const upstreams = parseUpstreams(o.upstreams);
  const log = o.logger.child({ component: 'model-relay' });
  const budget = o.budget ?? memoryBudget();
  const now = o.now ?? Date.now;
  const maxBody = o.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  const idleTimeoutMs = o.upstreamIdleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  const book = new TokenBook();
  let closed = false;

  function emit(e: ModelRelayEvent): void {
    if (!o.onEvent) return;
    Promise.resolve()
      .then(() => o.onEvent!(e))
      .catch((err: unknown) => log.warn({ err: describeError(err), event: e.type }, 'model relay event handler failed'));
  }

  function send(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
    if (res.headersSent) return void res.destroy();
    res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
    if (!res.req.complete) linger(res.req);
  }

  function refuse(res: http.ServerResponse, spec: ProviderSpec, status: number, message: string, extra: Record<string, string> = {}): void {
    const e = spec.error(status, message);
    send(res, status, e.body, { ...e.headers, ...extra });
  }

  /** Reads the body with a counter; `too_large` as soon as it passes the cap (the rest is never read). */
  function readBody(req: http.IncomingMessage): Promise<Buffer | 'too_large' | 'aborted'> {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBody) return Promise.resolve('too_large');
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > maxBody) {
          cleanup();
          req.pause();
          resolve('too_large');
          return;
        }
        chunks.push(c);
      };
      const onEnd = () => {
        cleanup();
        resolve(Buffer.concat(chunks, size));
      };
      const onAbort = () => {
        cleanup();
        resolve('aborted');
      };
      const cleanup = () => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('error', onAbort);
        req.off('close', onAbort);
      };
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onAbort);
      req.on('close', onAbort);
    });
  }

  /** The JSON body's model, or why there is none. The body's bytes are forwarded as they came (but see includeUsage). */
  function bodyModel(body: Buffer): { json: Record<string, unknown>; model: string } | { error: string } {
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      return { error: 'the request body is not JSON' };
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) return { error: 'the request body is not a JSON object' };
    const model = (json as { model?: unknown }).model;
    if (typeof model !== 'string' || model.length === 0) return { error: 'the request names no model' };
    return { json: json as Record<string, unknown>, model };
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const target = splitTarget(req.url ?? '');
    if (!target) {
      emit({ type: 'bad_request', status: 404, reason: 'unsafe or malformed path', route: printable(req.url ?? '', 120) });
      return send(res, 404, JSON.stringify({ error: 'agent-vm model relay: no such path' }), { 'content-type': 'application/json' });
    }
    const { provider: spec, path, query } = target;
    // Claude Code's reachability probe: HEAD on its base URL. Answered here, without a key.
    if (req.method === 'HEAD' && path === '/' && (spec === undefined || spec.provider === 'anthropic')) {
      res.writeHead(200, { 'content-length': '0' }).end();
      return;
    }
    if (!spec) return send(res, 404, JSON.stringify({ error: 'agent-vm model relay: paths start with /anthropic, /openai or /gemini' }), { 'content-type': 'application/json' });
    const route = spec.match(req.method ?? '', path);
    if (!route) {
      emit({ type: 'bad_request', provider: spec.provider, status: 404, reason: 'not a route the relay serves', route: printable(`${req.method} ${path}`, 120) });
      return refuse(res, spec, 404, `agent-vm model relay: ${printable(`${req.method} ${path}`, 120)} is not a ${spec.provider} API call the relay serves`, NO_RETRY);
    }
    const check = book.check(spec.provider, spec.credentials(req, query));
    if (!check.ok) {
      emit({ type: 'unauthorized', provider: spec.provider, reason: check.reason, route: route.name, ...(check.profile === undefined ? {} : { profile: check.profile }) });
      // One message for every reason: the sandbox learns nothing about other tokens.
      return refuse(res, spec, 401, 'agent-vm model relay: this API key is not valid now (it is honoured only while the agent runs a turn)', NO_RETRY);
    }
    await serve(req, res, spec, route, check.entry, check.turnIds, query, t0);
  }

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, spec: ProviderSpec, route: Route, entry: Entry, turnIds: string[], query: URLSearchParams, t0: number): Promise<void> {
    const { profile, provider, allow } = entry.binding;
    const base = { profile, provider, turnIds, route: route.name };
    // Until the upstream call exists, being cut means dropping the sandbox's connection.
    let cut: () => void = () => res.destroy();
    const untrack = book.track(entry, () => cut());
    res.on('close', untrack);
    let bytesIn = 0;

    let body: Buffer | undefined;
    let model: string | undefined = route.pathModel;
    if (route.method === 'POST') {
      const read = await readBody(req);
      if (read === 'aborted') return;
      if (read === 'too_large') {
        emit({ type: 'bad_request', provider, profile, status: 413, reason: `request body over ${maxBody} bytes`, route: route.name });
        return refuse(res, spec, 413, `agent-vm model relay: the request body is larger than ${maxBody} bytes`, NO_RETRY);
      }
      body = read;
      bytesIn = read.length;
      if (route.modelFrom === 'body') {
        const parsed = bodyModel(read);
        if ('error' in parsed) {
          emit({ type: 'bad_request', provider, profile, status: 400, reason: parsed.error, route: route.name });
          return refuse(res, spec, 400, `agent-vm model relay: ${parsed.error}`, NO_RETRY);
        }
        model = parsed.model;
        if (route.name === 'POST /v1/chat/completions') body = includeUsage(parsed.json) ?? body;
      }
    }
    const shownModel = model === undefined ? undefined : printable(model, 200);
    const ev = { ...base, ...(shownModel === undefined ? {} : { model: shownModel }) };

    if (route.modelFrom !== 'none' && (model === undefined || !allow.includes(model))) {
      const allowed = allow.length > 0 ? allow.join(', ') : 'none';
      const note = `model ${JSON.stringify(shownModel ?? '')} is not allowed for this agent; allowed: ${allowed}`;
      emit({ ...ev, type: 'model_denied', allowed: [...allow], note });
      return refuse(res, spec, 403, `agent-vm: ${note}`, NO_RETRY);
    }

    if (route.metered && entry.binding.dailyTokens !== undefined) {
      const limit = entry.binding.dailyTokens;
      const day = utcDay(now());
      let used: number;
      try {
        used = await budget.used(profile, day);
      } catch (err) {
        log.error({ err: describeError(err), profile }, 'model budget store failed; refusing the call');
        return refuse(res, spec, 503, 'agent-vm model relay: the token budget cannot be checked right now', {});
      }
      if (used >= limit) {
        const note = `the daily model budget of this agent is spent (${used} of ${limit} tokens today, UTC); it renews at 00:00 UTC`;
        emit({ ...ev, type: 'budget_exhausted', used, limit, day, note });
        return refuse(res, spec, 429, `agent-vm: ${note}`, { ...NO_RETRY, 'retry-after': String(secondsToUtcMidnight(now())) });
      }
    }

    let key: string;
    try {
      key = await o.secrets.resolve(entry.keyName);
    } catch (err) {
      const note = `the ${provider} key of this agent (secret://${entry.keyName}) cannot be resolved; ask an operator`;
      log.error({ err: describeError(err), profile, provider }, 'model relay key unresolved');
      emit({ ...ev, type: 'key_unresolved', secret: entry.keyName, note });
      return refuse(res, spec, 502, `agent-vm: ${note}`, NO_RETRY);
    }
    // The turn may have ended (or the token been revoked) while the body was read or the key resolved.
    if (res.destroyed) return;
    if (!book.honoured(entry)) {
      emit({ type: 'unauthorized', provider, profile, reason: 'no_turn', route: route.name });
      return refuse(res, spec, 401, 'agent-vm model relay: this API key is not valid now (it is honoured only while the agent runs a turn)', NO_RETRY);
    }

    forward(
      { spec, route, base: upstreams[provider], query, req, res, body, key, allow, agents, idleTimeoutMs },
      {
        setCut: (c) => {
          cut = c;
        },
        onResponse(status, headers) {
          if (status < 400) return;
          const retryAfter = typeof headers['retry-after'] === 'string' ? printable(headers['retry-after'], 40) : undefined;
          const why = status === 401 || status === 403 ? `; check the key secret://${entry.keyName}` : status === 429 ? ' (rate limited)' : '';
          const note = `the ${provider} API answered ${status} to ${route.name}${why}${retryAfter ? `; retry after ${retryAfter} s` : ''}`;
          emit({ ...ev, type: 'upstream_error', status, ...(retryAfter === undefined ? {} : { retryAfter }), note });
        },
        onFailure(err) {
          log.warn({ err: describeError(err), profile, provider, route: route.name }, 'model provider unreachable');
          const note = `the ${provider} API could not be reached (${printable(describeError(err), 120)})`;
          emit({ ...ev, type: 'upstream_error', status: 502, note });
          refuse(res, spec, 502, `agent-vm: ${note}`, {});
        },
        onDone(r) {
          const durationMs = performance.now() - t0;
          if (r.usage) {
            emit({ ...ev, type: 'usage', usage: r.usage, streamed: r.streamed });
            Promise.resolve()
              .then(() => budget.add(profile, utcDay(now()), r.usage!.totalTokens, { provider, usage: r.usage! }))
              .catch((err: unknown) => log.error({ err: describeError(err), profile }, 'could not count model usage'));
          } else if (r.metered && r.status > 0 && r.status < 300) {
            emit({ ...ev, type: 'usage_missing', streamed: r.streamed, status: r.status, note: `the ${provider} answer to ${route.name} reported no token usage${r.completed ? '' : ' (it was cut short)'}` });
          }
          emit({
            ...ev, type: 'call', status: r.status, durationMs, bytesIn, bytesOut: r.bytesOut, completed: r.completed,
            ...(r.firstByteAt === undefined ? {} : { firstByteMs: r.firstByteAt - t0 }),
          });
          log.debug({ profile, provider, route: route.name, model: shownModel, status: r.status, ms: Math.round(durationMs), completed: r.completed }, 'model call');
        },
      },
    );
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err: describeError(err) }, 'model relay request failed');
      if (!res.headersSent) send(res, 500, JSON.stringify({ error: 'agent-vm model relay: internal error' }), { 'content-type': 'application/json' });
      else res.destroy();
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return void socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.listen.port, o.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ url }, 'model relay listening');

  return {
    url,
    issueToken(binding): IssuedToken {
      if (!(binding.provider in PROVIDERS)) throw new AgentVmError('model_relay_provider', `unknown model provider ${printable(String(binding.provider), 40)}`, { status: 400 });
      const token = book.issue(binding);
      return { token, env: PROVIDERS[binding.provider].env(url, token) };
    },
    beginTurn({ profile, turnId }) {
      book.beginTurn(profile, turnId);
    },
    endTurn(turnId) {
      book.endTurn(turnId);
    },
    revoke(token) {
      book.revoke(token);
    },
    async close() {
      if (closed) return;
      closed = true;
      book.cutEverything();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

/**
 * Chat Completions reports usage in a stream only when asked (`stream_options.include_usage`);
 * the relay asks, so a streaming agent cannot spend tokens the budget never sees. The extra final
 * chunk (`choices: []`, `usage`) is part of the documented stream. Undefined: body left as it came.
 */
function includeUsage(json: Record<string, unknown>): Buffer | undefined {
  if (json.stream !== true) return undefined;
  const opts = json.stream_options;
  if (opts !== null && typeof opts === 'object' && !Array.isArray(opts) && (opts as { include_usage?: unknown }).include_usage === true) return undefined;
  const base = opts !== null && typeof opts === 'object' && !Array.isArray(opts) ? (opts as Record<string, unknown>) : {};
  return Buffer.from(JSON.stringify({ ...json, stream_options: { ...base, include_usage: true } }));
}
