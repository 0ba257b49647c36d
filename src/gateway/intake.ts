/**
 * The front door every adapter calls: route, store, queue. The event is in the database before
 * `accept` resolves (so before the platform is acknowledged), and an id seen before never
 * queues a second turn. The route decision's audit row is written behind, in batches: the
 * event row (with its profile or rejection) is the durable record, and an ack stays cheap.
 *
 * Group commit: events arriving while a write is in flight are stored together by the next
 * write, in one statement. A burst of 100 webhooks is then a handful of commits instead of 100,
 * which matters most on the embedded PGlite (one connection, queries and file writes on the main
 * thread, shared with every running turn): acknowledgements stop queueing behind each other.
 * Each caller still waits for its own row's commit. A failed batch is retried row by row, so one
 * bad event cannot fail its neighbours.
 *
 * Held deliveries (`hold` → `route`): see `HoldingIntake` in adapters/types.ts.
 */
import type { Address, HeldEvent, HoldingIntake, InboundEvent, IntakeResult, Platform } from '../adapters/types.js';
import { describeError } from '../errors.js';
import type { AuditQueue } from '../governance/audit-queue.js';
import type { Logger } from '../log.js';
import type { BriefEventRow, GatewayRepo, NewEvent } from '../store/gateway.js';
import type { QueueFactory } from './queue.js';
import { stripMention, type Router } from './router.js';

/** Most events in one insert; a burst larger than this is written in several. */
const MAX_BATCH = 250;
/**
 * An event arriving sooner than this many times the last write took after the previous arrival
 * is part of a burst: events come faster than they can be written one by one.
 */
const BURST_FACTOR = 2;
/**
 * How long a write in a burst waits for company at most (measured: bench/ack-burst.ts), and how
 * long after the last arrival: a burst that has stopped arriving is written without waiting out
 * the rest (bench:slack: 8 clients each waiting for their ack paid the whole 5 ms every time).
 */
const GATHER_MS = 5;
const GATHER_QUIET_MS = 1;

type Stored = { row: BriefEventRow; inserted: boolean };

/**
 * Runs `write` for every item, batching the items that arrive while a write is in flight. The
 * first item of a quiet period is written as soon as the event loop has taken in what is already
 * waiting (no timer).
 */
function groupCommit(write: (rows: NewEvent[]) => Promise<Stored[]>, log: Logger): (row: NewEvent) => Promise<Stored> {
  let pending: Array<{ row: NewEvent; resolve: (s: Stored) => void; reject: (e: unknown) => void }> = [];
  let busy = false;
  /** While a burst gathers: when it began and its timer. */
  let gathering: { since: number; timer: NodeJS.Timeout } | undefined;
  let lastArrival = Number.NEGATIVE_INFINITY;
  /** How long the last write took (ms): the pace a burst is measured against. */
  let lastWriteMs = 1;
  async function drain(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending.slice(0, MAX_BATCH);
      pending = pending.slice(batch.length);
      const t0 = performance.now();
      try {
        const stored = await write(batch.map((b) => b.row));
        batch.forEach((b, i) => b.resolve(stored[i]!));
      } catch (err) {
        if (batch.length === 1) {
          batch[0]!.reject(err);
          continue;
        }
        log.warn({ err: describeError(err), events: batch.length }, 'storing a batch of events failed; storing them one by one');
        for (const b of batch) {
          try {
            b.resolve((await write([b.row]))[0]!);
          } catch (e) {
            b.reject(e);
          }
        }
      } finally {
        lastWriteMs = Math.max(0.5, performance.now() - t0);
      }
    }
    busy = false;
  }
  return (row) =>
    new Promise<Stored>((resolve, reject) => {
      pending.push({ row, resolve, reject });
      const now = performance.now();
      const gap = now - lastArrival;
      lastArrival = now;
      if (gathering) {
        // Company came: wait for more only while they keep coming, never past GATHER_MS.
        clearTimeout(gathering.timer);
        gathering.timer = setTimeout(flushGathered, Math.max(0, Math.min(GATHER_QUIET_MS, gathering.since + GATHER_MS - now)));
        return;
      }
      if (busy) return;
      busy = true;
      // A lone event is written once the event loop has read what already arrived (the next
      // check phase, not a timer): requests already waiting in their sockets are taken in first
      // and share the write. An embedded database runs each write on this thread, so a write
      // started at once (a microtask) finished before the next request was even read, and 8
      // clients each waiting for their ack paid a commit each (bench:slack on PGlite: batches of
      // 1 then 7, 575 ev/s; written in the check phase, batches of 8 and 1,017 ev/s). In a burst
      // (arrivals faster than writes), wait a moment longer for company.
      if (gap < lastWriteMs * BURST_FACTOR) gathering = { since: now, timer: setTimeout(flushGathered, GATHER_MS) };
      else setImmediate(() => void drain());
    });

  function flushGathered(): void {
    gathering = undefined;
    void drain();
  }
}

