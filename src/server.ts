/**
 * The HTTP surface. Platform endpoints are mounted by their adapters as they are added;
 * errors are mapped to responses in one place.
 */
import { Hono } from 'hono';
import { Registry, collectDefaultMetrics, Gauge } from 'prom-client';
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
}

export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'agentvm_' });
  return registry;
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const registry = deps.registry ?? createMetricsRegistry();
  const ready = new Gauge({ name: 'agentvm_ready', help: '1 when every readiness check passes', registers: [registry] });

  app.get('/healthz', (c) => c.json({ ok: true }));

  app.get('/readyz', async (c) => {
    const results = await Promise.all(
      deps.checks.map(async (k) => {
        try {
          await k.check();
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

  app.onError((err, c) => {
    if (err instanceof AgentVmError) {
      if (err.status >= 500) deps.logger.error({ err, code: err.code }, 'request failed');
      return c.json({ error: err.code, message: err.message }, err.status as 400);
    }
    deps.logger.error({ err }, 'unhandled error');
    return c.json({ error: 'internal', message: 'internal error' }, 500);
  });

  return app;
}
