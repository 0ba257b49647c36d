/**
 * Releases in the operator API (same bearer token as the rest of `/v1/`, see operator/auth.ts);
 * changes are made and audited as `local:api`:
 *
 *   GET  /v1/releases[?profile=&limit=]      releases, newest first
 *   GET  /v1/releases/status                  every agent: release, slot, state, pending, drift
 *   POST /v1/releases/plan     {"profiles"?: [...]}                       → {plan, pending}
 *   POST /v1/releases/apply    {"profiles"?: [...], "canary"?, "why"?}    → {results}
 *   POST /v1/releases/<profile>/rollback  {"why"?}                        → the rollback
 *
 * The manifests are read from the profiles directory at each call, as the CLI does.
 */
import { Hono, type Context } from 'hono';
import { isAgentVmError } from '../errors.js';
import type { Profile } from '../governance/profile.js';
import type { Logger } from '../log.js';
import { OPERATOR_API, operatorApiToken, tokenMatches } from '../operator/auth.js';
import type { SandboxDriver, RuntimeSetting } from '../sandbox/types.js';
import { driftReport } from './drift.js';
import type { ReleaseService } from './service.js';

const MAX_BODY_CHARS = 4096;
const SAFE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/;

export interface ReleaseApiOptions {
  service: ReleaseService;
  driver: SandboxDriver;
  profiles: () => Promise<Profile[]>;
  image: string;
  runtime: RuntimeSetting;
  adminToken?: string | undefined;
  apiToken?: string | undefined;
  logger: Logger;
}

type Body = { profiles?: string[]; canary?: string; why?: string };

/** The body as `Body`, or a message saying what is wrong with it. */
async function body(c: Context): Promise<Body | string> {
  const text = await c.req.text().catch(() => '');
  if (text.length > MAX_BODY_CHARS) return `the body must be under ${MAX_BODY_CHARS} characters`;
  if (text.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'the body must be a JSON object';
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'the body must be a JSON object';
  const b = v as Record<string, unknown>;
  const out: Body = {};
  if (b.profiles !== undefined) {
    if (!Array.isArray(b.profiles) || b.profiles.length > 100 || !b.profiles.every((p) => typeof p === 'string' && SAFE.test(p))) return '"profiles" must be a list of profile ids';
    out.profiles = b.profiles as string[];
  }
  if (b.canary !== undefined) {
    if (typeof b.canary !== 'string' || !SAFE.test(b.canary)) return '"canary" must be a conversation key or channel prefix (letters, digits, . _ : -)';
    out.canary = b.canary;
  }
  if (b.why !== undefined) {
    if (typeof b.why !== 'string' || b.why.length > 500) return '"why" must be a string of at most 500 characters';
    out.why = b.why;
  }
  return out;
}

export function createReleaseApi(o: ReleaseApiOptions): Hono {
  const token = operatorApiToken({ adminToken: o.adminToken, apiToken: o.apiToken });
  const routes = new Hono();
  const bad = (c: Context, message: string) => c.json({ error: 'bad_request', message }, 400);
  routes.use('/v1/releases', auth);
  routes.use('/v1/releases/*', auth);
  async function auth(c: Context, next: () => Promise<void>): Promise<Response | void> {
    if (!token) return c.json({ error: 'api_disabled', message: 'the operator API is disabled; set AGENTVM_ADMIN_TOKEN (or AGENTVM_API_TOKEN) to enable it' }, 403);
    const header = c.req.header('authorization');
    if (!tokenMatches(header?.startsWith('Bearer ') ? header.slice(7) : undefined, token)) {
      c.header('WWW-Authenticate', 'Bearer');
      return c.json({ error: 'unauthorized', message: 'missing or wrong bearer token' }, 401);
    }
    await next();
  }

  routes.get('/v1/releases', async (c) => {
    const profile = c.req.query('profile');
    const limit = Number(c.req.query('limit') ?? 100);
    return c.json({ releases: await o.service.list(profile ? profile.slice(0, 200) : undefined, Number.isInteger(limit) && limit > 0 ? limit : 100) });
  });
  routes.get('/v1/releases/status', async (c) => {
    const agents = await driftReport(await o.profiles(), { repo: o.service.repo, driver: o.driver, image: o.image, runtime: o.runtime });
    return c.json({ agents, drift: agents.some((a) => a.drift.length > 0) });
  });
  routes.post('/v1/releases/plan', async (c) => {
    const b = await body(c);
    if (typeof b === 'string') return bad(c, b);
    const plan = await o.service.plan(b.profiles);
    return c.json({ plan, pending: plan.some((p) => p.changes.length > 0 || p.error) });
  });
  routes.post('/v1/releases/apply', async (c) => {
    const b = await body(c);
    if (typeof b === 'string') return bad(c, b);
    return c.json({ results: await o.service.apply(b.profiles, { who: OPERATOR_API, ...(b.why ? { why: b.why } : {}), ...(b.canary ? { canary: b.canary } : {}) }) });
  });
  routes.post('/v1/releases/:profile/rollback', async (c) => {
    const b = await body(c);
    if (typeof b === 'string') return bad(c, b);
    return c.json(await o.service.rollback(c.req.param('profile').slice(0, 200), { who: OPERATOR_API, ...(b.why ? { why: b.why } : {}) }));
  });
  routes.onError((err, c) => {
    if (isAgentVmError(err)) return c.json({ error: err.code, message: err.message }, err.status as 400);
    o.logger.error({ err: (err instanceof Error ? err.message : String(err)).split('\n')[0] }, 'release API request failed');
    return c.json({ error: 'internal', message: 'internal error; see the server log' }, 500);
  });
  return routes;
}
