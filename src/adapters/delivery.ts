/**
 * What the platform adapters share about delivery failures (not an adapter itself): reporting
 * one (an operator-visible log line plus the adapter's `onDeliveryFailure` callback, which the
 * metrics read), and the wording of the notes people see in the thread instead of nothing.
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import { printable } from '../text.js';
import type { DeliveryFailure, Platform } from './types.js';

export type ReportFailure = (f: Omit<DeliveryFailure, 'platform'>, ctx?: { eventId?: string; err?: unknown }) => void;

/**
 * A failure that no note in the thread shows is logged at error level (an operator must see it);
 * one the person was told about, or that will be retried, at warn. The callback never breaks delivery.
 */
export function failureReporter(platform: Platform, logger: Logger, onDeliveryFailure?: (f: DeliveryFailure) => void): ReportFailure {
  return (f, ctx = {}) => {
    const fields = { platform, kind: f.kind, step: f.step, code: f.code, retryable: f.retryable, shown: f.shown, eventId: ctx.eventId, ...(ctx.err ? { err: describeError(ctx.err) } : {}) };
    if (!f.shown && !f.retryable) logger.error(fields, `${platform}: delivery failed and nobody in the thread was told`);
    else logger.warn(fields, `${platform}: delivery step failed`);
    try {
      onDeliveryFailure?.({ platform, ...f });
    } catch (err) {
      logger.warn({ err: describeError(err) }, 'onDeliveryFailure callback threw');
    }
  };
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

/** One line naming a file that did not arrive and why (names are agent-chosen: escaped). */
export function fileNoteLine(name: string, reason: string): string {
  return `${printable(name).replace(/`/g, "'")}: ${printable(reason, 300)}`;
}

/** The reason for a file over a platform's per-file limit, naming both sizes. */
export function tooLargeReason(size: number, limit: number, platformName: string): string {
  return `${formatBytes(size)}, over ${platformName}'s ${formatBytes(limit)} limit per file`;
}

/**
 * Runs at most `concurrency` tasks at once, the rest in order after them: for cosmetic platform
 * calls after an acknowledgement (status lines, reactions), so a burst of deliveries does not
 * start hundreds of API calls that compete with the next acknowledgements for this process. With
 * a `gate`, each task also waits for it before starting (e.g. `IngressGate.quiet`).
 */
export function createLane(concurrency: number, gate?: () => Promise<void>): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async (task) => {
    if (gate) await gate();
    if (active >= concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/**
 * Acknowledgements first: counts a platform's webhook requests in progress, and `quiet()`
 * resolves once none has been for `quietMs` (or after `maxWaitMs` at most, so a steady stream
 * never starves what waits). A burst of 100 webhooks is then answered before the 200 cosmetic
 * API calls it causes ("is thinking…", 👀) start competing with it for this process's one thread.
 */
export interface IngressGate {
  /** Call when a request arrives; call what it returns when it has been answered. */
  enter(): () => void;
  quiet(): Promise<void>;
}

export function createIngressGate(o: { quietMs?: number; maxWaitMs?: number } = {}): IngressGate {
  const quietMs = o.quietMs ?? 20;
  const maxWaitMs = o.maxWaitMs ?? 1000;
  let inflight = 0;
  let lastLeft = Number.NEGATIVE_INFINITY;
  let waiters: Array<{ since: number; resolve: () => void }> = [];
  let timer: NodeJS.Timeout | undefined;
  // Waiters are in arrival order, so the first has waited longest: a check looks at no more
  // waiters than it releases (a burst of 1,000 events queues 1,000 of them).
  function check(): void {
    if (waiters.length === 0) return;
    const now = performance.now();
    if (inflight === 0 && now - lastLeft >= quietMs) {
      const all = waiters;
      waiters = [];
      for (const w of all) w.resolve();
      return;
    }
    let expired = 0;
    while (expired < waiters.length && now - waiters[expired]!.since >= maxWaitMs) expired++;
    if (expired > 0) for (const w of waiters.splice(0, expired)) w.resolve();
    if (waiters.length === 0 || timer) return;
    const untilCalm = inflight === 0 ? lastLeft + quietMs - now : quietMs;
    const untilMax = waiters[0]!.since + maxWaitMs - now;
    timer = setTimeout(() => {
      timer = undefined;
      check();
    }, Math.max(1, Math.min(untilCalm, untilMax)));
    timer.unref();
  }
  return {
    enter() {
      inflight++;
      let left = false;
      return () => {
        if (left) return;
        left = true;
        inflight--;
        lastLeft = performance.now();
      };
    },
    quiet() {
      if (inflight === 0 && performance.now() - lastLeft >= quietMs && waiters.length === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        waiters.push({ since: performance.now(), resolve });
        check();
      });
    },
  };
}
