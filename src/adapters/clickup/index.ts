/**
 * The ClickUp channel adapter: `POST /clickup/webhook` turns a signed `taskCommentPosted`
 * delivery into an `InboundEvent` (the conversation is the task), and replies go back as task
 * comments with the agent's files attached to the task.
 *
 * - Signatures fail closed: no `X-Signature`, no secret for the webhook, or a mismatch → 401
 *   before anything else is read or fetched.
 * - Comments by agent-vm's own token user are dropped (`GET /user`, once), so replies never loop.
 * - The router decides who answers from the address and the trigger in the text; this adapter
 *   does not know profiles. An unbound comment is just a comment: acknowledged, no reply.
 * - Replies are idempotent per turn within the process: a retried `send` skips files already
 *   attached and never posts the comment twice.
 *
 * Deliberately left out: progress comments (ClickUp comments cannot be edited cheaply, so a
 * stream of "working..." comments would bury the task; progress is logged at debug), events
 * other than `taskCommentPosted`, threaded replies, and rich-text formatting.
 */
import { Hono } from 'hono';
import { DEFAULT_MAX_BODY_BYTES, limitBody } from '../../body-limit.js';
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printable } from '../../text.js';
import type {
  ChannelAdapter,
  HeldBackFile,
  InboundEvent,
  Intake,
  OutboundFile,
  OutboundMessage,
  TurnContext,
} from '../types.js';
import { createClickUpClient, type ClickUpClient, type ClickUpWebhook } from './client.js';
import {
  COMMENT_EVENT,
  decodeConversation,
  encodeConversation,
  parseEnvelope,
  postedComments,
  renderReply,
  taskAddress,
  taskPreamble,
  type PostedComment,
} from './parse.js';
import { verifyClickUpSignature } from './verify.js';

export { signClickUpBody, verifyClickUpSignature } from './verify.js';
export { createClickUpClient, type ClickUpClient } from './client.js';
export { decodeConversation, encodeConversation } from './parse.js';

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
  intake: Intake;
  logger: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Largest webhook body accepted; ClickUp deliveries are a few KiB. */
  maxBodyBytes?: number;
}

export type ClickUpAdapter = ChannelAdapter & { readonly platform: 'clickup'; readonly routes: Hono; close(): Promise<void> };

const MAX_REMEMBERED_REPLIES = 1_000;

