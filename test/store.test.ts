import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isAgentVmError } from '../src/errors.js';
import { agents, migrationsFolder, openStore, type AgentWake, type OpenStoreOptions, type Store } from '../src/store/index.js';
import { storeBackends } from './helpers/stores.js';

const backends = storeBackends('store');

function wake(id: string, over: Partial<AgentWake> = {}): AgentWake {
  return {
    id,
    profile: 'default',
    runtime: 'runsc',
    engineRuntime: 'runsc',
    image: 'agent-vm/agent:1',
    specHash: 'hash-1',
    containerId: `ctr-${id}`,
    wakeMs: 123,
    ...over,
  };
}

describe('migrations folder', () => {
  it('resolves to <repo>/migrations and holds the drizzle journal', () => {
    const root = fileURLToPath(new URL('..', import.meta.url));
    expect(migrationsFolder).toBe(path.join(root, 'migrations'));
    expect(existsSync(path.join(migrationsFolder, 'meta', '_journal.json'))).toBe(true);
  });
});

describe.each(backends)('store on $kind', (backend) => {
  let opts: OpenStoreOptions;
  let teardown: (() => Promise<void>) | undefined;
  let store: Store;

  beforeAll(async () => {
    const env = await backend.setup();
    opts = env.opts;
    teardown = env.teardown;
    store = await openStore(opts);
    await store.migrate();
  });

  afterAll(async () => {
    await store?.close();
    await teardown?.();
  });

  beforeEach(async () => {
    await store.db.delete(agents);
  });

  it('uses the expected driver', () => {
    expect(store.kind).toBe(backend.kind);
  });

  it('claimNext starts the oldest open event of a conversation in one statement, its prompt written once', async () => {
    const g = store.gateway;
    const conv = `claim-${backend.kind}-${Date.now()}`;
    const ev = (id: string) => ({ id, platform: 'local', profile: 'p', conversation: conv, status: 'queued' as const, payload: { platform: 'local', user: { id: 'u1' }, text: `hello \u0000 ${id}` } });
    await g.insertEvent(ev(`${conv}:1`));
    await g.insertEvent(ev(`${conv}:2`));
    const first = await g.claimNext('p', conv, 2);
    expect(first?.started).toBe(true);
    expect(first?.row).toMatchObject({ id: `${conv}:1`, status: 'running', attempts: 1, conversation: conv, payload: { text: `hello \u2400 ${conv}:1` } });
    expect(typeof first?.row.seq).toBe('number');
    expect(first?.row.createdAt).toBeInstanceOf(Date);
    expect(first?.session).toBeNull();
    await g.putSession('p', conv, 'sess-1');
    const prompts = async () => (await g.eventTranscript(`${conv}:1`)).filter((t) => t.kind === 'prompt');
    expect(await prompts()).toMatchObject([{ text: `hello \u2400 ${conv}:1`, profile: 'p', meta: { user: { id: 'u1' }, platform: 'local' } }]);
    // Interrupted by the gateway: back to queued, the attempt not counted, and no second prompt entry.
    expect(await g.interrupt(`${conv}:1`, 'stop')).toBe(true);
    expect(await g.claimNext('p', conv, 2)).toMatchObject({ started: true, session: 'sess-1', row: { attempts: 1 } });
    expect(await prompts()).toHaveLength(1);
    // Out of attempts: returned as it is, not started.
    expect(await g.setStatus(`${conv}:1`, 'queued', 'x')).toBe(true);
    await g.startAttempt(`${conv}:1`);
    const spent = await g.claimNext('p', conv, 2);
    expect(spent).toMatchObject({ started: false, row: { id: `${conv}:1`, attempts: 2, status: 'running' } });
    // Replied: returned for delivery, not started; done: the next event's turn.
    expect(await g.storeReply(`${conv}:1`, { text: 'hi \u0000', files: [], transcript: [{ kind: 'reply', text: 'hi \u0000', meta: { a: 1 } }, { kind: 'notice', text: 'n' }] })).toBe(true);
    expect(await g.storeReply(`${conv}:1`, { text: 'again', files: [], transcript: [{ kind: 'reply', text: 'again' }] })).toBe(false);
    expect((await g.getEvent(`${conv}:1`))?.reply).toBe('hi \u2400');
    expect((await g.eventTranscript(`${conv}:1`)).map((t) => [t.kind, t.text, t.meta, t.profile, t.conversation])).toEqual([
      ['prompt', `hello \u2400 ${conv}:1`, { user: { id: 'u1' }, platform: 'local' }, 'p', conv],
      ['reply', 'hi \u2400', { a: 1 }, 'p', conv],
      ['notice', 'n', null, 'p', conv],
    ]);
    expect(await g.claimNext('p', conv, 2)).toMatchObject({ started: false, row: { status: 'replied' } });
    expect(await g.setStatus(`${conv}:1`, 'delivered')).toBe(true);
    expect(await g.claimNext('p', conv, 2)).toMatchObject({ started: true, row: { id: `${conv}:2`, attempts: 1 } });
    expect(await g.claimNext('p', `${conv}-none`, 2)).toBeUndefined();
  });

  it('migrate is idempotent', async () => {
    await store.migrate();
    await store.migrate();
    expect(await store.agents.list()).toEqual([]);
  });

  it('upsertAwake inserts, then updates the same row', async () => {
    const first = await store.agents.upsertAwake(wake('a1', { wakeMs: 250.6 }));
    expect(first).toMatchObject({
      id: 'a1',
      profile: 'default',
      runtime: 'runsc',
      engineRuntime: 'runsc',
      image: 'agent-vm/agent:1',
      specHash: 'hash-1',
      containerId: 'ctr-a1',
      state: 'running',
      lastWakeMs: 251,
    });
    expect(first.createdAt).toBeInstanceOf(Date);
    expect(first.lastWakeAt).toBeInstanceOf(Date);
    expect(await store.agents.get('a1')).toEqual(first);

    await store.agents.markSleeping('a1');
    await new Promise((r) => setTimeout(r, 20));
    // No profile given: the stored one is kept.
    const { profile: _omitted, ...withoutProfile } = wake('a1', {
      runtime: 'kata',
      engineRuntime: 'kata-runtime',
      specHash: 'hash-2',
      containerId: 'ctr-new',
      wakeMs: 80,
    });
    const second = await store.agents.upsertAwake(withoutProfile);
    expect(second).toMatchObject({
      id: 'a1',
      profile: 'default',
      runtime: 'kata',
      engineRuntime: 'kata-runtime',
      specHash: 'hash-2',
      containerId: 'ctr-new',
      state: 'running',
      lastWakeMs: 80,
    });
    expect(second.createdAt).toEqual(first.createdAt);
    expect(second.updatedAt.getTime()).toBeGreaterThan(first.updatedAt.getTime());
    expect(second.lastWakeAt!.getTime()).toBeGreaterThan(first.lastWakeAt!.getTime());

    const third = await store.agents.upsertAwake(wake('a1', { profile: null, containerId: null }));
    expect(third.profile).toBeNull();
    expect(third.containerId).toBeNull();
    expect(await store.agents.list()).toHaveLength(1);
  });

  it('markSleeping and markDestroyed change state and touch updated_at', async () => {
    const awake = await store.agents.upsertAwake(wake('s1'));
    await new Promise((r) => setTimeout(r, 20));

    expect(await store.agents.markSleeping('s1')).toBe(true);
    const sleeping = await store.agents.get('s1');
    expect(sleeping?.state).toBe('sleeping');
    expect(sleeping!.updatedAt.getTime()).toBeGreaterThan(awake.updatedAt.getTime());
    expect(sleeping?.lastWakeAt).toEqual(awake.lastWakeAt);

    expect(await store.agents.markDestroyed('s1')).toBe(true);
    expect((await store.agents.get('s1'))?.state).toBe('destroyed');

    expect(await store.agents.markSleeping('nope')).toBe(false);
    expect(await store.agents.markDestroyed('nope')).toBe(false);
    expect(await store.agents.get('nope')).toBeUndefined();
  });

  it('list is ordered by id', async () => {
    for (const id of ['charlie', 'alpha', 'bravo']) await store.agents.upsertAwake(wake(id));
    expect((await store.agents.list()).map((a) => a.id)).toEqual(['alpha', 'bravo', 'charlie']);
  });

  it('keeps data across close and reopen, and migrate after reopen is a no-op', async () => {
    await store.agents.upsertAwake(wake('kept'));
    await store.close();
    await store.close();

    store = await openStore(opts);
    await store.migrate();
    expect((await store.agents.get('kept'))?.containerId).toBe('ctr-kept');
  });
});