export function createIntake(o: { router: () => Router; repo: GatewayRepo; queues: QueueFactory; audit: AuditQueue; logger: Logger }): HoldingIntake {
  const log = o.logger.child({ component: 'intake' });
  const store = groupCommit((rows) => o.repo.insertEvents(rows), log);

  async function accept(event: InboundEvent): Promise<IntakeResult> {
    const route = o.router().route(event);
    if (!route.ok) {
      const { row: seen, inserted } = await store({
        id: event.id,
        platform: event.platform,
        profile: null,
        conversation: event.conversation,
        status: 'rejected',
        payload: event,
        error: route.message,
      });
      if (!inserted) return { status: 'duplicate', profile: seen.profile, conversation: seen.conversation };
      void o.audit.push({ action: 'route', decision: 'reject', reason: route.detail, subject: event.id, data: { platform: event.platform } });
      log.info({ eventId: event.id, reason: route.reason }, 'event rejected');
      return { status: 'rejected', reason: route.reason, message: route.message };
    }
    const profile = route.profile.id;
    // A ClickUp trigger is how the comment addressed the agent, not part of the request (as a
    // Slack adapter strips the bot mention).
    const stored = route.binding.platform === 'clickup' ? { ...event, text: stripMention(event.text, route.binding.trigger) } : event;
    const { row, inserted } = await store({
      id: event.id,
      platform: event.platform,
      profile,
      conversation: event.conversation,
      status: 'queued',
      payload: stored,
    });
    if (!inserted) {
      // A redelivery. If the first delivery was stored but never queued (a crash in between),
      // queue it now; the job is a no-op if the turn already ran.
      if (row.status === 'queued' && row.profile) await o.queues.queue(row.profile).add({ eventId: row.id, conversation: row.conversation });
      log.debug({ eventId: event.id }, 'duplicate event');
      return { status: 'duplicate', profile: row.profile, conversation: row.conversation };
    }
    void o.audit.push({ profile, action: 'route', decision: 'allow', subject: event.id, data: { platform: event.platform } });
    await o.queues.queue(profile).add({ eventId: event.id, conversation: event.conversation });
    log.info({ eventId: event.id, profile }, 'event queued');
    return { status: 'accepted', profile };
  }

  return {
    accept,

    async hold(event: HeldEvent) {
      const { inserted } = await o.repo.holdDelivery({ id: event.id, platform: event.platform, payload: event });
      if (!inserted) {
        log.debug({ eventId: event.id }, 'duplicate delivery');
        return { status: 'duplicate' };
      }
      // A delivery held before this table existed went straight to events: still a duplicate.
      const before = await o.repo.getEvent(event.id);
      if (before) {
        await o.repo.settleHeld(event.id, 'routed', 'taken in before');
        return { status: 'duplicate' };
      }
      log.info({ eventId: event.id }, 'delivery held until its address is known');
      return { status: 'held' };
    },

    async route(id: string, address: Address) {
      const held = await o.repo.getHeld(id);
      if (!held) throw new Error(`no held delivery ${id}`);
      const event = { ...(held.payload as HeldEvent), address } as InboundEvent;
      if (held.status !== 'held') {
        const row = await o.repo.getEvent(id);
        return { status: 'duplicate', profile: row?.profile ?? null, conversation: row?.conversation ?? event.conversation };
      }
      // Stored in events first, then marked routed: a crash in between routes it again, which
      // accept answers as a duplicate (re-queueing it if it never was).
      const result = await accept(event);
      await o.repo.settleHeld(id, 'routed');
      return result;
    },

    async drop(id: string, reason: string) {
      await o.repo.settleHeld(id, 'dropped', reason);
      log.info({ eventId: id, reason }, 'held delivery dropped');
    },

    async held(platform: Platform) {
      const rows = await o.repo.heldDeliveries(platform);
      return rows.map((r) => r.payload as HeldEvent);
    },
  };
}
