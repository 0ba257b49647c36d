/**
 * Adapter routes as the gateway serves them: mounted on the real app (src/server.ts), so the one
 * body limit and the one error renderer (`{error, message}` with the error's status) apply, as
 * they do behind `agent-vm up`.
 */
import type { Hono } from 'hono';
import { Registry } from 'prom-client';
import { createLogger } from '../../src/log.js';
import { createApp } from '../../src/server.js';

const apps = new WeakMap<Hono, Hono>();

/** The app serving `routes` (one per routes object, so repeated calls share it). */
export function mounted(routes: Hono): Hono {
  let app = apps.get(routes);
  if (!app) {
    // A bare registry: the default process metrics are not what these tests look at.
    app = createApp({ logger: createLogger('silent'), checks: [], registry: new Registry() });
    app.route('/', routes);
    apps.set(routes, app);
  }
  return app;
}
