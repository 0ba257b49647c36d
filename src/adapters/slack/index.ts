/**
 * The Slack channel adapter: Events API over HTTP (`POST /slack/events`) and, with an app-level
 * token, Socket Mode; both feed verify → parse → `Intake`. Replies, progress and files go back to
 * the thread through the Web API at `apiUrl`.
 *
 * Acknowledgement rule: a verified request is answered within Slack's 3 seconds. It gets 200 once
 * the event is stored (accepted, duplicate, rejected or ignored) and 5xx only when intake failed
 * or did not answer in time, i.e. when the event may not be stored, so Slack's retry brings it back
 * (intake dedupes by event id, so a retry never runs a second turn). No Slack API call happens
 * before the acknowledgement (the bot's own user id comes from the start-up credential check or
 * the envelope), so its timing never depends on Slack's API; "is thinking…" and 👀 follow it.
 *
 * Answers stream into the thread (live.ts), reactions show a request's state (reactions.ts),
 * feedback buttons rate answers (feedback.ts), and a turn in an existing thread reads the thread
 * (context.ts).
 *
 * Interactivity: approval and feedback buttons (approvals.ts, feedback.ts). Slack posts button presses form-encoded to the
 * Interactivity Request URL; `POST /slack/interactivity` takes them, and so does `/slack/events`
 * (one URL can serve both), with the same signature check. Socket Mode delivers them as
 * `interactive` envelopes.
 *
 * Deliberately left out: slash commands, modals and OAuth installs for many workspaces; one bot
 * token serves one workspace.
 */
import { Hono, type Context } from 'hono';
import type { RetryOptions } from '@slack/web-api';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../../body-limit.js';
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { createIngressGate, createLane, failureReporter } from '../delivery.js';
import type {
  ApprovalDesk, ChannelAdapter, CredentialCheck, ThreadOpener, DeliveryFailure, FeedbackSink, InboundEvent, Intake, IntakeResult, OutboundFile,
  ThreadContextLimits, ThreadCursors, TurnContext,
} from '../types.js';
import { createSlackApi, failureCode, slackErrorCode } from './api.js';
import { createSlackApprovals } from './approvals.js';
import { createThreadContext } from './context.js';
import { createSlackFeedback } from './feedback.js';
import { createLive } from './live.js';
import { createSlackOpener } from './open.js';
import { DEFAULT_MAX_MESSAGE_CHARS } from './mrkdwn.js';
import { botUserIdFromEnvelope, parseEnvelope, readEnvelope, type SlackEnvelope } from './parse.js';
import { createReactions } from './reactions.js';
import { createSender } from './send.js';
import { startSocketMode, type SocketModeHandle } from './socket.js';
import { verifySlackSignature } from './verify.js';

export { signSlackRequest, verifySlackSignature } from './verify.js';
export { decodeConversation, encodeConversation, encodeReplyTo } from './parse.js';
export { FEEDBACK_ACTION } from './feedback.js';
export { markdownToMrkdwn, splitMessage } from './mrkdwn.js';

export interface SlackAdapterOptions {
  /** Empty only for Socket Mode-only setups: then `POST /slack/events` refuses every request. */
  signingSecret: string;
  botToken: string;
  /** `xapp-…`: when set, `start()` opens Socket Mode. */
  appToken?: string;
  /** Web API base, e.g. `https://slack.com/api/`. */
  apiUrl: string;
  intake: Intake;
  logger: Logger;
  /** Answers approval buttons. Without it a press is told that approvals are not answered here. */
  approvals?: ApprovalDesk;
  /** Milliseconds since the epoch. Used for signature windows and progress throttling. */
  now?: () => number;
  /** The bot's user id; otherwise taken from the event envelope or, failing that, `auth.test`. */
  botUserId?: string;
  /** At most one progress API call per conversation per this many ms. Default 1500. */
  progressIntervalMs?: number;
  /** Longest single message; longer replies are split. Default 3900. */
  maxMessageChars?: number;
  /** How long the HTTP ack waits for intake before answering 503. Default 2500 (Slack allows 3000). */
  ackDeadlineMs?: number;
  /** WebClient retry policy (429 Retry-After is always honoured). */
  retryConfig?: RetryOptions;
  /** At most one edit of an answer shown by post-then-edit (where streaming is refused) per this many ms. Default 1000. */
  editIntervalMs?: number;
  /** Largest file uploaded; a larger one is named in a note instead. Default 1 GiB (Slack's limit). */
  maxUploadBytes?: number;
  /** Where thread cursors live; without it no thread context is fetched. */
  threads?: ThreadCursors;
  /** How much thread history a turn gets. Default 50 messages, 20,000 characters. */
  threadLimits?: ThreadContextLimits;
  /** Stores 👍/👎 presses; with it, answers carry feedback buttons. */
  feedback?: FeedbackSink;
  /** Every delivery failure (see `DeliveryFailure`), e.g. for metrics. */
  onDeliveryFailure?: (f: DeliveryFailure) => void;
}

