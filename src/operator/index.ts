/**
 * The operator API under `/v1/`: everything the dashboard (`/ui`) shows and does, as JSON, for
 * scripts and for the CLI's `--server` mode (notes/operator.md has curl examples).
 *
 *   GET  /v1/agents                              profiles' agents: state, runtime, wakes, last turn
 *   POST /v1/agents/<id>/wake|sleep|snapshot     as the operator (audited)
 *   GET  /v1/conversations[?profile=&limit=]     newest activity first
 *   GET  /v1/conversations/<id>                  transcript (prompts, progress, replies, files) and tool calls
 *   GET  /v1/approvals                           pending requests, oldest first
 *   POST /v1/approvals/<id>                      {"decision":"approved"|"denied"}
 *   GET  /v1/pins[?profile=<id>]                 pins and quarantined tools, with the definition diff
 *   POST /v1/pins/<profile>/<server.tool>/repin  accept the quarantined definition; optional
 *                                                {"expect":"<seen hash>"} re-pins only what was reviewed
 *   GET  /v1/audit[?profile=&action=&decision=&subject=&before=&limit=]   newest first; action `tool.*` is a prefix
 *   GET  /v1/audit/verify                        the hash chain's state
 *   GET  /v1/egress[?profile=&decision=&before=&limit=]                   `egress.connect` rows
 *   GET  /v1/feedback[?profile=&limit=]          people's 👍/👎 on answers, newest first, with a count per value
 *
 * Bearer token: AGENTVM_ADMIN_TOKEN, or AGENTVM_API_TOKEN while no admin token is set (auth.ts);
 * neither → 403, a wrong one → 401. Every error is `{error, message}`. Changes are audited as
 * `local:api`; running units pick up re-pins on their next look at the tool, without a restart.
 *
 * Deliberately left out: sending messages (`POST /v1/messages` is the local channel's) and
 * releases (to come). Nothing here reads the environment.
 */
import { Hono, type Context } from 'hono';
import { isAgentVmError } from '../errors.js';
import { API_OPERATOR, operatorApiToken, tokenMatches } from './auth.js';
import { createOperatorService, type AgentAction, type OperatorDeps, type OperatorService } from './service.js';

export { OPERATOR_API } from './auth.js';

export interface OperatorApiOptions extends OperatorDeps {
  /** AGENTVM_ADMIN_TOKEN: when set, the only token accepted. */
  adminToken?: string | undefined;
  /** AGENTVM_API_TOKEN: accepted while no admin token is set. */
  apiToken?: string | undefined;
  /** @deprecated `apiToken` by its old name (kept for callers written before the admin token). */
  token?: string | undefined;
  /** The service to use (shared with the dashboard); default one made from these options. */
  service?: OperatorService;
}

const MAX_BODY_CHARS = 4096;
const ACTIONS: readonly AgentAction[] = ['wake', 'sleep', 'snapshot'];

function fail(c: Context, status: 400 | 401 | 403 | 404 | 409 | 413 | 500 | 503, error: string, message: string): Response {
  return c.json({ error, message }, status);
}

/** A small JSON object body, or undefined (absent, not JSON, too long, not an object). */
async function smallJson(c: Context): Promise<Record<string, unknown> | undefined | 'too_large'> {
  const text = await c.req.text().catch(() => '');
  if (text.length > MAX_BODY_CHARS) return 'too_large';
  if (text.trim() === '') return {};
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A query parameter as a bounded string, or undefined when absent or empty. */
export function queryText(v: string | undefined, max = 200): string | undefined {
  return v === undefined || v === '' ? undefined : v.slice(0, max);
}

/** A positive integer query parameter, or undefined. */
export function queryInt(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d{1,15}$/.test(v)) return undefined;
  const n = Number(v);
  return n > 0 ? n : undefined;
}

