/**
 * The ClickUp channel adapter: `POST /clickup/webhook` turns a signed `taskCommentPosted`
 * delivery into held events (receive.ts: stored, acknowledged, then resolved to their task's
 * address and routed; the conversation is the task), and replies go back as task comments with
 * the agent's files attached to the task (reply.ts).
 *
 * - Signatures fail closed: no `X-Signature`, no secret for the webhook, or a mismatch → 401
 *   before anything else is read or fetched.
 * - Acknowledgement first: no ClickUp API call happens before the 200 (ClickUp counts an answer
 *   over 7 s as a failure); a redelivery of a stored history item is a no-op without API calls.
 * - Comments by agent-vm's own token user are dropped (`GET /user`, once), so replies never loop.
 * - The router decides who answers from the address and the trigger in the text; this adapter
 *   does not know profiles. An unbound comment is just a comment: acknowledged, no reply.
 * - A turn's context is the task (name, description) and, the first time, its earlier comments;
 *   later turns get the comments since (context.ts).
 *
 * Deliberately left out: streaming (one comment at the end; a progress comment only for long
 * turns), events other than `taskCommentPosted`, threaded replies, and rich-text formatting.
 */
import { Hono } from 'hono';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../../body-limit.js';
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { failureReporter } from '../delivery.js';
import type {
  ChannelAdapter,
  CredentialCheck,
  DeliveryFailure,
  HeldBackFile,
  HoldingIntake,
  OutboundFile,
  ThreadContextLimits,
  ThreadCursors,
  ThreadOpener,
  TurnContext,
} from '../types.js';
import { createClickUpClient, type ClickUpClient, type ClickUpWebhook } from './client.js';
import { createTaskThread } from './context.js';
import { createClickUpOpener } from './open.js';
import { COMMENT_EVENT, decodeConversation, parseEnvelope, postedComments, taskPreamble } from './parse.js';
import { createReceiver, type Receiver } from './receive.js';
import { createReplier } from './reply.js';
import { verifyClickUpSignature } from './verify.js';

export { signClickUpBody, verifyClickUpSignature } from './verify.js';
export { createClickUpClient, type ClickUpClient } from './client.js';
export { decodeConversation, encodeConversation, encodeReplyTo } from './parse.js';

export interface ClickUpAdapterOptions {
  /** The secret of a webhook created outside agent-vm (`CLICKUP_WEBHOOK_SECRET`). */
  webhookSecret?: string;
  /**
   * Secrets of webhooks agent-vm registered, by webhook id. Consulted first; when it knows no
   * secret for the delivery's `webhook_id`, `webhookSecret` is used; with neither → 401.
   */
  secretFor?: (webhookId: string) => Promise<string | undefined>;
  token: string;
  apiUrl: string;
  /** Holds deliveries before their task is looked up (the gateway's intake does). */
  intake: HoldingIntake;
  logger: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Largest webhook body accepted; ClickUp deliveries are a few KiB. */
  maxBodyBytes?: number;
  /** A turn still running this long after it was taken in gets one progress comment. Default 60 s; 0: never. */
  progressAfterMs?: number;
  /** Largest file attached; a larger one is named in the reply instead. Default 1 GiB. */
  maxUploadBytes?: number;
  /** Where thread cursors live; without it no earlier comments are fetched. */
  threads?: ThreadCursors;
  /** How many earlier comments a turn gets. Default 50 comments, 20,000 characters. */
  threadLimits?: ThreadContextLimits;
  /** Every delivery failure (see `DeliveryFailure`), e.g. for metrics. */
  onDeliveryFailure?: (f: DeliveryFailure) => void;
}

export type ClickUpAdapter = ChannelAdapter & ThreadOpener & {
  readonly platform: 'clickup';
  readonly routes: Hono;
  start(): Promise<void>;
  checkCredentials(): Promise<CredentialCheck>;
  /** Resolves when every comment taken in so far is routed or dropped (tests, shutdown). */
  idle(): Promise<void>;
  close(): Promise<void>;
};

/** ClickUp's largest attachment (plans differ; storage quotas may refuse less). */
export const CLICKUP_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024;

