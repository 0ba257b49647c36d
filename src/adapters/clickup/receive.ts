/**
 * Taking ClickUp comments in, acknowledgement first. A delivery is verified, each comment it
 * carries is held by the intake (stored under its history item id), and ClickUp gets its 200
 * within milliseconds; only then is the comment resolved with the API: agent-vm's own user
 * (`GET /user`, once) and the task's address (`GET /task`, cached), and routed. ClickUp counts
 * an answer over 7 s as a failure and suspends a webhook after 100, and a rate-limited
 * `GET /task` waits out `X-RateLimit-Reset`: that wait now happens after the acknowledgement.
 *
 * A redelivery of a held (or routed, or dropped) comment is a duplicate at `hold`: no API call.
 * A resolution that fails transiently is tried again with backoff; what is still held at a
 * restart is resolved by `resume()`.
 */
import { describeError, isAgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { Address, HeldEvent, HoldingIntake, IntakeResult } from '../types.js';
import type { ClickUpClient } from './client.js';
import { decodeReplyTo, encodeConversation, encodeReplyTo, taskAddress, type PostedComment } from './parse.js';

/** How long a task's address is trusted: tasks move between lists rarely. */
const TASK_TTL_MS = 5 * 60_000;
const MAX_CACHED_TASKS = 2000;
/** Backoff between resolution attempts of one comment (then it waits for `resume()`). */
const RETRY_DELAYS_MS = [2_000, 10_000, 60_000];

export interface Receiver {
  /** Holds the comments of one verified delivery; resolves when each is stored (or known). */
  take(comments: PostedComment[], receivedAt: string): Promise<void>;
  /** Resolves every comment still held (after a restart). */
  resume(): Promise<void>;
  /** Agent-vm's own ClickUp user id, looked up once (and by the credential check). */
  ownUserId(): Promise<string>;
  /** Remembers the own user id learned elsewhere (the credential check). */
  knowOwnUser(id: string): void;
  /** Waits for resolutions under way (tests, shutdown). */
  idle(): Promise<void>;
  close(): void;
}

export function createReceiver(deps: {
  client: ClickUpClient;
  intake: HoldingIntake;
  logger: Logger;
  now: () => number;
  /** What to do with a routed comment's verdict (post a rejection, start the progress timer). */
  routed(event: { id: string; conversation: string }, result: IntakeResult): void;
}): Receiver {
  const log = deps.logger;
  const tasks = new Map<string, { at: number; address: Promise<Address | undefined> }>();
  const running = new Set<Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();
  let self: string | undefined;
  let selfLookup: Promise<string> | undefined;
  let closed = false;

  function ownUserId(): Promise<string> {
    if (self) return Promise.resolve(self);
    if (!selfLookup) {
      const p = deps.client.getUser().then((u) => (self = String(u.id)));
      selfLookup = p;
      p.catch(() => {
        if (selfLookup === p) selfLookup = undefined;
      });
    }
    return selfLookup;
  }

  /** The task's address, cached (and shared by concurrent lookups); undefined when it has none. */
  function addressOf(taskId: string): Promise<Address | undefined> {
    const hit = tasks.get(taskId);
    if (hit && deps.now() - hit.at < TASK_TTL_MS) return hit.address;
    const address = deps.client.getTask(taskId).then(taskAddress);
    const entry = { at: deps.now(), address };
    tasks.set(taskId, entry);
    if (tasks.size > MAX_CACHED_TASKS) tasks.delete(tasks.keys().next().value!);
    address.catch(() => {
      if (tasks.get(taskId) === entry) tasks.delete(taskId);
    });
    return address;
  }

  async function resolve(held: HeldEvent, attempt: number): Promise<void> {
    if (closed) return;
    const taskId = held.conversation.slice('clickup:'.length);
    try {
      if (held.user.id === (await ownUserId())) {
        await deps.intake.drop(held.id, 'a comment agent-vm posted');
        return;
      }
      let address: Address | undefined;
      try {
        address = await addressOf(taskId);
      } catch (err) {
        if (isAgentVmError(err) && err.retryable) throw err;
        // The task is gone or out of the token's reach: nothing can be answered there.
        log.warn({ eventId: held.id, taskId, err: describeError(err) }, 'clickup task not readable; comment dropped');
        await deps.intake.drop(held.id, `task not readable: ${describeError(err)}`);
        return;
      }
      if (!address) {
        log.warn({ eventId: held.id, taskId }, 'clickup task has no team id; comment dropped');
        await deps.intake.drop(held.id, 'task has no team id');
        return;
      }
      const result = await deps.intake.route(held.id, address);
      log.info({ eventId: held.id, taskId, status: result.status }, 'clickup comment taken in');
      deps.routed({ id: held.id, conversation: held.conversation }, result);
    } catch (err) {
      const delay = RETRY_DELAYS_MS[attempt];
      log.warn({ eventId: held.id, attempt: attempt + 1, err: describeError(err), retryInMs: delay }, 'clickup comment not resolved yet; it stays held');
      if (delay === undefined || closed) return;
      const t = setTimeout(() => {
        timers.delete(t);
        track(resolve(held, attempt + 1));
      }, delay);
      t.unref();
      timers.add(t);
    }
  }

  function track(p: Promise<void>): void {
    const q = p.catch((err: unknown) => log.error({ err: describeError(err) }, 'clickup: resolving a comment failed')).finally(() => running.delete(q));
    running.add(q);
  }

  return {
    async take(comments, receivedAt) {
      for (const c of comments) {
        // Known to be our own: not even stored. (Unknown yet: stored, and dropped once known.)
        if (self !== undefined && c.user.id === self) continue;
        const held: HeldEvent = {
          id: `clickup:${c.historyId}`,
          platform: 'clickup',
          conversation: encodeConversation(c.taskId),
          ...(c.commentId !== undefined && decodeReplyTo(encodeReplyTo(c.commentId, c.date)) ? { replyTo: encodeReplyTo(c.commentId, c.date) } : {}),
          user: c.user,
          text: c.text,
          ...(c.attachments.length > 0 ? { attachments: c.attachments } : {}),
          receivedAt,
        };
        const r = await deps.intake.hold(held);
        if (r.status === 'held') track(resolve(held, 0));
      }
    },
    async resume() {
      const held = await deps.intake.held('clickup');
      if (held.length > 0) log.info({ held: held.length }, 'clickup: resolving comments held before a restart');
      for (const h of held) track(resolve(h, 0));
    },
    ownUserId,
    knowOwnUser(id) {
      self = id;
    },
    async idle() {
      while (running.size > 0) await Promise.allSettled([...running]);
    },
    close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
