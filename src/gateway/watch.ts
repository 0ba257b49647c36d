/**
 * Follows an event through the database until its turn ends, so a caller in any process (the
 * local CLI, `POST /v1/messages`) sees progress and exactly one outcome. In one process, units
 * ping `signals` so the watcher does not wait for its next poll.
 */
import { EventEmitter } from 'node:events';
import type { TurnOutcome, TurnWatcher } from '../adapters/types.js';
import { heldBackOf, type GatewayRepo } from '../store/gateway.js';

export interface TurnSignals {
  /** Something about this event changed: progress, reply, failure. */
  ping(eventId: string): void;
  on(eventId: string, fn: () => void): () => void;
}

export function createTurnSignals(): TurnSignals {
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  return {
    ping: (id) => void bus.emit(id),
    on(id, fn) {
      bus.on(id, fn);
      return () => bus.off(id, fn);
    },
  };
}

export function createTurnWatcher(opts: { repo: GatewayRepo; signals: TurnSignals; pollMs?: number }): TurnWatcher {
  const pollMs = opts.pollMs ?? 250;
  return {
    async *watch(eventId, signal) {
      let lastId = 0;
      let replyEntry: { meta: unknown } | undefined;
      let wake: (() => void) | undefined;
      let dirty = false;
      const off = opts.signals.on(eventId, () => {
        dirty = true;
        wake?.();
      });
      const onAbort = () => wake?.();
      signal?.addEventListener('abort', onAbort);
      try {
        while (!signal?.aborted) {
          dirty = false;
          const ev = await opts.repo.getEvent(eventId);
          if (!ev) {
            yield { kind: 'notice', text: `unknown event ${eventId}` } satisfies TurnOutcome;
            return;
          }
          for (const t of await opts.repo.eventTranscript(eventId, lastId)) {
            lastId = t.id;
            if (t.kind === 'progress') yield { kind: 'progress', text: t.text };
            else if (t.kind === 'reply') replyEntry = t;
          }
          if (ev.status === 'replied' || ev.status === 'delivered') {
            const files = await opts.repo.files(eventId);
            // The reply entry is stored in the same transaction as the status, so the read above saw it.
            yield { kind: 'reply', text: ev.reply ?? '', files: files.map((f) => ({ name: f.name, data: f.data })), heldBack: heldBackOf(replyEntry) };
            return;
          }
          if (ev.status === 'failed' || ev.status === 'rejected') {
            yield { kind: 'notice', text: ev.error ?? `the turn ${ev.status}` };
            return;
          }
          if (dirty) continue;
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, pollMs);
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          wake = undefined;
        }
      } finally {
        off();
        signal?.removeEventListener('abort', onAbort);
      }
    },
  };
}