export function createClickUpAdapter(opts: ClickUpAdapterOptions): ClickUpAdapter {
  const log = opts.logger.child({ adapter: 'clickup' });
  const now = opts.now ?? Date.now;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const client = createClickUpClient({
    apiUrl: opts.apiUrl,
    token: opts.token,
    logger: log,
    now,
    ...(opts.sleep ? { sleep: opts.sleep } : {}),
  });
  const report = failureReporter('clickup', log, opts.onDeliveryFailure);
  const background = new Set<Promise<void>>();
  let closed = false;
  let closing: Promise<void> | undefined;

  function inBackground(what: string, task: () => Promise<unknown>): void {
    const p = task()
      .then(() => undefined)
      .catch((err: unknown) => log.warn({ what, err: describeError(err) }, 'clickup background task failed'))
      .finally(() => background.delete(p));
    background.add(p);
  }

  const replier = createReplier({
    client,
    logger: log,
    report,
    maxUploadBytes: opts.maxUploadBytes ?? CLICKUP_MAX_UPLOAD_BYTES,
    progressAfterMs: opts.progressAfterMs ?? 60_000,
    now,
  });

  const receiver: Receiver = createReceiver({
    client,
    intake: opts.intake,
    logger: log,
    now,
    routed(event, result) {
      if (result.status === 'accepted') replier.started(event.id, event.conversation);
      if (result.status === 'rejected' && result.reason !== 'unbound') {
        // Ambiguous or invalid bindings are the admin's problem, but the person who asked must
        // hear why nobody answers.
        const taskId = decodeConversation(event.conversation);
        if (taskId) inBackground('reject notice', () => client.postComment(taskId, result.message));
      }
    },
  });

  const openTask = createClickUpOpener({ client, logger: log, report, now });

  const taskThread = createTaskThread({
    client,
    logger: log,
    ...(opts.threads ? { cursors: opts.threads } : {}),
    limits: opts.threadLimits ?? { maxMessages: 50, maxChars: 20_000 },
    ownUserId: () => receiver.ownUserId().catch(() => undefined),
  });

  async function secretForDelivery(webhookId: string | undefined): Promise<string | undefined> {
    if (webhookId !== undefined && opts.secretFor) {
      let secret: string | undefined;
      try {
        secret = await opts.secretFor(webhookId);
      } catch (err) {
        throw new AgentVmError('clickup_secret_lookup_failed', 'could not look up the webhook secret', {
          status: 503,
          retryable: true,
          cause: err,
        });
      }
      if (secret) return secret;
    }
    return opts.webhookSecret || undefined;
  }

  const routes = new Hono();

  const refuse = (message: string) => new AgentVmError('unauthorized', message, { status: 401 });

  // The limit holds before the signature can be checked: nothing past it is read.
  routes.post('/clickup/webhook', limitBody(maxBodyBytes), async (c) => {
    if (closed) throw new AgentVmError('unavailable', 'the ClickUp adapter is shutting down; ClickUp will retry', { status: 503, retryable: true });
    const body = new Uint8Array(await c.req.arrayBuffer());

    const signature = c.req.header('x-signature');
    if (!signature) throw refuse('missing X-Signature');
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(body).toString('utf8'));
    } catch {
      json = undefined;
    }
    // Read before the signature is checked (it picks the secret), so bounded and never trusted further.
    const rawId = (json as { webhook_id?: unknown } | undefined)?.webhook_id;
    const webhookId = typeof rawId === 'string' && rawId.length > 0 && rawId.length <= 200 ? rawId : undefined;
    const secret = await secretForDelivery(webhookId);
    if (!secret) {
      log.warn({ webhookId }, 'clickup delivery for a webhook with no known secret');
      throw refuse('unknown webhook');
    }
    if (!verifyClickUpSignature(body, signature, secret)) {
      log.warn({ webhookId }, 'clickup delivery with a bad signature');
      throw refuse('bad signature');
    }

    const env = parseEnvelope(json);
    if (!env) throw new AgentVmError('bad_request', 'not a ClickUp webhook payload', { status: 400 });
    if (env.event !== COMMENT_EVENT) {
      log.debug({ event: env.event }, 'clickup event ignored');
      return c.json({ ok: true, ignored: env.event });
    }
    // Stored, then acknowledged: everything that needs ClickUp's API happens after the 200.
    await receiver.take(postedComments(env), new Date(now()).toISOString());
    return c.json({ ok: true });
  });

  function assertOpen(): void {
    if (closed) throw new AgentVmError('adapter_closed', 'the ClickUp adapter is closed', { status: 503, retryable: true });
  }

  async function checkCredentials(): Promise<CredentialCheck> {
    // Its own client: a start-up check must not sit out long rate-limit waits.
    const probe = createClickUpClient({ apiUrl: opts.apiUrl, token: opts.token, logger: log, now, maxRateLimitWaits: 0, maxServerRetries: 1, backoffMs: 200, timeoutMs: 10_000, ...(opts.sleep ? { sleep: opts.sleep } : {}) });
    try {
      const user = await probe.getUser();
      receiver.knowOwnUser(String(user.id));
      return { ok: true, platform: 'clickup', identity: typeof user.username === 'string' ? user.username : `user ${String(user.id)}` };
    } catch (err) {
      const transient = !isAgentVmError(err) || err.retryable;
      return { ok: false, platform: 'clickup', setting: 'CLICKUP_TOKEN', reason: transient ? `could not reach ClickUp to check the token (${describeError(err)})` : `ClickUp refused the token (${describeError(err)})`, transient };
    }
  }

  return {
    platform: 'clickup',
    routes,

    async start() {
      assertOpen();
      inBackground('resume held comments', () => receiver.resume());
    },

    send(msg) {
      return replier.send(msg);
    },

    openThread: (target, opener) => {
      assertOpen();
      return openTask(target, opener);
    },

    checkCredentials,

    idle: () => receiver.idle(),

    async fetchContext(event, limits): Promise<TurnContext> {
      assertOpen();
      const taskId = decodeConversation(event.conversation);
      if (taskId === undefined) throw new AgentVmError('clickup_bad_conversation', 'not a ClickUp conversation', { status: 400 });
      let preamble: string | undefined;
      try {
        preamble = taskPreamble(await client.getTask(taskId));
      } catch (err) {
        if (isAgentVmError(err) && err.retryable) throw err;
        log.warn({ eventId: event.id, taskId, err: describeError(err) }, 'clickup task not readable; no task context');
      }
      const thread = await taskThread(event);
      if (thread) preamble = preamble ? `${preamble}\n\n${thread}` : thread;
      const files: OutboundFile[] = [];
      const skipped: HeldBackFile[] = [];
      for (const a of event.attachments ?? []) {
        if (files.length >= limits.maxFiles) {
          skipped.push({ name: a.name, reason: `more than ${limits.maxFiles} attachments` });
          continue;
        }
        if (a.size !== undefined && a.size > limits.maxFileBytes) {
          skipped.push({ name: a.name, reason: `larger than ${limits.maxFileBytes} bytes` });
          continue;
        }
        const r = await client.download(a.ref, limits.maxFileBytes);
        // The name as ClickUp gave it: the sandbox's inbox makes it safe and unique, once, for every platform.
        if (r.status === 'ok') files.push({ name: a.name, data: r.data });
        else if (r.status === 'too_large') skipped.push({ name: a.name, reason: `larger than ${limits.maxFileBytes} bytes` });
        else {
          log.warn({ eventId: event.id, reason: r.reason }, 'clickup attachment not downloaded');
          skipped.push({ name: a.name, reason: 'download failed' });
        }
      }
      return { ...(preamble !== undefined ? { preamble } : {}), files, skipped };
    },

    close() {
      closed = true;
      closing ??= (async () => {
        receiver.close();
        await replier.close();
        await Promise.allSettled([...background]);
      })();
      return closing;
    },
  };
}

export interface RegisterWebhookOptions {
  apiUrl: string;
  token: string;
  /** The workspace (team) id. */
  team: string;
  /** Public URL of agent-vm's `POST /clickup/webhook`. */
  endpoint: string;
  space?: string;
  folder?: string;
  list?: string;
  logger?: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Creates a ClickUp webhook for `taskCommentPosted`, optionally narrowed to one space, folder or
 * list, and returns its id and signing secret. The caller stores the secret (it is shown once)
 * and serves it to the adapter through `secretFor`.
 */
export async function registerWebhook(o: RegisterWebhookOptions): Promise<ClickUpWebhook> {
  const client: ClickUpClient = createClickUpClient({
    apiUrl: o.apiUrl,
    token: o.token,
    ...(o.logger ? { logger: o.logger } : {}),
    ...(o.now ? { now: o.now } : {}),
    ...(o.sleep ? { sleep: o.sleep } : {}),
  });
  return client.createWebhook(o.team, {
    endpoint: o.endpoint,
    events: [COMMENT_EVENT],
    ...(o.space !== undefined ? { space: o.space } : {}),
    ...(o.folder !== undefined ? { folder: o.folder } : {}),
    ...(o.list !== undefined ? { list: o.list } : {}),
  });
}
