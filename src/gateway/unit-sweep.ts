/**
 * A unit's look for lost wake-ups: open events of its profile that nobody is working on. A turn
 * job is only a wake-up call (queue.ts); one that is lost (a Redis that restarted without its
 * data, a front door that died between storing an event and queueing it) would leave its event
 * unanswered until the unit restarted. Every `everyMs` this kicks the conversations of such
 * events, once they are older than one sweep.
 *
 * It leaves alone what is not lost: a conversation a chain is working on or a retry waits for
 * (`busy`), and a young event whose job may still be on its way. It never kicks more than the
 * unit has room for (`room`): under load a job waiting for a slot is late, not lost. A kick is
 * harmless when the wake-up was not lost after all: the chain finds nothing to start.
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { EventRow } from '../store/gateway.js';

export interface SweepOptions {
  /** How often; 0 turns the sweep off. */
  everyMs: number;
  /** False while the unit does not hold its profile. */
  serving(): boolean;
  /** How many more conversations the unit may take up now. */
  room(): number;
  busy(conversation: string): boolean;
  openEvents(): Promise<EventRow[]>;
  kick(conversation: string, eventId: string): void;
  log: Logger;
}

export function startSweep(o: SweepOptions): { stop(): void } {
  async function sweep(): Promise<void> {
    const room = o.room();
    if (!o.serving() || room <= 0) return;
    const before = Date.now() - o.everyMs;
    const lost = new Map<string, string>();
    for (const e of await o.openEvents()) {
      if (lost.size >= room) break;
      if (e.createdAt.getTime() > before || o.busy(e.conversation) || lost.has(e.conversation)) continue;
      lost.set(e.conversation, e.id);
    }
    if (lost.size > 0) o.log.warn({ conversations: lost.size, events: [...lost.values()].slice(0, 10) }, 'open events nobody was working on (their wake-up was lost): taking them up');
    for (const [conversation, id] of lost) o.kick(conversation, id);
  }
  if (o.everyMs <= 0) return { stop() {} };
  const timer = setInterval(() => void sweep().catch((err: unknown) => o.log.warn({ err: describeError(err) }, 'looking for lost wake-ups failed')), o.everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
