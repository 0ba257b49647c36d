import { describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import type { LeaseRepo } from '../store/leases.js';
import { createProfileLease } from './lease.js';

describe('profile lease', () => {
  it('a renewal that never answers loses the lease in time (and says so) instead of leaving the unit silently not serving', async () => {
    let hang = false;
    const repo: LeaseRepo = {
      acquire: async () => 1,
      renew: () => (hang ? new Promise<boolean>(() => {}) : Promise.resolve(true)),
      release: async () => {},
      get: async () => undefined,
    };
    const lost: string[] = [];
    const lease = createProfileLease({ repo, key: 'p', logger: createLogger('silent'), ttlMs: 600, renewEveryMs: 100, singleProcess: false, onLost: (why) => lost.push(why) });
    expect(await lease.acquire(() => false)).toBe(true);
    await new Promise((r) => setTimeout(r, 250));
    expect(lease.valid).toBe(true);
    hang = true; // from now on every renewal is stuck in the driver
    const started = Date.now();
    while (lost.length === 0 && Date.now() - started < 5000) await new Promise((r) => setTimeout(r, 20));
    expect(lost).toEqual(['the lease could not be renewed in time']);
    expect(lease.valid).toBe(false);
    await lease.release();
  });
});
