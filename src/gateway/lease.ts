/**
 * A unit's claim on its profile: a lease in the database (store/leases.ts), renewed in the
 * background, with self-fencing. The unit may serve only while `valid`: until the expiry it last
 * secured, minus a margin, measured on its own monotonic clock from before the renewal was sent.
 * The database's expiry is later than that (it counts from when the row was written), so another
 * unit — which may take the lease only after the database says it expired — never serves at the
 * same time, whatever happens to connections (a dropped or terminated backend, a database blip).
 *
 * A holder known to be dead is not waited for: on the embedded database any other holder is dead
 * (one process owns the data directory), and on PostgreSQL a holder on this host whose pid is gone.
 *
 * Deliberately left out: fencing tokens on every write. Turns check `valid` before they start,
 * and a unit that loses its lease hangs up on its agent at once.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { withDeadline } from '../deadline.js';
import type { Logger } from '../log.js';
import type { LeaseRepo } from '../store/leases.js';

export interface ProfileLease {
  readonly holder: string;
  /** True while this unit may serve. */
  readonly valid: boolean;
  /** Waits until the lease is ours (polling), or until `stopped()` says to give up; false then. */
  acquire(stopped: () => boolean): Promise<boolean>;
  /** Gives the lease up at once. Idempotent. */
  release(): Promise<void>;
}

export interface LeaseOptions {
  repo: LeaseRepo;
  key: string;
  logger: Logger;
  /** Lease length. Default 15 s. */
  ttlMs?: number;
  /** Renewal period. Default ttl / 5. */
  renewEveryMs?: number;
  /** Poll period while another unit holds it. Default 1 s. */
  pollMs?: number;
  /** Every holder other than this process is dead (the embedded database). */
  singleProcess: boolean;
  /** Called once when the lease is lost (renewals failed past the margin, or taken over). */
  onLost(reason: string): void;
  /** Called while waiting for another holder, at most every 10 s. */
  onWaiting?(holder: string): void;
}

const HOST = os.hostname();

function holderOf(): string {
  return `${HOST}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

function isDead(holder: string, singleProcess: boolean): boolean {
  const [host, pidText] = holder.split(':');
  const pid = Number(pidText);
  if (singleProcess) return pid !== process.pid;
  if (host !== HOST || !Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** `work`, or a rejection once `ms` have passed without an answer (the work itself is left running). */
function within<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  return withDeadline(work, ms, () => new Error(`${what}: no answer from the database within ${Math.round(ms)} ms`));
}

export function createProfileLease(o: LeaseOptions): ProfileLease {
  const ttl = o.ttlMs ?? 15_000;
  const every = o.renewEveryMs ?? Math.max(200, Math.floor(ttl / 5));
  const poll = o.pollMs ?? 1000;
  // Stop serving this long before the expiry we secured: time for a slow renewal to be noticed.
  const margin = Math.min(ttl / 3, 3000);
  const holder = holderOf();
  let epoch: number | undefined;
  let validUntil = 0;
  let timer: NodeJS.Timeout | undefined;
  let lost = false;
  let released = false;

  function lose(reason: string): void {
    if (lost || released) return;
    lost = true;
    validUntil = 0;
    clearTimeout(timer);
    o.logger.error({ key: o.key, reason }, 'lost the profile lease; stopped taking turns');
    o.onLost(reason);
  }

  async function renew(): Promise<void> {
    if (released || lost || epoch === undefined) return;
    const sentAt = performance.now();
    try {
      // A renewal that never answers (a query stuck in the driver after a connection dropped)
      // must not leave the unit neither serving nor knowing it lost the lease: it stops waiting
      // when the lease would lapse, and the check below gives the lease up.
      const ok = await within(o.repo.renew(o.key, holder, epoch, ttl), Math.max(0, validUntil - performance.now()), 'renewing the lease');
      if (!ok) return lose('another unit took the lease');
      validUntil = sentAt + ttl - margin;
    } catch (err) {
      o.logger.warn({ key: o.key, err: err instanceof Error ? err.message.split('\n')[0] : String(err) }, 'renewing the profile lease failed; retrying');
    }
    if (performance.now() >= validUntil) return lose('the lease could not be renewed in time');
    schedule();
  }

  function schedule(): void {
    if (released || lost) return;
    // Renew on schedule, and never later than the point where we would stop being valid.
    const wait = Math.max(50, Math.min(every, validUntil - performance.now() - 100));
    timer = setTimeout(() => void renew(), wait);
    timer.unref?.();
  }

  return {
    holder,
    get valid() {
      return !lost && !released && performance.now() < validUntil;
    },
    async acquire(stopped) {
      let lastNote = 0;
      while (!stopped()) {
        const sentAt = performance.now();
        const current = await within(o.repo.get(o.key), ttl, 'reading the lease').catch(() => undefined);
        const stale = current && current.holder !== holder && isDead(current.holder, o.singleProcess) ? [current.holder] : [];
        const got = await within(o.repo.acquire(o.key, holder, ttl, stale), ttl, 'taking the lease').catch((err: unknown) => {
          o.logger.warn({ key: o.key, err: err instanceof Error ? err.message.split('\n')[0] : String(err) }, 'taking the profile lease failed; retrying');
          return undefined;
        });
        if (got !== undefined) {
          epoch = got;
          validUntil = sentAt + ttl - margin;
          lost = false;
          released = false;
          schedule();
          return true;
        }
        if (current && Date.now() - lastNote > 10_000) {
          lastNote = Date.now();
          o.onWaiting?.(current.holder);
        }
        await new Promise((r) => setTimeout(r, poll));
      }
      return false;
    },
    async release() {
      if (released) return;
      released = true;
      clearTimeout(timer);
      const e = epoch;
      epoch = undefined;
      validUntil = 0;
      if (e !== undefined && !lost) await o.repo.release(o.key, holder, e);
    },
  };
}
