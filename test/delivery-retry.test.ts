/**
 * A reply the platform will not take yet (a retryable send failure) is retried with backoff and
 * counted (issue 14): through the real gateway (PGlite, unit, the reference agent on the fake
 * driver), a channel whose `send` of the reply fails retryably three times is sent the reply again
 * after growing waits (1 s, 2 s, 4 s), each failure is counted in `agentvm_delivery_failures_total`,
 * and the reply then arrives once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import type { ChannelAdapter } from '../src/adapters/types.js';
import { platformAdapters, startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { AgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { openStore, type Store } from '../src/store/index.js';
import { tempDir, testConfig } from './helpers/env.js';
import { makeFakeDriver, REFERENCE_AGENT_HOST_BUNDLE } from './helpers/fake.js';
import { manifest, writeProfiles } from './helpers/gateway.js';
import { parseMetrics, series } from './helpers/metrics.js';
import { until } from './helpers/wait.js';

const P = 'retry-fake';
const FAILURES = 3;
let running: Running;
let store: Store;
let driver: FakeDriver;
/** When the gateway tried to send each reply. */
const tries: number[] = [];

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  const profilesDir = tempDir('profiles');
  const dataDir = tempDir('data');
  await writeProfiles(profilesDir, [manifest(P)]);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir });
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
  const ctx: Context = { config, logger: createLogger('silent'), store, driver, snapshots: driver.snapshots, close: async () => undefined };
  running = await startGatewayApp(ctx, {
    units: 'all',
    // The local channel, whose replies fail retryably the first FAILURES times (a platform briefly down).
    adapters: (cfg, deps) =>
      platformAdapters(cfg, deps).map((a): ChannelAdapter => {
        if (a.platform !== 'local') return a;
        const send = a.send.bind(a);
        return Object.assign(Object.create(a) as ChannelAdapter, {
          platform: a.platform,
          routes: a.routes,
          async send(m: Parameters<ChannelAdapter['send']>[0]) {
            if (m.kind === 'reply') {
              tries.push(performance.now());
              if (tries.length <= FAILURES) throw new AgentVmError('platform_unavailable', 'the platform is down for now', { status: 503, retryable: true });
            }
            return send(m);
          },
        });
      }),
  });
});
afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
});

describe('delivery retries', () => {
  it('sends a refused reply again after growing waits, counts each failure, and delivers it once', async () => {
    const event = localEvent(localMessageSchema.parse({ profile: P, text: 'echo eventually', conversation: 'retry' }), 'test');
    await running.gateway.intake.accept(event);
    await until('the reply delivered', async () => ((await store.gateway.getEvent(event.id))?.status === 'delivered' ? true : undefined), { timeoutMs: 40_000, everyMs: 100 });
    expect(tries).toHaveLength(FAILURES + 1);
    const gaps = tries.slice(1).map((t, i) => t - tries[i]!);
    // 1 s, 2 s, 4 s (timers: never early; late by at most the machine's load).
    expect(gaps[0]).toBeGreaterThanOrEqual(950);
    expect(gaps[1]).toBeGreaterThanOrEqual(1900);
    expect(gaps[2]).toBeGreaterThanOrEqual(3800);
    expect(gaps[2]! - gaps[0]!).toBeGreaterThan(2000);
    expect((await store.gateway.getEvent(event.id))?.reply).toBe('eventually');
    const m = parseMetrics(await (await running.app.request('/metrics')).text());
    expect(series(m, 'agentvm_delivery_failures_total', { platform: 'local', kind: 'reply' })).toBe(FAILURES);
  }, 60_000);
});