export const DEFAULT_THREAD_LIMITS: ThreadContextLimits = { maxMessages: 50, maxChars: 20_000 };
/** Slack's per-file upload limit. */
export const SLACK_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024;
/** auth.test answers that mean the token itself is wrong (not that Slack is unreachable). */
const BAD_TOKEN = new Set(['invalid_auth', 'not_authed', 'account_inactive', 'token_revoked', 'token_expired', 'not_allowed_token_type', 'team_disabled']);

/** Every optional part of the seam is present, and it opens threads for scheduled runs. */
export type SlackAdapter = Required<ChannelAdapter> & ThreadOpener;

const TIMEOUT = Symbol('timeout');

export function createSlackAdapter(opts: SlackAdapterOptions): SlackAdapter {
  const now = opts.now ?? Date.now;
  const logger = opts.logger.child({ adapter: 'slack' });
  const ackDeadlineMs = opts.ackDeadlineMs ?? 2500;
  const api = createSlackApi({
    botToken: opts.botToken,
    apiUrl: opts.apiUrl,
    logger,
    ...(opts.retryConfig ? { retryConfig: opts.retryConfig } : {}),
  });
  const report = failureReporter('slack', logger, opts.onDeliveryFailure);
  const maxMessageChars = opts.maxMessageChars ?? DEFAULT_MAX_MESSAGE_CHARS;
  const sender = createSender({
    api,
    logger,
    now,
    progressIntervalMs: opts.progressIntervalMs ?? 1500,
    maxMessageChars,
    maxUploadBytes: opts.maxUploadBytes ?? SLACK_MAX_UPLOAD_BYTES,
    live: createLive({ api, logger, now, editIntervalMs: opts.editIntervalMs ?? 1000, maxMessageChars, report }),
    reactions: createReactions({ api, logger, report }),
    report,
    feedback: opts.feedback !== undefined,
  });
  const feedback = createSlackFeedback({ api, logger, ...(opts.feedback ? { sink: opts.feedback } : {}) });

  const approvals = createSlackApprovals({ api, logger, now, ...(opts.approvals ? { desk: opts.approvals } : {}) });

  const background = new Set<Promise<void>>();
  function later(what: string, fn: () => Promise<void>): void {
    const p: Promise<void> = fn()
      .catch((err: unknown) => logger.error({ err: describeError(err) }, `slack: ${what} failed`))
      .finally(() => background.delete(p));
    background.add(p);
  }

  // Learned from options, the credential check (auth.test at start), or an envelope's
  // `authorizations`: never from an API call while a request waits for its acknowledgement.
  let botUserId: string | undefined = opts.botUserId;
  /** The bot token's workspace, from auth.test (the credential check, or the first scheduled post). */
  let botTeamId: string | undefined;
  function botUserIdFor(env: SlackEnvelope): string | undefined {
    botUserId ??= botUserIdFromEnvelope(env);
    return botUserId;
  }

  async function checkCredentials(): Promise<CredentialCheck> {
    try {
      const r = await api.call('auth.test');
      if (typeof r.user_id === 'string') botUserId ??= r.user_id;
      if (typeof r.team_id === 'string') botTeamId ??= r.team_id;
      const who = [typeof r.user === 'string' ? r.user : undefined, typeof r.team === 'string' ? `in ${r.team}` : undefined].filter(Boolean).join(' ');
      return { ok: true, platform: 'slack', identity: who || 'bot token accepted' };
    } catch (err) {
      const code = slackErrorCode(err);
      const bad = code !== undefined && BAD_TOKEN.has(code);
      return { ok: false, platform: 'slack', setting: 'SLACK_BOT_TOKEN', reason: bad ? `Slack refused the bot token (auth.test: ${code})` : `could not reach Slack to check the bot token (${failureCode(err)})`, transient: !bad };
    }
  }

  const openThread = createSlackOpener({
    api,
    logger,
    report,
    team: async () => {
      if (botTeamId === undefined) {
        const r = await api.call('auth.test');
        if (typeof r.team_id === 'string') botTeamId = r.team_id;
      }
      return botTeamId;
    },
  });

  /**
   * "is thinking…" and 👀 wait their turn: four at a time, and only once no webhook has been in
   * progress for a moment (at most a second later), behind the acknowledgements of a burst.
   */
  const ingress = createIngressGate();
  const cosmetic = createLane(4, () => ingress.quiet());

  function followUp(event: InboundEvent, result: IntakeResult, retryNum: number | undefined): void {
    logger.info({ eventId: event.id, status: result.status, ...(retryNum !== undefined ? { retryNum } : {}) }, 'slack: event taken in');
    if (result.status === 'rejected') {
      later('rejection notice', () => sender.postInThread(event.conversation, result.message));
    } else if (result.status === 'accepted') {
      // After the acknowledgement: what the person sees while the turn waits for the agent.
      later('received', () => cosmetic(() => sender.received(event.conversation, event.replyTo, event.id)));
    }
  }

  type Handled =
    | { kind: 'challenge'; challenge: string }
    | { kind: 'stored' }
    | { kind: 'ignored'; reason: string }
    | { kind: 'failed'; reason: string };

  /** The one path both transports share: parse, hand to intake, decide how to acknowledge. */
  async function handleEnvelope(payload: unknown, retryNum: number | undefined): Promise<Handled> {
    const env = readEnvelope(payload);
    if (!env) return { kind: 'ignored', reason: 'not an Events API envelope' };
    const bot = botUserIdFor(env);
    const parsed = parseEnvelope(env, {
      ...(bot ? { botUserId: bot } : {}),
      receivedAt: new Date(now()).toISOString(),
    });
    if (parsed.kind === 'challenge') return parsed;
    if (parsed.kind === 'ignore' || parsed.kind === 'invalid') {
      if (parsed.kind === 'invalid') logger.warn({ reason: parsed.reason }, 'slack: malformed event ignored');
      else logger.debug({ reason: parsed.reason }, 'slack: event ignored');
      return { kind: 'ignored', reason: parsed.reason };
    }
    const event = parsed.event;
    const accepting = opts.intake.accept(event);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<typeof TIMEOUT>((resolve) => {
      timer = setTimeout(() => resolve(TIMEOUT), ackDeadlineMs);
    });
    try {
      const result = await Promise.race([accepting, deadline]);
      if (result === TIMEOUT) {
        logger.warn({ eventId: event.id }, 'slack: intake did not answer in time; letting Slack retry');
        later('late intake', async () => followUp(event, await accepting, retryNum));
        return { kind: 'failed', reason: 'intake timed out' };
      }
      followUp(event, result, retryNum);
      return { kind: 'stored' };
    } catch (err) {
      logger.error({ eventId: event.id, err: describeError(err) }, 'slack: intake failed; Slack will retry');
      return { kind: 'failed', reason: 'intake failed' };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads and verifies a signed Slack request; throws 401 when it is refused. */
  async function verified(c: Context): Promise<string> {
    const body = await c.req.text();
    const verdict = verifySlackSignature({
      signingSecret: opts.signingSecret,
      timestamp: c.req.header('x-slack-request-timestamp'),
      signature: c.req.header('x-slack-signature'),
      body,
      nowMs: now(),
    });
    if (!verdict.ok) {
      logger.warn({ reason: verdict.reason }, 'slack: request refused');
      throw new AgentVmError('slack_signature_invalid', `request refused: ${verdict.reason}`, { status: 401 });
    }
    return body;
  }

  /** A button press: feedback, else an approval (each ignores what is not its own). */
  async function interact(payload: unknown): Promise<void> {
    if (await feedback.interact(payload)) return;
    await approvals.interact(payload);
  }

  /** Interactivity arrives form-encoded as `payload=<json>`; acknowledged at once, handled after. */
  function interaction(c: Context, body: string): Response {
    const raw = new URLSearchParams(body).get('payload');
    let payload: unknown;
    try {
      payload = raw === null ? undefined : JSON.parse(raw);
    } catch {
      payload = undefined;
    }
    if (payload === undefined) throw new AgentVmError('bad_request', 'expected a form-encoded interactivity payload', { status: 400 });
    later('interaction', () => interact(payload));
    return c.body(null, 200);
  }

  // Slack's payloads are a few KiB; the limit holds before the signature can be checked.
  const limit = limitBody(DEFAULT_MAX_BODY_BYTES);
  const routes = new Hono();
  routes.use('/slack/*', async (_c, next) => {
    const leave = ingress.enter();
    try {
      await next();
    } finally {
      leave();
    }
  });
  routes.post('/slack/interactivity', limit, async (c) => interaction(c, await verified(c)));
  routes.post('/slack/events', limit, async (c) => {
    const body = await verified(c);
    if ((c.req.header('content-type') ?? '').includes('application/x-www-form-urlencoded') && body.startsWith('payload=')) {
      return interaction(c, body);
    }
    let payload: unknown;
    try {
      payload = JSON.parse(body);
    } catch {
      // Verified but not JSON (e.g. a slash command sent here): nothing for us, and no retry.
      return c.json({ ok: true, ignored: 'not JSON' });
    }
    const retryHeader = c.req.header('x-slack-retry-num');
    const retryNum = retryHeader !== undefined && /^\d+$/.test(retryHeader) ? Number(retryHeader) : undefined;
    const handled = await handleEnvelope(payload, retryNum);
    switch (handled.kind) {
      case 'challenge':
        return c.json({ challenge: handled.challenge });
      case 'stored':
        return c.json({ ok: true });
      case 'ignored':
        return c.json({ ok: true, ignored: handled.reason });
      case 'failed':
        // 5xx makes Slack retry, which is what an event that may not be stored needs.
        throw new AgentVmError('intake_failed', `${handled.reason}; Slack will retry`, { status: 503, retryable: true });
    }
  });

  let socket: SocketModeHandle | undefined;
  let starting: Promise<void> | undefined;
  let closing: Promise<void> | undefined;

  const threadContext = createThreadContext({
    api,
    logger,
    ...(opts.threads ? { cursors: opts.threads } : {}),
    limits: opts.threadLimits ?? DEFAULT_THREAD_LIMITS,
    botUserId: () => botUserId,
  });

  async function fetchContext(event: InboundEvent, limits: { maxFileBytes: number; maxFiles: number }): Promise<TurnContext> {
    const files: OutboundFile[] = [];
    const skipped: TurnContext['skipped'] = [];
    for (const a of event.platform === 'slack' ? event.attachments ?? [] : []) {
      if (files.length >= limits.maxFiles) {
        skipped.push({ name: a.name, reason: `too many files (limit ${limits.maxFiles})` });
        continue;
      }
      if (a.size !== undefined && a.size > limits.maxFileBytes) {
        skipped.push({ name: a.name, reason: `too large (${a.size} bytes, limit ${limits.maxFileBytes})` });
        continue;
      }
      const got = await api.download(a.ref, { maxBytes: limits.maxFileBytes, ...(a.mimeType ? { mimeType: a.mimeType } : {}) });
      if (!got.ok) {
        logger.info({ eventId: event.id, reason: got.reason }, 'slack: attachment skipped');
        skipped.push({ name: a.name, reason: got.reason });
        continue;
      }
      // The name as Slack gave it: the sandbox's inbox makes it safe and unique, once, for every platform.
      files.push({ name: a.name, data: got.data });
    }
    const preamble = event.platform === 'slack' ? await threadContext(event) : undefined;
    return { ...(preamble ? { preamble } : {}), files, skipped };
  }

  return {
    platform: 'slack',
    routes,
    async start() {
      if (closing) throw new Error('slack adapter is closed');
      // The bot's own id, for mentions anywhere in a message: looked up now, never in an ack.
      if (!botUserId) later('bot user id', async () => void (await checkCredentials()));
      if (!opts.appToken) return; // HTTP only: the Events API posts to routes
      starting ??= startSocketMode({
        appToken: opts.appToken,
        apiUrl: opts.apiUrl,
        logger,
        handle: async (payload, meta) => {
          const handled = await handleEnvelope(payload, meta.retryNum);
          return { ack: handled.kind !== 'failed' };
        },
        interact: (payload) => later('interaction', () => interact(payload)),
      }).then(
        (s) => {
          socket = s;
        },
        (err: unknown) => {
          starting = undefined;
          throw err;
        },
      );
      return starting;
    },
    send: (msg) => sender.send(msg),
    openThread,
    fetchContext,
    askApproval: (prompt) => approvals.ask(prompt),
    approvalSettled: (prompt, outcome) => approvals.settled(prompt, outcome),
    checkCredentials,
    close() {
      closing ??= (async () => {
        await starting?.catch(() => {});
        const steps: Promise<unknown>[] = [];
        if (socket) steps.push(socket.stop());
        // Rejection notices already queued get a moment to land; never hang shutdown on Slack.
        steps.push(Promise.race([Promise.allSettled([...background]), new Promise((r) => setTimeout(r, 5000).unref())]));
        const results = await Promise.allSettled(steps);
        for (const r of results) {
          if (r.status === 'rejected') logger.warn({ err: describeError(r.reason) }, 'slack: close step failed');
        }
      })();
      return closing;
    },
  };
}
