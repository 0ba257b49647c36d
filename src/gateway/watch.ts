/**
 * Follows an event through the database until its turn ends, so a caller in any process (the
 * local CLI, `POST /v1/messages`) sees progress and exactly one outcome. In one process, units
 * ping `signals` so the watcher does not wait for its next poll.
 *
 * A database that drops out while a caller waits is waited out (with backoff, up to
 * `unavailableForMs`): the turn goes on regardless, and its outcome must never be reported
 * wrongly. Past that, the watch ends with `db_unavailable` (503, retryable): the caller asks
 * again with the same id and gets the stored outcome.
 */
import { EventEmitter } from 'node:events';
import type { TurnOutcome, TurnWatcher } from '../adapters/types.js';
import { AgentVmError } from '../errors.js';
import { isDbUnavailable, dbFailure } from '../store/errors.js';
import type { GatewayRepo } from '../store/gateway.js';

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

export function createTurnWatcher(opts: { repo: GatewayRepo; signals: TurnSignals; pollMs?: number; unavailableForMs?: number }): TurnWatcher {
  const pollMs = opts.pollMs ?? 250;
  const patience = opts.unavailableForMs ?? 30_000;

  /** Runs a read, waiting out a database that is briefly gone. */
  async function read<T>(fn: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    const giveUpAt = Date.now() + patience;
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      try {
        return await fn();
      } catch (err) {
        if (!isDbUnavailable(err)) throw err;
        if (Date.now() >= giveUpAt || signal?.aborted) {
          throw new AgentVmError('db_unavailable', `the database is unavailable (${dbFailure(err).message}); the turn goes on: ask again with the same id for its outcome`, { status: 503, retryable: true, cause: err });
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  return {
    async *watch(eventId, signal, how) {
      let lastId = 0;
      let wake: (() => void) | undefined;
      let dirty = false;
      const off = opts.signals.on(eventId, () => {
        dirty = true;
        wake?.();
      });
      const onAbort = () => wake?.();
      signal?.addEventListener('abort', onAbort);
      /** Until the next signal about this event, or the next poll. */
      const pause = () =>
        new Promise<void>((resolve) => {
          const t = setTimeout(resolve, pollMs);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        }).finally(() => (wake = undefined));
      try {
        // Just stored: nothing to read yet, and reading now would queue in front of the turn's start.
        if (how?.justAccepted && !dirty) await pause();
        while (!signal?.aborted) {
          dirty = false;
          const ev = await read(() => opts.repo.getEvent(eventId), signal);
          if (!ev) {
            yield { kind: 'notice', text: `unknown event ${eventId}` } satisfies TurnOutcome;
            return;
          }
          for (const t of await read(() => opts.repo.eventTranscript(eventId, lastId), signal)) {
            lastId = t.id;
            if (t.kind === 'progress') yield { kind: 'progress', text: t.text };
          }
          if (ev.status === 'replied' || ev.status === 'delivered') {
            const [files, heldBack] = await read(() => Promise.all([opts.repo.files(eventId), opts.repo.heldBack(eventId)]), signal);
            yield { kind: 'reply', text: ev.reply ?? '', files: files.map((f) => ({ name: f.name, data: f.data })), heldBack };
            return;
          }
          if (ev.status === 'failed' || ev.status === 'rejected') {
            yield { kind: 'notice', text: ev.error ?? `the turn ${ev.status}` };
            return;
          }
          if (dirty) continue;
          await pause();
        }
      } finally {
        off();
        signal?.removeEventListener('abort', onAbort);
      }
    },
  };
}
