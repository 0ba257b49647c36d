/**
 * BullMQ schedules after every gateway was down: the ticks due meanwhile are never run late when
 * a gateway comes back (a tick job that waited in Redis counts as missed and is logged).
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { Queue } from 'bullmq';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLocalAdapter } from '../src/adapters/local/index.js';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile } from '../src/governance/profile.js';
import { createScheduler } from '../src/schedules/index.js';
import type { Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';
import { until } from './helpers/wait.js';

const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
let store: Store;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ store, close } = await storeBackends('sched-late')[0]!.open());
});
afterAll(async () => {
  await close?.();
});

it('ticks due while no gateway ran are not run late; the next ones run', async () => {
  const id = `late-${randomBytes(3).toString('hex')}`;
  const v = validateProfile({
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L0', bindings: [{ platform: 'local', channels: ['*'] }],
    schedules: [{ name: 'tick', cron: '*/2 * * * * *', prompt: 'hello', post: { platform: 'local', channel: 'c' }, overlap: 'allow' }],
  }, 'p.yaml');
  const p = v.profile!;
  const prefix = `test-${randomBytes(6).toString('hex')}`;
  // A gateway registered the schedule, then every gateway stopped: its next tick job waits in Redis.
  const q = new Queue('agent-schedules', { connection: { url: redisUrl, maxRetriesPerRequest: null }, prefix });
  await q.upsertJobScheduler(`${id}/tick`, { pattern: '*/2 * * * * *', tz: 'UTC' }, { name: 'tick', data: { profile: id, schedule: 'tick' } });
  await q.close();
  await new Promise((r) => setTimeout(r, 5000));

  const lines: Array<{ msg: string; tick?: string }> = [];
  const logger = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as (typeof lines)[number]), cb()) }));
  const started: string[] = [];
  const intake = {
    async accept(e: { id: string; conversation: string; platform: string }) {
      await store.gateway.insertEvent({ id: e.id, platform: 'local', profile: id, conversation: e.conversation, status: 'queued', payload: e });
      started.push(e.id);
      return { status: 'accepted' as const, profile: id };
    },
  };
  const startedAt = Date.now();
  const s = createScheduler({
    profiles: () => new Map([[id, p]]),
    intake,
    route: () => ({ ok: true, profile: { id } }),
    adapters: new Map([['local', createLocalAdapter({ intake, watcher: { watch: async function* () {} }, logger })]]),
    store: { scheduleRuns: store.scheduleRuns, events: store.gateway },
    audit: createAuditLog(store.audit),
    logger,
    redisUrl,
    prefix,
    lateAfterMs: 1500,
  });
  try {
    await s.start();
    // Ticks after the restart run as usual; the ones due while no gateway ran never do: BullMQ
    // either hands over the job that waited (delivered late: logged, not run) or start replaced it.
    await until('a tick after the restart to run', async () => ((await store.scheduleRuns.last(id, 'tick'))?.status === 'started' ? true : undefined), { timeoutMs: 20_000 });
    const runs = await store.scheduleRuns.startedBefore(id, 'tick', new Date(Date.now() + 60_000), 100);
    expect(runs.length).toBeGreaterThan(0);
    expect(runs.every((r) => r.tick.getTime() >= startedAt - 1500), JSON.stringify(runs.map((r) => r.tick))).toBe(true);
    for (const l of lines.filter((x) => /delivered late/.test(x.msg))) expect(Date.parse(l.tick!)).toBeLessThan(startedAt);
    expect(started).toHaveLength(runs.length);
  } finally {
    await s.close();
    const q2 = new Queue('agent-schedules', { connection: { url: redisUrl, maxRetriesPerRequest: null }, prefix });
    await q2.obliterate({ force: true }).catch(() => undefined);
    await q2.close();
  }
}, 60_000);
