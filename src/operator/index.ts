/**
 * The operator API under `/v1/`: tool calls waiting for a person, and tool pins.
 *
 *   GET  /v1/approvals                           pending requests, oldest first
 *   POST /v1/approvals/<id>                      {"decision":"approved"|"denied"}, as the operator
 *   GET  /v1/pins[?profile=<id>]                 pins and quarantined tools, with the definition diff
 *   POST /v1/pins/<profile>/<server.tool>/repin  accept the quarantined definition; optional
 *                                                {"expect":"<seen hash>"} re-pins only what was reviewed
 *
 * Closed (403) unless a bearer token is configured (AGENTVM_API_TOKEN today), 401 without it.
 * Every error is `{error, message}`. A re-pin is written to the database and the audit trail (by
 * `local:api`); running proxies pick it up on their next look at that tool, without a restart.
 *
 * Deliberately left out: sending messages (`POST /v1/messages` is the local channel's) and a
 * separate admin token (AGENTVM_ADMIN_TOKEN, to come); nothing here reads the environment.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { isAgentVmError } from '../errors.js';
import type { ApprovalBroker } from '../governance/approvals.js';
import type { AuditLog } from '../governance/audit.js';
import { pinView, repinQuarantined } from '../governance/mcp-pins.js';
import type { Logger } from '../log.js';
import type { PinRepo } from '../store/pins.js';

export interface OperatorApiOptions {
  /** The bearer token; undefined → every route answers 403. */
  token: string | undefined;
  approvals: Pick<ApprovalBroker, 'pending' | 'answer'>;
  pins: PinRepo;
  audit: AuditLog;
  logger: Logger;
}

/** Who a change made through this API is recorded as. */
export const OPERATOR_API = 'local:api';

const MAX_BODY_CHARS = 4096;

function tokenMatches(given: string | undefined, expected: string): boolean {
  if (!given) return false;
  // Hash both so the comparison is constant-time regardless of length.
  return timingSafeEqual(createHash('sha256').update(given).digest(), createHash('sha256').update(expected).digest());
}

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

export function createOperatorApi(o: OperatorApiOptions): Hono {
  const log = o.logger.child({ component: 'operator.api' });
  const routes = new Hono();

  routes.use('/v1/approvals', auth);
  routes.use('/v1/approvals/*', auth);
  routes.use('/v1/pins', auth);
  routes.use('/v1/pins/*', auth);
  async function auth(c: Context, next: () => Promise<void>): Promise<Response | void> {
    if (!o.token) return fail(c, 403, 'api_disabled', 'the operator API is disabled; set AGENTVM_API_TOKEN to enable it');
    const header = c.req.header('authorization');
    const bearer = header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
    if (!tokenMatches(bearer, o.token)) {
      c.header('WWW-Authenticate', 'Bearer');
      return fail(c, 401, 'unauthorized', 'missing or wrong bearer token');
    }
    await next();
  }

  routes.get('/v1/approvals', async (c) => c.json({ pending: await o.approvals.pending() }));

  routes.post('/v1/approvals/:id', async (c) => {
    const body = await smallJson(c);
    if (body === 'too_large') return fail(c, 413, 'payload_too_large', `the body must be under ${MAX_BODY_CHARS} characters`);
    const decision = body?.decision;
    if (decision !== 'approved' && decision !== 'denied') {
      return fail(c, 400, 'bad_request', 'body must be {"decision": "approved"} or {"decision": "denied"}');
    }
    const id = c.req.param('id');
    const result = await o.approvals.answer(id, decision);
    if (result.status !== 'answered') return fail(c, 404, 'not_found', 'no such pending approval (already answered, expired, or unknown)');
    return c.json({ id, decision });
  });

  routes.get('/v1/pins', async (c) => {
    const profile = c.req.query('profile');
    const rows = await o.pins.list(profile === undefined || profile === '' ? undefined : profile);
    return c.json({ pins: rows.map(pinView) });
  });

  // `:tool{.+}`: a tool name may hold '/' (policy.ts), so the tool is everything up to `/repin`.
  routes.post('/v1/pins/:profile/:tool{.+}/repin', async (c) => {
    const body = await smallJson(c);
    if (body === 'too_large') return fail(c, 413, 'payload_too_large', `the body must be under ${MAX_BODY_CHARS} characters`);
    if (body === undefined) return fail(c, 400, 'bad_request', 'the body must be empty or a JSON object such as {"expect": "<seen hash>"}');
    const expect = body.expect;
    if (expect !== undefined && (typeof expect !== 'string' || !/^[0-9a-f]{64}$/.test(expect))) {
      return fail(c, 400, 'bad_request', '"expect" must be the 64-hex-digit hash of the quarantined definition (GET /v1/pins)');
    }
    const profile = c.req.param('profile');
    const tool = c.req.param('tool');
    try {
      const pin = await repinQuarantined({ pins: o.pins, audit: o.audit }, profile, tool, OPERATOR_API, expect);
      log.info({ profile, tool }, 'tool re-pinned through the operator API');
      return c.json({ pin });
    } catch (err) {
      if (isAgentVmError(err) && [404, 409, 503].includes(err.status)) return fail(c, err.status as 404 | 409 | 503, err.code, err.message);
      throw err;
    }
  });

  routes.onError((err, c) => {
    if (isAgentVmError(err) && err.status < 500) return fail(c, err.status as 400, err.code, err.message);
    // The first line only: drizzle appends the statement's parameters on the next ones.
    log.error({ err: (err instanceof Error ? err.message : String(err)).split('\n')[0] }, 'operator API request failed');
    return fail(c, 500, 'internal', 'internal error; see the server log');
  });

  return routes;
}
