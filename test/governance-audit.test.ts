/**
 * The audit trail on both database backends: the chain verifies, then reports the first broken
 * row after a row is edited, deleted or re-linked directly in the database; hostile strings are
 * stored (made storable) instead of failing the insert, and the chain still verifies; the
 * write-behind queue keeps order, fails closed while the database is unavailable, and isolates a
 * row the database refuses instead of retrying it forever; two processes appending at once on
 * PostgreSQL keep one chain.
 */
import os from 'node:os';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_LIMITS, createAuditLog, hashOf, type AuditEntry, type AuditLog } from '../src/governance/audit.js';
import { createAuditQueue } from '../src/governance/audit-queue.js';
import { openStore, type Store } from '../src/store/index.js';
import { createTestDatabase } from './helpers/pg.js';
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
    audit = createAuditLog(store.audit);
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

  it('stores hostile strings instead of failing, and the chain still verifies', async () => {
    const fresh = await backend.open();
    const audit = createAuditLog(fresh.store.audit);
    const deep: Record<string, unknown> = {};
    let at = deep;
    for (let i = 0; i < 40; i++) at = (at.next = {}) as Record<string, unknown>;
    const hostile: AuditEntry = {
      profile: 'p\u0000',
      action: 'tool.call\ud800',
      decision: 'deny',
      reason: `why\u0000${'r'.repeat(10_000)}`,
      subject: `up__x\u0000${'\u{1F600}'.repeat(200)}\udfff`,
      data: { name: 'a\u0000b', lone: '\ud800', ['k\u0000']: ['\udc00'], deep, big: 'z'.repeat(100_000), many: Array.from({ length: 5000 }, (_, i) => i) },
    };
    const row = await audit.record(hostile);
    expect(row.subject).not.toContain('\u0000');
    const [stored] = await audit.tail(1);
    expect(stored).toMatchObject({ profile: 'p\u2400', action: 'tool.call\ufffd', reason: expect.stringMatching(/^why\u2400r+…$/) });
    expect(stored!.subject!.length).toBeLessThanOrEqual(AUDIT_LIMITS.subject);
    expect(stored!.data).toMatchObject({ name: 'a\u2400b', lone: '\ufffd', 'k\u2400': ['\ufffd'], subjectSha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(stored!.data).length).toBeLessThanOrEqual(AUDIT_LIMITS.dataBytes + 200);
    await audit.recordMany([hostile, { action: 'ok', decision: 'ok' }]);
    expect(await audit.verify()).toEqual({ ok: true, rows: 3 });
    await fresh.close();
  });

  it('isolates a row the database refuses: the rest of the batch is written, in order, and the chain holds', async () => {
    const fresh = await backend.open();
    const { store } = fresh;
    const audit = createAuditLog(store.audit);
    // A real refusal from this backend's driver (NUL in text), thrown for the poisoned row only.
    const refusal = await store.db.execute(sql`select ${'a\u0000b'}::text`).then(() => undefined, (e: unknown) => e);
    expect(refusal).toBeDefined();
    const refusing = {
      ...audit,
      async recordMany(es: readonly AuditEntry[]) {
        if (es.some((e) => e.subject === 'poison')) throw refusal;
        return audit.recordMany(es);
      },
    } satisfies AuditLog;
    const q = createAuditQueue(refusing, { lingerMs: 20, retryMs: 10 });
    const oks = Array.from({ length: 9 }, (_, i) => q.push(i === 4 ? { ...entry(i), subject: 'poison' } : entry(i)));
    expect(await Promise.all(oks)).toEqual(Array(9).fill(true));
    expect(q.healthy).toBe(true);
    expect(q.replaced).toBe(1);
    const rows = await audit.tail(20);
    expect(rows.map((r) => r.subject)).toEqual(['srv.tool0', 'srv.tool1', 'srv.tool2', 'srv.tool3', null, 'srv.tool5', 'srv.tool6', 'srv.tool7', 'srv.tool8']);
    expect(rows[4]).toMatchObject({ profile: 'p', action: 'tool.call', decision: 'allow', reason: expect.stringMatching(/refused this row/), data: { refused: true, code: '22021' } });
    expect(await audit.verify()).toEqual({ ok: true, rows: 9 });
    await q.close();
    await fresh.close();
  });
});