interface ReplyProgress {
  /** Indexes of `files` already attached to the task. */
  attached: Set<number>;
  /** Files ClickUp refused for good (not retryable), by index. */
  refused: Map<number, HeldBackFile>;
  commented: boolean;
}

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
  const replies = new Map<string, ReplyProgress>();
  const background = new Set<Promise<void>>();
  let selfId: Promise<string> | undefined;
  let closed = false;
  let closing: Promise<void> | undefined;

  /** agent-vm's own ClickUp user: fetched once; a failed lookup is retried on the next delivery. */
  function ownUserId(): Promise<string> {
    if (!selfId) {
      const p = client.getUser().then((u) => String(u.id));
      selfId = p;
      p.catch(() => {
        if (selfId === p) selfId = undefined;
      });
    }
    return selfId;
  }

  function inBackground(what: string, task: () => Promise<unknown>): void {
    const p = task()
      .then(() => undefined)
      .catch((err: unknown) => log.warn({ what, err: describeError(err) }, 'clickup background task failed'))
      .finally(() => background.delete(p));
    background.add(p);
  }

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

  async function handleComment(comment: PostedComment, receivedAt: string): Promise<void> {
    const eventId = `clickup:${comment.historyId}`;
    if (comment.user.id === (await ownUserId())) {
      log.debug({ eventId }, 'ignoring a comment agent-vm posted');
      return;
    }
    let task;
    try {
      task = await client.getTask(comment.taskId);
    } catch (err) {
      if (isAgentVmError(err) && err.retryable) throw err;
      // The task is gone or out of the token's reach: nothing can be answered there.
      log.warn({ eventId, taskId: comment.taskId, err: describeError(err) }, 'clickup task not readable; comment dropped');
      return;
    }
    const address = taskAddress(task);
    if (!address) {
      log.warn({ eventId, taskId: comment.taskId }, 'clickup task has no team id; comment dropped');
      return;
    }
    const event: InboundEvent = {
      id: eventId,
      platform: 'clickup',
      address,
      conversation: encodeConversation(comment.taskId),
      user: comment.user,
      text: comment.text,
      ...(comment.attachments.length > 0 ? { attachments: comment.attachments } : {}),
      receivedAt,
    };
    const result = await opts.intake.accept(event);
    log.info({ eventId, taskId: comment.taskId, status: result.status }, 'clickup comment taken in');
    if (result.status === 'rejected' && result.reason !== 'unbound') {
      // Ambiguous or invalid bindings are the admin's problem, but the person who asked must hear
      // why nobody answers. Posted after the ack: a rate-limit wait must not hold the delivery.
      inBackground('reject notice', () => client.postComment(comment.taskId, result.message));
    }
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
    const receivedAt = new Date(now()).toISOString();
    for (const comment of postedComments(env)) await handleComment(comment, receivedAt);
    return c.json({ ok: true });
  });

  function taskOf(conversation: string): string {
    const taskId = decodeConversation(conversation);
    if (taskId === undefined) {
      throw new AgentVmError('clickup_bad_conversation', 'not a ClickUp conversation', { status: 400 });
    }
    return taskId;
  }

  function assertOpen(): void {
    if (closed) throw new AgentVmError('adapter_closed', 'the ClickUp adapter is closed', { status: 503, retryable: true });
  }

  async function sendReply(taskId: string, msg: Extract<OutboundMessage, { kind: 'reply' }>): Promise<void> {
    let progress = replies.get(msg.eventId);
    if (!progress) {
      progress = { attached: new Set(), refused: new Map(), commented: false };
      replies.set(msg.eventId, progress);
      if (replies.size > MAX_REMEMBERED_REPLIES) replies.delete(replies.keys().next().value as string);
    }
    if (progress.commented) return;
    for (const [i, file] of msg.files.entries()) {
      if (progress.attached.has(i) || progress.refused.has(i)) continue;
      try {
        // Agent-chosen: shown as the attachment's name, so no invisible or reordering characters.
        await client.uploadAttachment(taskId, { name: printable(file.name, 255), data: file.data });
        progress.attached.add(i);
      } catch (err) {
        // Transient: the caller retries the send, and files already attached are skipped then.
        if (isAgentVmError(err) && err.retryable) throw err;
        log.warn({ eventId: msg.eventId, taskId, err: describeError(err) }, 'clickup refused an attachment');
        progress.refused.set(i, { name: file.name, reason: 'ClickUp refused the upload' });
      }
    }
    const attached = msg.files.filter((_, i) => progress.attached.has(i)).map((f) => f.name);
    const heldBack = [...msg.heldBack, ...progress.refused.values()];
    await client.postComment(taskId, renderReply(msg.text, attached, heldBack));
    progress.commented = true;
    log.info({ eventId: msg.eventId, taskId, files: attached.length, heldBack: heldBack.length }, 'clickup reply posted');
  }

  return {
    platform: 'clickup',
    routes,

    async send(msg) {
      assertOpen();
      const taskId = taskOf(msg.conversation);
      // ClickUp events carry no replyTo: one here was made by another adapter.
      if (msg.replyTo !== undefined) throw new AgentVmError('clickup_bad_conversation', 'a ClickUp message has no replyTo; this one was addressed by another adapter', { status: 400 });
      switch (msg.kind) {
        case 'progress':
        case 'partial':
          log.debug({ eventId: msg.eventId, taskId }, 'clickup progress not posted');
          return;
        case 'notice':
          await client.postComment(taskId, msg.text);
          log.info({ eventId: msg.eventId, taskId }, 'clickup notice posted');
          return;
        case 'reply':
          await sendReply(taskId, msg);
          return;
      }
    },

    async fetchContext(event, limits): Promise<TurnContext> {
      assertOpen();
      const taskId = taskOf(event.conversation);
      let preamble: string | undefined;
      try {
        preamble = taskPreamble(await client.getTask(taskId));
      } catch (err) {
        if (isAgentVmError(err) && err.retryable) throw err;
        log.warn({ eventId: event.id, taskId, err: describeError(err) }, 'clickup task not readable; no task context');
      }
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
      closing ??= Promise.allSettled([...background]).then(() => undefined);
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