export function createOperatorApi(o: OperatorApiOptions): Hono {
  const log = o.logger.child({ component: 'operator.api' });
  const svc = o.service ?? createOperatorService(o);
  const token = operatorApiToken({ adminToken: o.adminToken, apiToken: o.apiToken ?? o.token });
  const routes = new Hono();

  for (const p of ['agents', 'conversations', 'approvals', 'pins', 'audit', 'egress', 'feedback']) {
    routes.use(`/v1/${p}`, auth);
    routes.use(`/v1/${p}/*`, auth);
  }
  async function auth(c: Context, next: () => Promise<void>): Promise<Response | void> {
    if (!token) return fail(c, 403, 'api_disabled', 'the operator API is disabled; set AGENTVM_ADMIN_TOKEN (or AGENTVM_API_TOKEN) to enable it');
    const header = c.req.header('authorization');
    const bearer = header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
    if (!tokenMatches(bearer, token)) {
      c.header('WWW-Authenticate', 'Bearer');
      return fail(c, 401, 'unauthorized', 'missing or wrong bearer token');
    }
    await next();
  }

  routes.get('/v1/agents', async (c) => c.json({ agents: await svc.agents() }));
  routes.post('/v1/agents/:id/:action', async (c) => {
    const action = c.req.param('action') as AgentAction;
    if (!ACTIONS.includes(action)) return fail(c, 404, 'not_found', `no agent action "${action.slice(0, 40)}"; use wake, sleep or snapshot`);
    return c.json(await svc.agentAction(c.req.param('id'), action, API_OPERATOR));
  });

  routes.get('/v1/conversations', async (c) =>
    c.json({ conversations: await svc.conversations({ profile: queryText(c.req.query('profile')), limit: queryInt(c.req.query('limit')) }) }),
  );
  routes.get('/v1/conversations/:id{.+}', async (c) => c.json(await svc.conversation(c.req.param('id'))));

  routes.get('/v1/approvals', async (c) => c.json({ pending: await svc.approvals() }));
  routes.post('/v1/approvals/:id', async (c) => {
    const body = await smallJson(c);
    if (body === 'too_large') return fail(c, 413, 'payload_too_large', `the body must be under ${MAX_BODY_CHARS} characters`);
    const decision = body?.decision;
    if (decision !== 'approved' && decision !== 'denied') {
      return fail(c, 400, 'bad_request', 'body must be {"decision": "approved"} or {"decision": "denied"}');
    }
    return c.json(await svc.answerApproval(c.req.param('id'), decision, API_OPERATOR));
  });

  routes.get('/v1/pins', async (c) => c.json({ pins: await svc.pins(queryText(c.req.query('profile'))) }));
  // `:tool{.+}`: a tool name may hold '/' (policy.ts), so the tool is everything up to `/repin`.
  routes.post('/v1/pins/:profile/:tool{.+}/repin', async (c) => {
    const body = await smallJson(c);
    if (body === 'too_large') return fail(c, 413, 'payload_too_large', `the body must be under ${MAX_BODY_CHARS} characters`);
    if (body === undefined) return fail(c, 400, 'bad_request', 'the body must be empty or a JSON object such as {"expect": "<seen hash>"}');
    const expect = body.expect;
    if (expect !== undefined && typeof expect !== 'string') return fail(c, 400, 'bad_request', '"expect" must be the 64-hex-digit hash of the quarantined definition (GET /v1/pins)');
    return c.json({ pin: await svc.repin(c.req.param('profile'), c.req.param('tool'), API_OPERATOR, expect) });
  });

  const auditQuery = (c: Context, action?: string) => ({
    profile: queryText(c.req.query('profile')),
    action: action ?? queryText(c.req.query('action'), 64),
    decision: queryText(c.req.query('decision'), 64),
    subject: queryText(c.req.query('subject'), 300),
    before: queryInt(c.req.query('before')),
    limit: queryInt(c.req.query('limit')),
  });
  routes.get('/v1/audit', async (c) => c.json({ rows: await svc.audit(auditQuery(c)) }));
  routes.get('/v1/audit/verify', async (c) => c.json(await svc.verify()));
  routes.get('/v1/egress', async (c) => c.json({ rows: await svc.audit(auditQuery(c, 'egress.connect')) }));
  routes.get('/v1/feedback', async (c) => c.json(await svc.feedback({ profile: queryText(c.req.query('profile')), limit: queryInt(c.req.query('limit')) })));

  routes.onError((err, c) => {
    // Our own errors say what to do and carry nothing secret; anything else is a bug.
    if (isAgentVmError(err)) {
      if (err.status >= 500) log.warn({ code: err.code, err: err.message.split('\n')[0] }, 'operator action failed');
      return c.json({ error: err.code, message: err.message }, err.status as 400);
    }
    // The first line only: drizzle appends the statement's parameters on the next ones.
    log.error({ err: (err instanceof Error ? err.message : String(err)).split('\n')[0] }, 'operator API request failed');
    return fail(c, 500, 'internal', 'internal error; see the server log');
  });

  return routes;
}
