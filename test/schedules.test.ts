/**
 * Schedules: exactly once per tick across gateway processes on one Redis (BullMQ job schedulers),
 * overlap modes and missed ticks with the in-process scheduler (croner), on PostgreSQL and PGlite.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalAdapter } from '../src/adapters/local/index.js';
import type { InboundEvent } from '../src/adapters/types.js';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createLogger } from '../src/log.js';
import { createScheduler, scheduleListing, type Scheduler } from '../src/schedules/index.js';
import type { Store } from '../src/store/index.js';
import { createTestDatabase } from './helpers/pg.js';
import { storeBackends } from './helpers/stores.js';
import { until } from './helpers/wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const redisUrl = process.env.AGENTVM_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const logger = createLogger('silent');

function manifest(id: string, schedule: Record<string, unknown>): Record<string, unknown> {
  return {
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L0',
    bindings: [{ platform: 'local', channels: ['*'] }],
    schedules: [{ name: 'tick', cron: '* * * * * *', prompt: 'scheduled hello', post: { platform: 'local', channel: 'reports' }, ...schedule }],
  };
}

function profileOf(m: Record<string, unknown>): Profile {
  const v = validateProfile(m, 'p.yaml');
  if (!v.profile) throw new Error(JSON.stringify(v.issues));
  return v.profile;
}

describe('across two gateway processes on one Redis', () => {
  it('a schedule every second runs exactly once per tick', async () => {
    const db = await createTestDatabase();
    const { openStore } = await import('../src/store/index.js');
    const store = await openStore({ databaseUrl: db.url, dataDir: '/nonexistent' });
    try {
      await store.migrate();
      const id = `s2p-${randomBytes(3).toString('hex')}`;
      const m = JSON.stringify(manifest(id, { overlap: 'allow' }));
      const prefix = `test-${randomBytes(6).toString('hex')}`;
      const run = () =>
        new Promise<Array<Record<string, string>>>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/helpers/schedule-process.ts'), db.url, redisUrl, prefix, m, '6'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.stderr.on('data', (d: Buffer) => (err += d.toString()));
          child.on('exit', (code) => (code === 0 ? resolve(out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>)) : reject(new Error(`schedule process exited ${code}: ${err.slice(-2000)}`))));
        });
      const [a, b] = await Promise.all([run(), run()]);
      // BullMQ may hand one tick to both processes when both upsert the job scheduler at start
      // (taskforcesh/bullmq#2988, #2876): that is why a tick is claimed in the database. What
      // must hold is that exactly one claim of each tick wins, in whichever process.
      const won = [...a, ...b].filter((l) => l.tick && (l.won as unknown) === true);
      const accepted = [...a, ...b].filter((l) => l.accepted);
      const perTick = new Map<string, number>();
      for (const l of won) perTick.set(l.tick!, (perTick.get(l.tick!) ?? 0) + 1);
      // Several ticks ran, each in exactly one process, and each became exactly one event.
      expect(perTick.size).toBeGreaterThanOrEqual(3);
      expect([...perTick.values()].every((n) => n === 1), JSON.stringify([...perTick])).toBe(true);
      expect(accepted.length).toBe(perTick.size);
      expect(new Set(accepted.map((l) => l.accepted)).size).toBe(accepted.length);
      // Consecutive seconds: no tick was dropped between the first and the last.
      const ticks = [...perTick.keys()].map((t) => Date.parse(t)).sort((x, y) => x - y);
      expect(ticks.at(-1)! - ticks[0]!).toBe((ticks.length - 1) * 1000);
      const rows = await Promise.all(ticks.map((t) => store.scheduleRuns.last(id, 'tick', new Date(t + 1))));
      expect(rows.map((r) => r?.status)).toEqual(ticks.map(() => 'started'));
    } finally {
      await store.close();
      await db.drop();
    }
  }, 60_000);
});

for (const backend of storeBackends('schedules')) {
  describe(`in-process schedules (${backend.kind})`, () => {
    let store: Store;
    let close: () => Promise<void>;
    const schedulers: Scheduler[] = [];
    beforeAll(async () => {
      ({ store, close } = await backend.open());
    });
    afterAll(async () => {
      for (const s of schedulers) await s.close();
      await close();
    });

    /** A scheduler whose intake stores each event `queued` and leaves it open until the test says. */
    function scheduler(p: Profile) {
      const accepted: InboundEvent[] = [];
      const intake = {
        async accept(e: InboundEvent) {
          await store.gateway.insertEvent({ id: e.id, platform: e.platform, profile: p.id, conversation: e.conversation, status: 'queued', payload: e });
          accepted.push(e);
          return { status: 'accepted' as const, profile: p.id };
        },
      };
      const s = createScheduler({
        profiles: () => new Map([[p.id, p]]),
        intake,
        route: (e) => (e.address.platform === 'local' && e.address.profile === p.id ? { ok: true, profile: { id: p.id } } : { ok: false, message: 'unbound' }),
        adapters: new Map([['local', createLocalAdapter({ intake, watcher: { watch: async function* () {} }, logger })]]),
        store: { scheduleRuns: store.scheduleRuns, events: store.gateway },
        audit: createAuditLog(store.audit),
        logger,
        pollMs: 100,
      });
      schedulers.push(s);
      return { s, accepted };
    }

    it('skip: ticks are skipped while the previous run is still going, and run again once it ended', async () => {
      const p = profileOf(manifest(`skp-${randomBytes(3).toString('hex')}`, { overlap: 'skip' }));
      const { s, accepted } = scheduler(p);
      const t0 = new Date(Math.floor(Date.now() / 1000) * 1000 + 5000);
      expect(await s.fire(p.id, 'tick', t0)).toMatchObject({ status: 'started', conversation: `local:${p.id}:schedule-tick-${t0.toISOString().replace(/\.\d+Z$/, 'Z').replace(/[-:]/g, '')}` });
      const t1 = new Date(t0.getTime() + 1000);
      expect(await s.fire(p.id, 'tick', t1)).toEqual({ status: 'skipped', reason: `the run of ${t0.toISOString()} is still going (overlap: skip)` });
      expect(await s.fire(p.id, 'tick', t1)).toEqual({ status: 'duplicate' });
      await store.gateway.setStatus(accepted[0]!.id, 'failed', 'done');
      expect((await s.fire(p.id, 'tick', new Date(t0.getTime() + 2000))).status).toBe('started');
      expect(accepted.map((e) => e.text)).toEqual(['scheduled hello', 'scheduled hello']);
      expect(accepted[0]).toMatchObject({ platform: 'local', address: { platform: 'local', profile: p.id, channel: 'reports' }, user: { id: 'schedule:tick' } });
      const audit = (await store.audit.tail(20)).filter((r) => r.profile === p.id && r.action === 'schedule.run');
      expect(audit.map((r) => r.decision)).toEqual(['allow', 'skip', 'allow']);
    });

    it('skip, on the real timer: a run still going makes the next ticks skip', async () => {
      const p = profileOf(manifest(`skt-${randomBytes(3).toString('hex')}`, { overlap: 'skip' }));
      const { s, accepted } = scheduler(p);
      await s.start();
      await until('three ticks', async () => ((await countRuns(store, p.id)) >= 3 ? true : undefined), { everyMs: 100 });
      await s.close();
      expect(accepted).toHaveLength(1);
      const statuses: string[] = [];
      for (let r = await store.scheduleRuns.last(p.id, 'tick'); r; r = await store.scheduleRuns.last(p.id, 'tick', r.tick)) statuses.unshift(r.status);
      expect(statuses[0]).toBe('started');
      expect(new Set(statuses.slice(1))).toEqual(new Set(['skipped']));
    });

    it('queue: a tick waits for the run ahead of it, then starts', async () => {
      const p = profileOf(manifest(`que-${randomBytes(3).toString('hex')}`, { overlap: 'queue' }));
      const { s, accepted } = scheduler(p);
      const t0 = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
      await s.fire(p.id, 'tick', t0);
      const second = s.fire(p.id, 'tick', new Date(t0.getTime() + 1000));
      await until('the second tick to wait', async () => ((await store.scheduleRuns.last(p.id, 'tick'))?.status === 'waiting' ? true : undefined), { everyMs: 100 });
      expect(accepted).toHaveLength(1);
      await store.gateway.setStatus(accepted[0]!.id, 'failed', 'done');
      expect((await second).status).toBe('started');
      expect(accepted).toHaveLength(2);
    });

    it('missed ticks: logged and audited; catchUp latest runs the latest one, none does not', async () => {
      for (const catchUp of ['none', 'latest'] as const) {
        const p = profileOf(manifest(`mis-${catchUp}-${randomBytes(3).toString('hex')}`, { cron: '* * * * *', catchUp }));
        const { s, accepted } = scheduler(p);
        const old = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 5 * 60_000);
        await store.scheduleRuns.claim({ profile: p.id, schedule: 'tick', tick: old, status: 'skipped' });
        await s.start();
        await s.close();
        const missed = (await store.audit.tail(30)).find((r) => r.profile === p.id && r.action === 'schedule.missed');
        expect(missed?.data).toMatchObject({ catchUp, missed: expect.any(Number) });
        expect((missed!.data as { missed: number }).missed).toBeGreaterThanOrEqual(4);
        const last = await store.scheduleRuns.last(p.id, 'tick');
        if (catchUp === 'latest') {
          expect(accepted).toHaveLength(1);
          expect(last).toMatchObject({ status: 'started', catchUp: 1 });
        } else {
          expect(accepted).toHaveLength(0);
          expect(last?.tick.getTime()).toBe(old.getTime());
        }
      }
    });

    it('a post the router sends to another profile is refused, and schedules ls shows next run and last result', async () => {
      const p = profileOf(manifest(`lst-${randomBytes(3).toString('hex')}`, { cron: '0 9 * * *', timezone: 'Europe/Paris' }));
      const { s } = scheduler(p);
      const other = createScheduler({
        profiles: () => new Map([[p.id, p]]),
        intake: { accept: async () => ({ status: 'accepted', profile: 'x' }) },
        route: () => ({ ok: true, profile: { id: 'someone-else' } }),
        adapters: new Map([['local', createLocalAdapter({ intake: { accept: async () => ({ status: 'accepted', profile: 'x' }) }, watcher: { watch: async function* () {} }, logger })]]),
        store: { scheduleRuns: store.scheduleRuns, events: store.gateway },
        audit: createAuditLog(store.audit),
        logger,
      });
      schedulers.push(other);
      const tick = new Date('2026-01-01T08:00:00Z');
      expect(await other.fire(p.id, 'tick', tick)).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/routes to profile someone-else/) });
      const [info] = await scheduleListing([p], { scheduleRuns: store.scheduleRuns, events: store.gateway }, new Date('2026-06-01T12:00:00Z'));
      expect(info).toMatchObject({ name: 'tick', post: 'local reports', next: new Date('2026-06-02T07:00:00Z'), last: { status: 'rejected', result: null } });
      void s;
    });
  });
}

async function countRuns(store: Store, profile: string): Promise<number> {
  let n = 0;
  for (let r = await store.scheduleRuns.last(profile, 'tick'); r; r = await store.scheduleRuns.last(profile, 'tick', r.tick)) n++;
  return n;
}
