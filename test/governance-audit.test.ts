/**
 * The audit trail on both database backends: the chain verifies, then reports the first broken
 * row after a row is edited, deleted or re-linked directly in the database; and the proxy's
 * write-behind queue keeps order and fails closed while the database is unavailable.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog, hashOf, type AuditEntry, type AuditLog } from '../src/governance/audit.js';
import { createAuditQueue } from '../src/governance/audit-queue.js';
import type { Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';

const backends = storeBackends('audit');

const entry = (i: number): AuditEntry => ({
  profile: 'p',
  action: 'tool.call',
  decision: i % 3 === 0 ? 'deny' : 'allow',
  reason: i % 3 === 0 ? 'not in the tool allowlist' : null,
  subject: `srv.tool${i}`,
  data: { policyHash: 'a'.repeat(64), argsHash: String(i).repeat(8) },
});

describe.each(backends)('audit trail on $kind', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  let audit: AuditLog;

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    audit = createAuditLog(store.db);
  });
  afterAll(() => close?.());

  it('verifies, then reports the first broken row after an edit, a re-link and a deletion', async () => {
    for (let i = 1; i <= 5; i++) await audit.record(entry(i));
    const batch = await audit.recordMany([6, 7, 8, 9, 10].map(entry));
    expect(batch.map((r) => r.seq)).toEqual([6, 7, 8, 9, 10]);
    expect(batch[0]?.prevHash).toBe((await audit.tail(6))[0]?.hash);
    expect(await audit.verify()).toEqual({ ok: true, rows: 10 });
    expect((await audit.tail(3)).map((r) => r.seq)).toEqual([8, 9, 10]);

    // Someone turns a denial into an allow, in the database, at row 6.
    await store.db.execute(sql`update audit set decision = 'allow', reason = null where seq = 6`);
    expect(await audit.verify()).toEqual({ ok: false, rows: 5, brokenAt: 6, reason: 'row 6 was changed after it was written' });

    // With the row's own hash recomputed too, the next row's link gives it away.
    const [six] = (await audit.tail(5)).filter((r) => r.seq === 6);
    const forged = hashOf({
      prev: six!.prevHash, seq: 6, at: new Date(six!.at).toISOString(), profile: six!.profile, action: six!.action,
      decision: 'allow', reason: null, subject: six!.subject, data: six!.data,
    });
    await store.db.execute(sql`update audit set hash = ${forged} where seq = 6`);
    expect(await audit.verify()).toEqual({ ok: false, rows: 6, brokenAt: 7, reason: 'row 7 does not link to row 6' });

    await store.db.execute(sql`update audit set decision = 'deny', reason = 'not in the tool allowlist', hash = ${six!.hash} where seq = 6`);
    expect(await audit.verify()).toEqual({ ok: true, rows: 10 });
    await store.db.execute(sql`update audit set prev_hash = ${'f'.repeat(64)} where seq = 8`);
    expect(await audit.verify()).toMatchObject({ ok: false, brokenAt: 8, reason: 'row 8 does not link to row 7' });
    await store.db.execute(sql`delete from audit where seq = 4`);
    expect(await audit.verify()).toMatchObject({ ok: false, brokenAt: 4, reason: 'row 4 is missing' });
  });
});

describe('audit write-behind queue', () => {
  it('keeps order across batches and reports healthy', async () => {
    const written: AuditEntry[] = [];
    const fake = {
      async recordMany(es: readonly AuditEntry[]) {
        await new Promise((r) => setTimeout(r, 2));
        written.push(...es);
        return [];
      },
    } as unknown as AuditLog;
    const q = createAuditQueue(fake, { maxBatch: 7 });
    const oks = Array.from({ length: 50 }, (_, i) => q.push(entry(i)));
    await q.flush();
    expect(await Promise.all(oks)).toEqual(Array(50).fill(true));
    expect(written.map((e) => e.subject)).toEqual(Array.from({ length: 50 }, (_, i) => `srv.tool${i}`));
    expect(q.healthy).toBe(true);
    await q.close();
    expect(await q.push(entry(1))).toBe(false);
  });

  it('is unhealthy while writes fail, retries in order, and recovers', async () => {
    let fail = true;
    const written: string[] = [];
    const fake = {
      async recordMany(es: readonly AuditEntry[]) {
        if (fail) throw new Error('connection refused');
        written.push(...es.map((e) => e.subject!));
        return [];
      },
    } as unknown as AuditLog;
    const q = createAuditQueue(fake, { retryMs: 10, lingerMs: 0 });
    const p1 = q.push(entry(1));
    await new Promise((r) => setTimeout(r, 5));
    expect(q.healthy).toBe(false);
    expect(q.problem).toBe('the audit trail cannot be written (connection refused)');
    const p2 = q.push(entry(2));
    fail = false;
    await q.flush();
    expect(await Promise.all([p1, p2])).toEqual([true, true]);
    expect(written).toEqual(['srv.tool1', 'srv.tool2']);
    expect(q.healthy).toBe(true);
    await q.close();
  });

  it('refuses rows beyond its backlog, and reports the rows lost at close', async () => {
    const fake = { recordMany: () => new Promise(() => undefined) } as unknown as AuditLog;
    const q = createAuditQueue(fake, { maxBacklog: 2, closeTimeoutMs: 20 });
    const a = q.push(entry(1));
    const b = q.push(entry(2));
    expect(q.healthy).toBe(false);
    expect(q.problem).toBe('the audit backlog is full');
    expect(await q.push(entry(3))).toBe(false);
    const flushed = q.flush();
    await q.close();
    await expect(flushed).rejects.toThrow('audit queue closed before the rows were written');
    expect(await Promise.all([a, b])).toEqual([false, false]);
  });
});