describe('audit appends from two processes at once (PostgreSQL)', () => {
  it('keep one gap-free chain', async () => {
    const tdb = await createTestDatabase();
    const a = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
    const b = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
    try {
      await a.migrate();
      const [la, lb] = [createAuditLog(a.audit), createAuditLog(b.audit)];
      // Interleaved single rows and batches: each side's remembered head goes stale again and again.
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? la : lb)).map((log, i) => (i % 3 === 0 ? log.recordMany([entry(i), entry(i + 100)]) : log.record(entry(i)))),
      );
      expect(await la.verify()).toEqual({ ok: true, rows: 40 + 14 });
    } finally {
      await Promise.allSettled([a.close(), b.close()]);
      await tdb.drop();
    }
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
    expect(q.problem).toBe('the audit trail is unavailable');
    const p2 = q.push(entry(2));
    fail = false;
    await q.flush();
    expect(await Promise.all([p1, p2])).toEqual([true, true]);
    expect(written).toEqual(['srv.tool1', 'srv.tool2']);
    expect(q.healthy).toBe(true);
    await q.close();
  });

  it('replaces a refused row by a marker and goes on; a refused marker too, by a bare one', async () => {
    const written: AuditEntry[] = [];
    const refused = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: '22021' });
    let refuseNames = false;
    const fake = {
      async recordMany(es: readonly AuditEntry[]) {
        if (es.some((e) => e.subject === 'poison' || (refuseNames && e.profile === 'evil'))) throw refused;
        written.push(...es);
        return [];
      },
    } as unknown as AuditLog;
    const q = createAuditQueue(fake, { maxBatch: 50, lingerMs: 10 });
    const oks = Array.from({ length: 50 }, (_, i) => q.push(i === 17 ? { ...entry(i), subject: 'poison' } : entry(i)));
    expect(await Promise.all(oks)).toEqual(Array(50).fill(true));
    expect(written.map((e) => e.subject ?? `marker:${e.action}:${e.decision}`)).toEqual(
      Array.from({ length: 50 }, (_, i) => (i === 17 ? `marker:tool.call:allow` : `srv.tool${i}`)),
    );
    expect(written[17]).toMatchObject({ profile: 'p', reason: expect.stringMatching(/refused this row/), data: { refused: true, code: '22021', entrySha256: expect.any(String) } });
    refuseNames = true;
    expect(await q.push({ ...entry(1), profile: 'evil', subject: 'poison' })).toBe(true);
    expect(written.at(-1)).toMatchObject({ action: 'audit.refused', decision: 'error', data: { refused: true } });
    expect(written.at(-1)!.profile).toBeUndefined();
    expect(q.replaced).toBe(2);
    expect(q.healthy).toBe(true);
    await q.close();
  });

  it('does not split or replace anything while the database is down', async () => {
    let down = true;
    const written: string[] = [];
    const fake = {
      async recordMany(es: readonly AuditEntry[]) {
        if (down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
        written.push(...es.map((e) => e.subject!));
        return [];
      },
    } as unknown as AuditLog;
    const q = createAuditQueue(fake, { retryMs: 10, lingerMs: 0 });
    const oks = [q.push(entry(1)), q.push(entry(2))];
    await new Promise((r) => setTimeout(r, 30));
    expect(q.healthy).toBe(false);
    expect(q.problem).toBe('the audit trail is unavailable');
    down = false;
    expect(await Promise.all(oks)).toEqual([true, true]);
    expect(written).toEqual(['srv.tool1', 'srv.tool2']);
    expect(q.replaced).toBe(0);
    await q.close();
  });

  it('refuses rows beyond its backlog, and reports the rows lost at close', async () => {
    const fake = { recordMany: () => new Promise(() => undefined) } as unknown as AuditLog;
    const q = createAuditQueue(fake, { maxBacklog: 2, closeTimeoutMs: 20 });
    const a = q.push(entry(1));
    const b = q.push(entry(2));
    expect(q.healthy).toBe(false);
    expect(q.problem).toBe('the audit trail is unavailable');
    expect(await q.push(entry(3))).toBe(false);
    const flushed = q.flush();
    await q.close();
    await expect(flushed).rejects.toThrow('audit queue closed before the rows were written');
    expect(await Promise.all([a, b])).toEqual([false, false]);
  });
});
