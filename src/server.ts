/**
 * The HTTP surface. Platform endpoints are mounted by their adapters as they are added;
 * every request body is bounded before any route sees it (body-limit.ts), and errors are mapped
 * to responses in one place: every error answer is `{error, message}` with the error's status.
 */
import { Hono, type Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { Registry, collectDefaultMetrics, Gauge } from 'prom-client';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from './body-limit.js';
import { withDeadline } from './deadline.js';
import { dbFailure, isDbUnavailable } from './store/errors.js';
import { AgentVmError } from './errors.js';
import type { Logger } from './log.js';

export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

export interface AppDeps {
  logger: Logger;
  checks: ReadinessCheck[];
  registry?: Registry;
  /** Largest request body any endpoint reads (default 1 MiB); routes may set a lower one. */
  maxBodyBytes?: number;
  /**
   * How long `/readyz` waits for a check (default 3 s). A check that has not answered by then is
   * reported as failed, so a probe gets an answer even while a dependency hangs.
   */
  readyTimeoutMs?: number;
}

const DEFAULT_READY_TIMEOUT_MS = 3000;

export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'agentvm_' });
  return registry;
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  // First, so it covers every route, including the ones mounted after createApp returns.
  app.use('*', limitBody(deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES));
  const registry = deps.registry ?? createMetricsRegistry();
  const ready = new Gauge({ name: 'agentvm_ready', help: '1 when every readiness check passes', registers: [registry] });

  app.get('/healthz', (c) => c.json({ ok: true }));

  const readyTimeoutMs = deps.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  app.get('/readyz', async (c) => {
    const results = await Promise.all(
      deps.checks.map(async (k) => {
        try {
          await withDeadline(k.check(), readyTimeoutMs, () => new Error(`no answer within ${readyTimeoutMs} ms`));
          return { name: k.name, ok: true as const };
        } catch (err) {
          return { name: k.name, ok: false as const, error: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
    const ok = results.every((r) => r.ok);
    ready.set(ok ? 1 : 0);
    return c.json({ ok, checks: results }, ok ? 200 : 503);
  });

  app.get('/metrics', async (c) => {
    c.header('content-type', registry.contentType);
    return c.body(await registry.metrics());
  });

  app.notFound((c) => c.json({ error: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` }, 404));

  app.onError((err, c) => renderError(err, c, deps.logger));

  return app;
}

const RETRY_AFTER_SECONDS = 5;

const HTTP_CODES: Record<number, string> = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 413: 'payload_too_large' };

/**
 * The one error renderer. AgentVmError: its code, message and status. Hono's own HTTPException
 * (e.g. a malformed JSON body): its status, with a code derived from it. Anything else is a bug:
 * logged, and answered 500 without details (they may hold what a caller must not see).
 */
export function renderError(err: Error, c: Context, logger: Logger): Response {
  if (err instanceof AgentVmError) {
    if (err.status >= 500 && err.status !== 503) logger.error({ err, code: err.code }, 'request failed');
    if (err.status === 503) c.header('Retry-After', String(RETRY_AFTER_SECONDS));
    return c.json({ error: err.code, message: err.message }, err.status as 400);
  }
  if (isDbUnavailable(err)) {
    // The database, not the request, is the problem: say so, and when to come back.
    logger.warn({ reason: dbFailure(err).message }, 'request refused: the database is unavailable');
    c.header('Retry-After', String(RETRY_AFTER_SECONDS));
    return c.json({ error: 'database_unavailable', message: `the database is unavailable (${dbFailure(err).message}); try again in a few seconds` }, 503);
  }
  if (err instanceof HTTPException) {
    if (err.status >= 500) logger.error({ err }, 'request failed');
    const code = HTTP_CODES[err.status] ?? (err.status < 500 ? 'bad_request' : 'internal');
    return c.json({ error: code, message: err.message || 'request refused' }, err.status);
  }
  logger.error({ err }, 'unhandled error');
  return c.json({ error: 'internal', message: 'internal error' }, 500);
}
