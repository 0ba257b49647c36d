/**
 * Waiting with a bound. `withDeadline` settles as `work` does, or rejects with `late()`'s error
 * once `ms` have passed without an answer; the timer is cleared either way.
 *
 * Deliberately left out: stopping the work. Nothing here can; callers use this where waiting
 * longer would do more harm than leaving the work to finish (or hang) on its own.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), ms);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
