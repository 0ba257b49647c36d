/**
 * The local channel: `agent-vm send` and `POST /v1/messages`. It goes through the same intake,
 * router, queue and unit as every platform; the caller waits for the outcome and gets the reply
 * and the produced files back directly.
 *
 * The HTTP API is closed unless AGENTVM_API_TOKEN is set, and then needs it as a bearer token.
 */
import { randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import type { ApprovalDesk, ChannelAdapter, InboundEvent, Intake, TurnOutcome, TurnWatcher } from '../types.js';

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const localMessageSchema = z.strictObject({
  profile: z.string().min(1).max(64),
  text: z.string().trim().min(1, 'must not be empty').max(100_000),
  conversation: z.string().regex(SAFE_ID, 'must be 1-128 letters, digits, ".", "_" or "-"').optional(),
  channel: z.string().regex(SAFE_ID, 'must be 1-128 letters, digits, ".", "_" or "-"').optional(),
  /** Your own id for this message: sending it again returns the same turn instead of running a new one. */
  id: z.string().regex(SAFE_ID, 'must be 1-128 letters, digits, ".", "_" or "-"').optional(),
  user: z.string().max(128).optional(),
});
export type LocalMessage = z.input<typeof localMessageSchema>;

/** The conversation key of a local conversation, as `agent-vm transcript` takes it. */
export const localConversation = (profile: string, conversation: string) => `local:${profile}:${conversation}`;

export function localEvent(m: z.output<typeof localMessageSchema>, defaultChannel: string): InboundEvent {
  return {
    id: `local:${m.id ?? randomUUID()}`,
    platform: 'local',
    address: { platform: 'local', profile: m.profile, channel: m.channel ?? defaultChannel },
    conversation: localConversation(m.profile, m.conversation ?? randomUUID()),
    user: { id: m.user ?? 'local' },
    text: m.text,
    receivedAt: new Date().toISOString(),
  };
}

/** JSON form of an outcome: files as base64. */
export function outcomeJson(o: TurnOutcome): Record<string, unknown> {
  if (o.kind !== 'reply') return { type: o.kind, text: o.text };
  return {
    type: 'reply',
    text: o.text,
    files: o.files.map((f) => ({ name: f.name, size: f.data.length, base64: f.data.toString('base64') })),
    heldBack: o.heldBack,
  };
}

function tokenMatches(given: string | undefined, expected: string): boolean {
  if (!given) return false;
  // Hash both so the comparison is constant-time regardless of length.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function createLocalAdapter(o: { intake: Intake; watcher: TurnWatcher; apiToken?: string; logger: Logger; approvals?: ApprovalDesk }): ChannelAdapter {
  const routes = new Hono();
  routes.use('/v1/*', async (c, next) => {
    if (!o.apiToken) {
      return c.json({ error: 'api_disabled', message: 'the local HTTP API is disabled; set AGENTVM_API_TOKEN to enable it' }, 403);
    }
    const auth = c.req.header('authorization');
    const bearer = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
    if (!tokenMatches(bearer, o.apiToken)) {
      return c.json({ error: 'unauthorized', message: 'missing or wrong bearer token' }, 401, { 'WWW-Authenticate': 'Bearer' });
    }
    await next();
  });
  routes.get('/v1/approvals', async (c) => c.json({ pending: (await o.approvals?.pending()) ?? [] }));
  routes.post('/v1/approvals/:id', async (c) => {
    const body = (await c.req.json().catch(() => undefined)) as { decision?: unknown } | undefined;
    const decision = body?.decision;
    if (decision !== 'approved' && decision !== 'denied') {
      return c.json({ error: 'bad_request', message: 'body must be {"decision": "approved"} or {"decision": "denied"}' }, 400);
    }
    const result = await o.approvals?.answer(c.req.param('id'), decision);
    if (result?.status !== 'answered') {
      return c.json({ error: 'not_found', message: 'no such pending approval (already answered, expired, or unknown)' }, 404);
    }
    return c.json({ id: c.req.param('id'), decision });
  });
  routes.post('/v1/messages', async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: 'bad_request', message: 'the body must be JSON' }, 400);
    }
    const parsed = localMessageSchema.safeParse(body);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
      return c.json({ error: 'bad_request', message: problems.join('; ') }, 400);
    }
    const event = localEvent(parsed.data, 'api');
    const result = await o.intake.accept(event);
    if (result.status === 'rejected') {
      return c.json({ error: result.reason, message: result.message }, result.reason === 'profile_invalid' ? 409 : 404);
    }
    const head = { eventId: event.id, conversation: event.conversation, profile: result.profile, duplicate: result.status === 'duplicate' };
    const ac = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => ac.abort());

    if ((c.req.header('accept') ?? '').includes('application/x-ndjson')) {
      c.header('Content-Type', 'application/x-ndjson');
      return stream(c, async (s) => {
        s.onAbort(() => ac.abort());
        await s.write(`${JSON.stringify({ type: 'accepted', ...head })}\n`);
        for await (const out of o.watcher.watch(event.id, ac.signal)) await s.write(`${JSON.stringify(outcomeJson(out))}\n`);
      });
    }
    const progress: string[] = [];
    let final: TurnOutcome | undefined;
    for await (const out of o.watcher.watch(event.id, ac.signal)) {
      if (out.kind === 'progress') progress.push(out.text);
      else final = out;
    }
    if (!final) return c.json({ error: 'aborted', message: 'the request ended before the turn did' }, 499 as 400);
    return c.json({ ...head, status: final.kind === 'reply' ? 'replied' : 'failed', progress, ...outcomeJson(final) });
  });

  return {
    platform: 'local',
    routes,
    // The caller is waiting on the watcher; there is nothing to push.
    async send() {},
  };
}
