/**
 * The intake adapters call, on both store backends: group commit (a burst of concurrent
 * accepts, duplicates among them, is stored in few writes and still answers each caller with its
 * own row: one turn per id), and held deliveries (stored before their address is known, then
 * routed; a redelivery is a duplicate at every stage; what was held across a restart is listed).
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { InboundEvent } from '../src/adapters/types.js';
import { createAuditLog } from '../src/governance/audit.js';
import { createAuditQueue } from '../src/governance/audit-queue.js';
import { validateProfile } from '../src/governance/profile.js';
import { createIntake } from '../src/gateway/intake.js';
import { createQueueFactory } from '../src/gateway/queue.js';
import { createRouter } from '../src/gateway/router.js';
import { createLogger } from '../src/log.js';
import type { Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';

const logger = createLogger('silent');
const profile = validateProfile(
  { version: 1, id: 'cu', name: 'cu', agent: { command: ['x'] }, risk: 'L1', bindings: [{ platform: 'clickup', team: '9', trigger: '@help' }, { platform: 'slack', team: 'T1' }] },
  'cu.yaml',
).profile!;

function setup(store: Store) {
  const queues = createQueueFactory({ logger });
  const jobs: string[] = [];
  queues.queue('cu').consume(async (j) => void jobs.push(j.eventId), { concurrency: 1 });
  const audit = createAuditQueue(createAuditLog(store.audit), { logger });
  const writes: number[] = [];
  const repo = {
    ...store.gateway,
    insertEvents: (rows: Parameters<Store['gateway']['insertEvents']>[0]) => {
      writes.push(rows.length);
      return store.gateway.insertEvents(rows);
    },
  };
  const intake = createIntake({ router: () => createRouter({ profiles: [profile], invalid: [] }), repo, queues, audit, logger });
  return { intake, jobs, writes, close: async () => Promise.all([queues.close(), audit.close()]) };
}

const slackEvent = (n: number): InboundEvent => ({
  id: `slack:Ev${n}`, platform: 'slack', address: { platform: 'slack', team: 'T1', channel: 'C1' }, conversation: `slack:T1:C1:1700000000.${String(n).padStart(6, '0')}`,
  user: { id: 'U1' }, text: 'hi', receivedAt: new Date().toISOString(),
});

for (const backend of storeBackends('intake')) {
  describe(`intake on ${backend.kind}`, () => {
    const opened: Array<{ close(): Promise<void> }> = [];
    afterAll(async () => {
      for (const o of opened) await o.close();
    });
    async function open() {
      const s = await backend.open();
      opened.push(s);
      return s.store;
    }

    it('stores a burst in a few writes, one row per id, and answers each caller (duplicates within the burst included)', async () => {
      const store = await open();
      const t = setup(store);
      await t.intake.accept(slackEvent(0)); // a write just happened: the burst below counts as one
      const ids = Array.from({ length: 120 }, (_, i) => (i % 4 === 3 ? i - 1 : i) + 1);
      const results = await Promise.all(ids.map((n) => t.intake.accept(slackEvent(n))));
      const accepted = results.filter((r) => r.status === 'accepted').length;
      expect(accepted).toBe(new Set(ids).size);
      expect(results.filter((r) => r.status === 'duplicate')).toHaveLength(ids.length - accepted);
      for (const n of new Set(ids)) expect((await store.gateway.getEvent(`slack:Ev${n}`))?.status).toBe('queued');
      expect(t.writes.length, `writes: ${t.writes.join(',')}`).toBeLessThan(20);
      await new Promise((r) => setTimeout(r, 20));
      expect(new Set(t.jobs).size).toBe(t.jobs.length);
      await t.close();
    });

    it('stores hostile strings in a burst (NUL, lone surrogates, control characters, a megabyte) and keeps arrival order', async () => {
      const store = await open();
      const t = setup(store);
      await t.intake.accept(slackEvent(1000));
      const nasty = ['a\u0000b', 'lone \ud800 high', 'lone \udc00 low', '\u001b[31mred\u0007', 'x'.repeat(2 * 1024 * 1024)];
      const burst = nasty.map((text, i): InboundEvent => ({ ...slackEvent(1001 + i), id: `slack:Ev${1001 + i}\u0000\ud800`, conversation: 'slack:T1:C1:same', text, user: { id: 'U\u0000', name: '\udfff' } }));
      const results = await Promise.all(burst.map((e) => t.intake.accept(e)));
      expect(results.map((r) => r.status)).toEqual(nasty.map(() => 'accepted'));
      // Every one is a duplicate the second time (the stored id is the cleaned one, found again).
      expect((await Promise.all(burst.map((e) => t.intake.accept(e)))).map((r) => r.status)).toEqual(nasty.map(() => 'duplicate'));
      const open1 = await store.gateway.nextOpenEvent('cu', 'slack:T1:C1:same');
      expect(open1?.id).toMatch(/^slack:Ev1001/);
      expect(JSON.stringify(open1?.payload)).not.toMatch(/\\u0000/);
      await t.close();
    });

    it('holds a delivery before its address is known; every redelivery is a duplicate; routing runs one turn', async () => {
      const store = await open();
      const t = setup(store);
      const held = { id: 'clickup:h1', platform: 'clickup' as const, conversation: 'clickup:t1', user: { id: '5' }, text: '@help look', receivedAt: new Date().toISOString() };
      expect(await t.intake.hold(held)).toEqual({ status: 'held' });
      expect(await t.intake.hold(held)).toEqual({ status: 'duplicate' });
      expect((await t.intake.held('clickup')).map((h) => h.id)).toEqual(['clickup:h1']);
      const routed = await t.intake.route('clickup:h1', { platform: 'clickup', team: '9' });
      expect(routed).toEqual({ status: 'accepted', profile: 'cu' });
      expect(await t.intake.route('clickup:h1', { platform: 'clickup', team: '9' })).toMatchObject({ status: 'duplicate', profile: 'cu' });
      expect(await t.intake.hold(held)).toEqual({ status: 'duplicate' });
      expect(await t.intake.held('clickup')).toEqual([]);
      const ev = await store.gateway.getEvent('clickup:h1');
      expect(ev).toMatchObject({ status: 'queued', profile: 'cu', conversation: 'clickup:t1' });
      expect((ev!.payload as InboundEvent).text).toBe('look'); // the trigger stripped, as accept does

      await t.intake.hold({ ...held, id: 'clickup:h2' });
      await t.intake.drop('clickup:h2', 'task gone');
      expect(await t.intake.hold({ ...held, id: 'clickup:h2' })).toEqual({ status: 'duplicate' });
      expect(await store.gateway.getEvent('clickup:h2')).toBeUndefined();
      // An id taken in by accept before holding existed is a duplicate too.
      await t.intake.accept({ ...held, id: 'clickup:h3', address: { platform: 'clickup', team: '9' } });
      expect(await t.intake.hold({ ...held, id: 'clickup:h3' })).toEqual({ status: 'duplicate' });
      await t.close();
    });
  });
}
