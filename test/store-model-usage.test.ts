/**
 * The model relay's daily token budget on the database (src/store/model-usage.ts), on PGlite and
 * PostgreSQL: sums per profile and UTC day across providers, atomic adds under concurrency, hostile
 * numbers counted as nothing, and a relay on it refusing a spent budget even after a "restart"
 * (a second relay on the same database).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAgentVmError } from '../src/errors.js';
import { createModelRelay, type ModelBudget, type ModelRelay } from '../src/governance/model-relay/index.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import { modelUsageRepo, type ModelUsageRepo } from '../src/store/model-usage.js';
import type { Store } from '../src/store/index.js';
import { startFakeAnthropic, type FakeProvider } from './fakes/providers/index.js';
import { authHeaders, rawRequest } from './fakes/providers/harness.js';
import { storeBackends } from './helpers/stores.js';

const usage = (input: number, output: number, cacheRead = 0, cacheWrite = 0) => ({
  inputTokens: input,
  outputTokens: output,
  cacheReadTokens: cacheRead,
  cacheWriteTokens: cacheWrite,
  totalTokens: input + output + cacheRead + cacheWrite,
});

describe.each(storeBackends('model-usage'))('model usage on $kind', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  let repo: ModelUsageRepo;

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    repo = modelUsageRepo(store.db);
  });
  afterAll(async () => {
    await close?.();
  });

  it('sums a profile’s day over its providers, keeps days and profiles apart, and lists the breakdown', async () => {
    expect(await repo.used('p1', '2026-01-02')).toBe(0);
    await repo.add('p1', '2026-01-02', 150, { provider: 'anthropic', usage: usage(100, 30, 15, 5) });
    await repo.add('p1', '2026-01-02', 50, { provider: 'anthropic', usage: usage(40, 10) });
    await repo.add('p1', '2026-01-02', 7, { provider: 'openai', usage: usage(5, 2) });
    await repo.add('p1', '2026-01-03', 1000, { provider: 'anthropic', usage: usage(900, 100) });
    await repo.add('p2', '2026-01-02', 99, { provider: 'gemini', usage: usage(90, 9) });
    expect(await repo.used('p1', '2026-01-02')).toBe(207);
    expect(await repo.used('p1', '2026-01-03')).toBe(1000);
    expect(await repo.used('p2', '2026-01-02')).toBe(99);
    expect(await repo.used('p3', '2026-01-02')).toBe(0);
    expect(await repo.list('p1', '2026-01-02')).toEqual([
      { profile: 'p1', day: '2026-01-02', provider: 'anthropic', tokens: 200, inputTokens: 140, outputTokens: 40, cacheReadTokens: 15, cacheWriteTokens: 5, calls: 2 },
      { profile: 'p1', day: '2026-01-02', provider: 'openai', tokens: 7, inputTokens: 5, outputTokens: 2, cacheReadTokens: 0, cacheWriteTokens: 0, calls: 1 },
    ]);
    expect((await repo.list('p1')).map((r) => r.day)).toEqual(['2026-01-02', '2026-01-02', '2026-01-03']);
  });

  it('counts every one of many concurrent adds (one atomic upsert each)', async () => {
    await Promise.all(Array.from({ length: 40 }, (_, i) => repo.add('busy', '2026-02-01', i + 1, { provider: i % 2 ? 'openai' : 'anthropic', usage: usage(i + 1, 0) })));
    expect(await repo.used('busy', '2026-02-01')).toBe((40 * 41) / 2);
    expect((await repo.list('busy')).reduce((n, r) => n + r.calls, 0)).toBe(40);
  });

  it('counts numbers that are not whole and positive as nothing, and refuses a day that is not YYYY-MM-DD', async () => {
    for (const bad of [Number.NaN, -5, Number.POSITIVE_INFINITY]) {
      await repo.add('hostile', '2026-03-01', bad, { provider: 'anthropic', usage: usage(bad, bad, bad, bad) });
    }
    await repo.add('hostile', '2026-03-01', 2.6, { provider: 'anthropic', usage: usage(2.6, 0) });
    expect(await repo.used('hostile', '2026-03-01')).toBe(3);
    expect((await repo.list('hostile'))[0]).toMatchObject({ inputTokens: 3, outputTokens: 0, calls: 4 });
    for (const day of ['2026-3-1', "2026-03-01' or 1=1 --", '']) {
      await expect(repo.used('hostile', day)).rejects.toSatisfy((e: unknown) => isAgentVmError(e, 'model_usage_day_invalid'));
      await expect(repo.add('hostile', day, 1, { provider: 'anthropic', usage: usage(1, 0) })).rejects.toSatisfy((e: unknown) => isAgentVmError(e, 'model_usage_day_invalid'));
    }
  });

  describe('as the relay’s budget', () => {
    let fake: FakeProvider;
    const relays: ModelRelay[] = [];
    beforeAll(async () => {
      fake = await startFakeAnthropic();
    });
    afterAll(async () => {
      for (const r of relays) await r.close();
      await fake?.close();
    });

    async function relayOn(budget: ModelBudget): Promise<{ relay: ModelRelay; token: string }> {
      const relay = await createModelRelay({
        listen: { host: '127.0.0.1', port: 0 },
        upstreams: { anthropic: fake.url, openai: fake.url, gemini: fake.url },
        secrets: createSecretResolver({ env: { KEY: fake.apiKey } }),
        logger: createLogger('silent'),
        budget,
        now: () => Date.parse('2026-04-05T12:00:00Z'),
      });
      relays.push(relay);
      const { token } = relay.issueToken({ profile: 'budgeted', provider: 'anthropic', key: 'secret://KEY', allow: ['claude-sonnet-4-5-20250929'], dailyTokens: 100 });
      relay.beginTurn({ profile: 'budgeted', turnId: 't1' });
      return { relay, token };
    }
    const call = (relay: ModelRelay, token: string) =>
      rawRequest(relay.url, {
        path: '/anthropic/v1/messages',
        headers: { ...authHeaders('anthropic', token), 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5-20250929', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      });

    it('is counted in the database and refuses the next call once spent, in a second relay too (a restarted gateway)', async () => {
      const first = await relayOn(modelUsageRepo(store.db));
      fake.enqueue({ text: 'ok', usage: { input: 90, output: 20 } });
      expect((await call(first.relay, first.token)).status).toBe(200);
      // The add runs after the answer is sent; wait for it to land.
      const deadline = Date.now() + 10_000;
      while ((await repo.used('budgeted', '2026-04-05')) < 110 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(await repo.used('budgeted', '2026-04-05')).toBe(110);
      const refused = await call(first.relay, first.token);
      expect(refused.status).toBe(429);
      expect(refused.body).toContain('daily model budget of this agent is spent (110 of 100 tokens today, UTC)');

      const second = await relayOn(modelUsageRepo(store.db));
      const again = await call(second.relay, second.token);
      expect(again.status).toBe(429);
      expect(fake.requests.filter((r) => r.path === '/v1/messages')).toHaveLength(1);
    });
  });
});
