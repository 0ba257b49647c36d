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
import type { z } from 'zod';
import { AgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { ChannelAdapter, InboundEvent, Intake, ThreadOpener, TurnOutcome, TurnWatcher } from '../types.js';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../../body-limit.js';
import { MESSAGES_PATH, NDJSON, messageAnswer, messageRequestSchema, outcomeToWire, type MessageHead, type MessageRequest, type StreamLine } from './wire.js';

export * from './wire.js';
/** The request body of `POST /v1/messages` (wire.ts), under the name the CLI and tests know. */
export const localMessageSchema = messageRequestSchema;
export type LocalMessage = MessageRequest;

const LOCAL_CONVERSATION = /^local:[^:\s]{1,64}:[A-Za-z0-9._-]{1,128}$/;

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

function tokenMatches(given: string | undefined, expected: string): boolean {
  if (!given) return false;
  // Hash both so the comparison is constant-time regardless of length.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function createLocalAdapter(o: { intake: Intake; watcher: TurnWatcher; apiToken?: string; logger: Logger }): ChannelAdapter & ThreadOpener {
  const routes = new Hono();
  // Only its own route: the operator API (approvals, pins, releases…) lives in src/operator with
  // its own tokens, and a guard on all of /v1/* would answer for paths this adapter does not own.
  routes.use(MESSAGES_PATH, async (c, next) => {
    if (!o.apiToken) {
      throw new AgentVmError('api_disabled', 'the local HTTP API is disabled; set AGENTVM_API_TOKEN to enable it', { status: 403 });
    }
    const auth = c.req.header('authorization');
    const bearer = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
    if (!tokenMatches(bearer, o.apiToken)) {
      // Set before throwing: the one error renderer answers on this same context.
      c.header('WWW-Authenticate', 'Bearer');
      throw new AgentVmError('unauthorized', 'missing or wrong bearer token', { status: 401 });
    }
    await next();
  });
  routes.post(MESSAGES_PATH, limitBody(DEFAULT_MAX_BODY_BYTES), async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      throw new AgentVmError('bad_request', 'the body must be JSON', { status: 400 });
    }
    const parsed = messageRequestSchema.safeParse(body);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
      throw new AgentVmError('bad_request', problems.join('; '), { status: 400 });
    }
    const event = localEvent(parsed.data, 'api');
    const result = await o.intake.accept(event);
    if (result.status === 'rejected') {
      throw new AgentVmError(result.reason, result.message, { status: result.reason === 'profile_invalid' ? 409 : 404 });
    }
    // A resent id answers with the first sending's turn: its conversation, not the new random one
    // (nor one the resend names).
    const conversation = result.status === 'duplicate' && result.conversation ? result.conversation : event.conversation;
    const head: MessageHead = { eventId: event.id, conversation, profile: result.profile, duplicate: result.status === 'duplicate' };
    const ac = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => ac.abort());

    if ((c.req.header('accept') ?? '').includes(NDJSON)) {
      c.header('Content-Type', NDJSON);
      const line = (l: StreamLine) => `${JSON.stringify(l)}\n`;
      return stream(c, async (s) => {
        s.onAbort(() => ac.abort());
        await s.write(line({ type: 'accepted', ...head }));
        for await (const out of o.watcher.watch(event.id, ac.signal, { justAccepted: result.status === 'accepted' })) await s.write(line(outcomeToWire(out)));
      });
    }
    const progress: string[] = [];
    let final: TurnOutcome | undefined;
    for await (const out of o.watcher.watch(event.id, ac.signal, { justAccepted: result.status === 'accepted' })) {
      if (out.kind === 'progress') progress.push(out.text);
      else final = out;
    }
    if (!final) throw new AgentVmError('aborted', 'the request ended before the turn did', { status: 499 });
    return c.json(messageAnswer(head, progress, final));
  });

  return {
    platform: 'local',
    // A scheduled run's conversation: nothing to post (nobody waits on the local channel); its
    // reply is in the transcript, `agent-vm transcript local:<profile>:<thread>`.
    async openThread(target) {
      const id = target.thread ?? target.idHint;
      if (target.address.platform !== 'local' || !/^[A-Za-z0-9._-]{1,128}$/.test(id)) {
        throw new AgentVmError('local_bad_thread', 'a local thread needs a local address and an id of letters, digits, ".", "_" or "-"', { status: 400 });
      }
      return { conversation: localConversation(target.address.profile, id) };
    },
    routes,
    // The caller is waiting on the watcher; there is nothing to push. What another adapter
    // addressed is still refused, as every adapter does, rather than silently dropped.
    async send(msg) {
      if (!LOCAL_CONVERSATION.test(msg.conversation) || msg.replyTo !== undefined) {
        throw new AgentVmError('local_bad_conversation', 'not a local conversation (local:<profile>:<id>, no replyTo)', { status: 400 });
      }
    },
  };
}
