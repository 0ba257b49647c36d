import { describe, expect, it } from 'vitest';
import { createLogger } from './log.js';
import { createApp, type ReadinessCheck } from './server.js';

const logger = createLogger('silent');

function ok(name: string): ReadinessCheck {
  return { name, check: async () => {} };
}

function failing(name: string, message: string): ReadinessCheck {
  return {
    name,
    check: async () => {
      throw new Error(message);
    },
  };
}

interface ReadyBody {
  ok: boolean;
  checks: Array<{ name: string; ok: boolean; error?: string }>;
}

describe('createApp', () => {
  it('GET /healthz answers 200 {ok:true}', async () => {
    const app = createApp({ logger, checks: [] });
    const res = await app.request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });

  it('GET /readyz answers 200 and lists every check when all pass', async () => {
    const app = createApp({ logger, checks: [ok('db'), ok('redis'), ok('docker')] });
    const res = await app.request('/readyz');
    expect(res.status).toBe(200);
    const body = (await res.json()) as ReadyBody;
    expect(body.ok).toBe(true);
    expect(body.checks).toEqual([
      { name: 'db', ok: true },
      { name: 'redis', ok: true },
      { name: 'docker', ok: true },
    ]);
  });

  it('GET /readyz answers 503 naming the failing check, the others still ok', async () => {
    const app = createApp({ logger, checks: [failing('db', 'db down'), ok('redis'), ok('docker')] });
    const res = await app.request('/readyz');
    expect(res.status).toBe(503);
    const body = (await res.json()) as ReadyBody;
    expect(body.ok).toBe(false);
    expect(body.checks).toHaveLength(3);
    expect(body.checks.find((c) => c.name === 'db')).toEqual({ name: 'db', ok: false, error: 'db down' });
    expect(body.checks.find((c) => c.name === 'redis')).toEqual({ name: 'redis', ok: true });
    expect(body.checks.find((c) => c.name === 'docker')).toEqual({ name: 'docker', ok: true });
  });

  it('GET /readyz answers in time when a check hangs: that check failed, with why', async () => {
    const hangs: ReadinessCheck = { name: 'db', check: () => new Promise<void>(() => {}) };
    const app = createApp({ logger, checks: [hangs, ok('docker')], readyTimeoutMs: 50 });
    const res = await app.request('/readyz');
    expect(res.status).toBe(503);
    const body = (await res.json()) as ReadyBody;
    expect(body.checks).toEqual([
      { name: 'db', ok: false, error: 'no answer within 50 ms' },
      { name: 'docker', ok: true },
    ]);
  });

  it('GET /readyz reports a non-Error throw as a string', async () => {
    const app = createApp({
      logger,
      checks: [
        {
          name: 'weird',
          check: async () => {
            throw 'plain string'; // eslint-disable-line no-throw-literal
          },
        },
      ],
    });
    const res = await app.request('/readyz');
    expect(res.status).toBe(503);
    const body = (await res.json()) as ReadyBody;
    expect(body.checks).toEqual([{ name: 'weird', ok: false, error: 'plain string' }]);
  });

  it('GET /metrics answers prometheus text with agentvm_ready and default metrics', async () => {
    const app = createApp({ logger, checks: [ok('db')] });
    const res = await app.request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toContain('agentvm_ready');
    // A default process metric, registered with the agentvm_ prefix.
    expect(text).toMatch(/^agentvm_process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^# TYPE agentvm_nodejs_\w+ /m);
  });

  it('agentvm_ready follows the last readiness result', async () => {
    let healthy = true;
    const app = createApp({
      logger,
      checks: [
        {
          name: 'db',
          check: async () => {
            if (!healthy) throw new Error('db down');
          },
        },
      ],
    });
    await app.request('/readyz');
    expect(await (await app.request('/metrics')).text()).toMatch(/^agentvm_ready 1$/m);
    healthy = false;
    expect((await app.request('/readyz')).status).toBe(503);
    expect(await (await app.request('/metrics')).text()).toMatch(/^agentvm_ready 0$/m);
  });

  it('unknown routes answer 404 JSON with error not_found', async () => {
    const app = createApp({ logger, checks: [] });
    const res = await app.request('/no/such/route');
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    const body = (await res.json()) as { error: string; message: string };
    expect(body.error).toBe('not_found');
    expect(body.message).toContain('/no/such/route');
  });

  it('two apps in one process do not collide on metric registration', async () => {
    const a = createApp({ logger, checks: [ok('a')] });
    const b = createApp({ logger, checks: [failing('b', 'b down')] });
    expect((await a.request('/readyz')).status).toBe(200);
    expect((await b.request('/readyz')).status).toBe(503);
    // Each app keeps its own registry: one's readiness does not leak into the other's gauge.
    expect(await (await a.request('/metrics')).text()).toMatch(/^agentvm_ready 1$/m);
    expect(await (await b.request('/metrics')).text()).toMatch(/^agentvm_ready 0$/m);
  });
});

describe('one error shape', () => {
  it('renders AgentVmError, HTTPException and unexpected errors as {error, message}; an unexpected one says nothing more', async () => {
    const { AgentVmError } = await import('./errors.js');
    const { HTTPException } = await import('hono/http-exception');
    const app = createApp({ logger, checks: [] });
    app.get('/agentvm', () => {
      throw new AgentVmError('payload_too_large', 'too big', { status: 413 });
    });
    app.get('/hono', () => {
      throw new HTTPException(401, { message: 'no token' });
    });
    app.get('/bug', () => {
      throw new Error('secret detail: /etc/shadow');
    });
    const body = async (path: string) => {
      const res = await app.request(path);
      return { status: res.status, body: await res.json() };
    };
    expect(await body('/agentvm')).toEqual({ status: 413, body: { error: 'payload_too_large', message: 'too big' } });
    expect(await body('/hono')).toEqual({ status: 401, body: { error: 'unauthorized', message: 'no token' } });
    expect(await body('/bug')).toEqual({ status: 500, body: { error: 'internal', message: 'internal error' } });
  });
});
