/**
 * The dashboard at `/ui`: server-rendered pages (pages.ts) over the operator service, the same
 * one the JSON API uses. Off (404) unless AGENTVM_ADMIN_TOKEN is set.
 *
 * Access (auth.ts): `POST /ui/login` with the admin token sets the session cookie (HttpOnly,
 * SameSite=Strict, Path=/ui, Secure over https). Pages without a session redirect to the login
 * page. Every POST needs the session, the session's CSRF token in the form, and no foreign
 * Origin; anything less is refused (401 / 403, `{error, message}`) before it does anything.
 * Every action is audited by the service as the session (`ui:<hash>`).
 *
 * Responses carry a CSP with no script source at all, no framing, no referrer to other sites,
 * and no caching.
 *
 * Deliberately left out: JavaScript (forms and redirects do everything), and sessions that
 * survive a restart.
 */
import { Hono, type Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { describeError, isAgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { createSessionStore, SESSION_COOKIE, SESSION_TTL_MS, sameOrigin, tokenMatches, type Session, type SessionStore } from './auth.js';
import { queryInt, queryText } from './index.js';
import { agentsPage, approvalsPage, auditPage, conversationsPage, feedbackPage, loginPage, pinsPage, transcriptPage, type PageContext } from './pages.js';
import type { AgentAction, OperatorService } from './service.js';

export interface DashboardOptions {
  /** AGENTVM_ADMIN_TOKEN; undefined: every /ui route answers 404. */
  adminToken: string | undefined;
  service: OperatorService;
  logger: Logger;
  sessions?: SessionStore;
}

type Env = { Variables: { session: Session } };

const CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function createDashboard(o: DashboardOptions): Hono<Env> {
  const log = o.logger.child({ component: 'operator.ui' });
  const sessions = o.sessions ?? createSessionStore();
  const flashes = new Map<string, string>();
  const ui = new Hono<Env>();

  ui.use('/ui', guard);
  ui.use('/ui/*', guard);
  async function guard(c: Context<Env>, next: () => Promise<void>): Promise<Response | void> {
    if (!o.adminToken) return c.json({ error: 'ui_disabled', message: 'the dashboard is off; set AGENTVM_ADMIN_TOKEN to enable it' }, 404);
    c.header('Content-Security-Policy', CSP);
    c.header('X-Frame-Options', 'DENY');
    c.header('X-Content-Type-Options', 'nosniff');
    // Not no-referrer: with it Chromium sends `Origin: null` on our own form posts.
    c.header('Referrer-Policy', 'same-origin');
    c.header('Cache-Control', 'no-store');
    const path = c.req.path;
    if (path === '/ui/login') return next();
    const session = sessions.get(getCookie(c, SESSION_COOKIE));
    if (!session) {
      if (c.req.method === 'GET' || c.req.method === 'HEAD') return c.redirect('/ui/login', 303);
      return c.json({ error: 'unauthorized', message: 'log in at /ui/login first' }, 401);
    }
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      if (!sameOrigin({ origin: c.req.header('origin'), referer: c.req.header('referer'), host: c.req.header('host') })) {
        return c.json({ error: 'forbidden', message: 'cross-origin request refused' }, 403);
      }
      const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
      const csrf = typeof form.csrf === 'string' ? form.csrf : undefined;
      if (!tokenMatches(csrf, session.csrf)) return c.json({ error: 'forbidden', message: 'missing or wrong CSRF token; reload the page and try again' }, 403);
    }
    c.set('session', session);
    return next();
  }

  const page = (c: Context<Env>, tab: string): PageContext => {
    const session = c.get('session');
    const flash = flashes.get(session.id);
    flashes.delete(session.id);
    return { csrf: session.csrf, tab, flash };
  };
  /** Runs an action, remembers its one-line result for the next page, and goes back. */
  async function act(c: Context<Env>, back: string, run: () => Promise<string>): Promise<Response> {
    const session = c.get('session');
    try {
      flashes.set(session.id, await run());
    } catch (err) {
      if (!isAgentVmError(err)) log.error({ err: describeError(err).split('\n')[0] }, 'dashboard action failed');
      flashes.set(session.id, `Failed: ${isAgentVmError(err) ? err.message : 'internal error; see the server log'}`);
    }
    return c.redirect(back, 303);
  }
  const form = async (c: Context<Env>) => (await c.req.parseBody()) as Record<string, string | File>;
  const field = (f: Record<string, string | File>, k: string) => (typeof f[k] === 'string' ? (f[k] as string) : undefined);

  ui.get('/ui/login', (c) => c.html(loginPage()));
  ui.post('/ui/login', async (c) => {
    if (!sameOrigin({ origin: c.req.header('origin'), referer: c.req.header('referer'), host: c.req.header('host') })) {
      return c.json({ error: 'forbidden', message: 'cross-origin request refused' }, 403);
    }
    const f = await form(c).catch(() => ({}) as Record<string, string | File>);
    if (!tokenMatches(field(f, 'token'), o.adminToken!)) {
      log.warn({ remote: c.req.header('x-forwarded-for') ?? null }, 'dashboard login with a wrong token');
      return c.html(loginPage('Wrong token.'), 401);
    }
    const s = sessions.create();
    setCookie(c, SESSION_COOKIE, s.id, {
      httpOnly: true,
      sameSite: 'Strict',
      path: '/ui',
      secure: new URL(c.req.url).protocol === 'https:',
      maxAge: Math.floor(SESSION_TTL_MS / 1000),
    });
    log.info({ operator: s.operator.id }, 'dashboard login');
    return c.redirect('/ui/agents', 303);
  });
  ui.post('/ui/logout', (c) => {
    sessions.destroy(c.get('session').id);
    deleteCookie(c, SESSION_COOKIE, { path: '/ui' });
    return c.redirect('/ui/login', 303);
  });

  ui.get('/ui', (c) => c.redirect('/ui/agents', 303));
  ui.get('/ui/agents', async (c) => c.html(agentsPage(page(c, 'agents'), await o.service.agents())));
  ui.post('/ui/agents/:id', async (c) => {
    const op = field(await form(c), 'op');
    const id = c.req.param('id');
    return act(c, '/ui/agents', async () => {
      if (op !== 'wake' && op !== 'sleep' && op !== 'snapshot') throw new Error('unknown action');
      const r = await o.service.agentAction(id, op as AgentAction, c.get('session').operator);
      return `${r.id}: ${r.action} done (${r.detail})`;
    });
  });

  ui.get('/ui/conversations', async (c) => {
    const profile = queryText(c.req.query('profile'));
    return c.html(conversationsPage(page(c, 'conversations'), await o.service.conversations({ profile, limit: 200 }), profile));
  });
  ui.get('/ui/conversations/view', async (c) => {
    const id = queryText(c.req.query('id'), 2000);
    if (!id) return c.redirect('/ui/conversations', 303);
    return c.html(transcriptPage(page(c, 'conversations'), await o.service.conversation(id)));
  });

  ui.get('/ui/approvals', async (c) => c.html(approvalsPage(page(c, 'approvals'), await o.service.approvals())));
  ui.post('/ui/approvals/:id', async (c) => {
    const decision = field(await form(c), 'decision');
    const id = c.req.param('id');
    return act(c, '/ui/approvals', async () => {
      if (decision !== 'approved' && decision !== 'denied') throw new Error('unknown decision');
      await o.service.answerApproval(id, decision, c.get('session').operator);
      return `${id}: ${decision}`;
    });
  });

  ui.get('/ui/pins', async (c) => c.html(pinsPage(page(c, 'pins'), await o.service.pins())));
  ui.post('/ui/pins/repin', async (c) => {
    const f = await form(c);
    const [profile, tool, expect] = [field(f, 'profile'), field(f, 'tool'), field(f, 'expect')];
    return act(c, '/ui/pins', async () => {
      if (!profile || !tool) throw new Error('profile and tool are required');
      const pin = await o.service.repin(profile, tool, c.get('session').operator, expect || undefined);
      return `${pin.profile} ${pin.tool}: re-pinned to ${pin.hash.slice(0, 12)}`;
    });
  });

  const filter = (c: Context<Env>) => ({
    profile: queryText(c.req.query('profile')),
    action: queryText(c.req.query('action'), 64),
    decision: queryText(c.req.query('decision'), 64),
    subject: queryText(c.req.query('subject'), 300),
  });
  ui.get('/ui/audit', async (c) => {
    const f = filter(c);
    const [rows, verify] = await Promise.all([o.service.audit({ ...f, before: queryInt(c.req.query('before')), limit: 100 }), o.service.verify()]);
    return c.html(auditPage(page(c, 'audit'), { title: 'Audit trail', base: '/ui/audit', rows, filter: f, verify }));
  });
  ui.get('/ui/egress', async (c) => {
    const f = { ...filter(c), action: undefined };
    const rows = await o.service.audit({ ...f, action: 'egress.connect', before: queryInt(c.req.query('before')), limit: 100 });
    return c.html(auditPage(page(c, 'egress'), { title: 'Egress log', base: '/ui/egress', rows, filter: f, fixedAction: 'egress.connect' }));
  });

  ui.get('/ui/feedback', async (c) => {
    const profile = queryText(c.req.query('profile'));
    return c.html(feedbackPage(page(c, 'feedback'), await o.service.feedback({ ...(profile ? { profile } : {}), limit: 200 }), profile));
  });

  ui.onError((err, c) => {
    if (isAgentVmError(err) && err.status < 500) return c.json({ error: err.code, message: err.message }, err.status as 400);
    log.error({ err: describeError(err).split('\n')[0] }, 'dashboard page failed');
    return c.json({ error: 'internal', message: 'internal error; see the server log' }, 500);
  });
  return ui;
}