describe('unreachable database', () => {
  it('fails with db_unreachable and never reveals the password', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'agentvm-store-bad-'));
    try {
      const err = await openStore({ databaseUrl: 'postgres://postgres:Sup3rSecret@127.0.0.1:1/nope', dataDir }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isAgentVmError(err, 'db_unreachable')).toBe(true);
      if (!isAgentVmError(err)) return;
      expect(err.status).toBe(503);
      expect(err.message).toMatch(/^cannot reach the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/nope: \S/);
      expect(err.message).not.toContain('Sup3rSecret');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('a new embedded database', () => {
  it('is created and migrated apart: its tables exist before migrate() runs here', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'agentvm-store-new-'));
    const store = await openStore({ dataDir });
    try {
      expect(store.kind).toBe('pglite');
      // No migrate() in this process yet: the child that created the database applied them all.
      await store.agents.upsertAwake(wake('born-migrated'));
      expect((await store.agents.get('born-migrated'))?.state).toBe('running');
      const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
      const applied = async () => (await store.db.execute(sql`select count(*)::int as n from drizzle.__drizzle_migrations`)) as unknown as { rows: Array<{ n: number }> };
      expect((await applied()).rows[0]?.n).toBe(journal.entries.length);
      await store.migrate();
      expect((await applied()).rows[0]?.n).toBe(journal.entries.length);
    } finally {
      await store.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('prepared statements on the embedded database', () => {
  it('answer as query() does, report errors with their code, and keep out of another transaction', async () => {
    const { PGlite } = await import('@electric-sql/pglite');
    const { preparedQuery } = await import('../src/store/pglite-prepared.js');
    const pg = new PGlite();
    try {
      await pg.exec('create table p (id bigint primary key, at timestamptz not null, doc jsonb, ok boolean, note text)');
      const run = preparedQuery(pg);
      const insert = 'insert into p (id, at, doc, ok, note) values ($1::bigint, $2::timestamptz, $3::jsonb, $4, $5) returning *';
      const at = '2026-12-07T03:00:00.000Z';
      const mine = await run<Record<string, unknown>>(insert, ['1', at, JSON.stringify({ a: [1, 'x'] }), true, null]);
      const theirs = (await pg.query<Record<string, unknown>>('select * from p where id = 1')).rows;
      expect(mine).toEqual(theirs);
      expect(mine[0]).toMatchObject({ doc: { a: [1, 'x'] }, ok: true, note: null });
      expect(mine[0]!.at).toBeInstanceOf(Date);
      // A refused row: the database's error, with its code; the statement runs again afterwards.
      await expect(run(insert, ['1', at, '{}', false, 'dup'])).rejects.toMatchObject({ code: '23505' });
      expect(await run(insert, ['2', at, '{}', false, 'two'])).toHaveLength(1);
      // Another caller's transaction is not entered: the statement waits for it to end.
      let inside = -1;
      const tx = pg.transaction(async (t) => {
        await t.query("insert into p (id, at, note) values (3, now(), 'tx')");
        await new Promise((r) => setTimeout(r, 50));
        inside = (await t.query<{ n: number }>('select count(*)::int as n from p')).rows[0]!.n;
        await t.rollback();
      });
      await new Promise((r) => setTimeout(r, 10));
      await run(insert, ['4', at, '{}', true, 'after']);
      await tx;
      expect(inside).toBe(3);
      expect((await pg.query<{ id: number }>('select id from p order by id')).rows.map((r) => Number(r.id))).toEqual([1, 2, 4]);
    } finally {
      await pg.close();
    }
  });
});
