/**
 * The default daily budget store (in memory, lost on restart) and the UTC day it is counted by.
 * The gateway passes a persistent ModelBudget instead (src/store); this one serves tests, the
 * bench, and a relay whose caller has none.
 */
import type { ModelBudget } from './types.js';

/** `YYYY-MM-DD` of `ms` in UTC. */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Seconds from `ms` to the next UTC midnight (when a spent daily budget renews). */
export function secondsToUtcMidnight(ms: number): number {
  const d = new Date(ms);
  const next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
  return Math.max(1, Math.ceil((next - ms) / 1000));
}

/** Counts per profile per day in a Map; only the current and previous days are kept. */
export function memoryBudget(): ModelBudget & { snapshot(): Record<string, number> } {
  const counts = new Map<string, number>();
  const key = (profile: string, day: string) => `${day}\u0000${profile}`;
  return {
    used(profile, day) {
      return counts.get(key(profile, day)) ?? 0;
    },
    add(profile, day, tokens) {
      const k = key(profile, day);
      counts.set(k, (counts.get(k) ?? 0) + tokens);
      // Drop days older than this one's previous day, so a long-lived relay does not grow.
      const floor = utcDay(Date.parse(`${day}T00:00:00Z`) - 86_400_000);
      for (const k2 of counts.keys()) if (k2.slice(0, 10) < floor) counts.delete(k2);
    },
    snapshot() {
      return Object.fromEntries([...counts].map(([k, v]) => [k.replace('\u0000', ' '), v]));
    },
  };
}
