/**
 * The channels' health in `/metrics` (issue 14): a platform served `--degraded` with refused
 * credentials is unhealthy there as in `/readyz` (`agentvm_channel_unhealthy`), and every delivery
 * step an adapter reports failed (`onDeliveryFailure`: a refused file, a missing scope, a retried
 * post) is counted by platform, kind, step, code and whether a note reached the thread
 * (`agentvm_delivery_step_failures_total`), beside the gateway's count of failed sends.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChannelHealth } from '../src/adapters/health.js';
import { startGatewayApp } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { registerChannelMetrics } from '../src/metrics.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { createSnapshotStore } from '../src/sandbox/snapshots/index.js';
import { openStore, type Store } from '../src/store/index.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { tempDir, testConfig } from './helpers/env.js';
import { makeFakeDriver } from './helpers/fake.js';
import { parseMetrics, series } from './helpers/metrics.js';

describe('channel metrics', () => {
  it('counts reported delivery step failures by platform, kind, step, code and shown; unhealthy platforms as 1, served healthy ones as 0', async () => {
    const registry = new Registry();
    const channels = createChannelHealth();
    registerChannelMetrics(registry, { platforms: () => ['slack', 'discord', 'clickup'], channels });
    channels.deliveryFailed({ platform: 'slack', kind: 'reply', step: 'file', code: 'missing_scope', retryable: false, shown: true });
    channels.deliveryFailed({ platform: 'slack', kind: 'reply', step: 'file', code: 'missing_scope', retryable: false, shown: true });
    channels.deliveryFailed({ platform: 'discord', kind: 'reply', step: 'text', code: 'HTTP 503', retryable: true, shown: false });
    channels.credentials({ ok: false, platform: 'clickup', setting: 'CLICKUP_TOKEN', reason: 'refused', transient: false });
    const m = parseMetrics(await registry.metrics());
    expect(series(m, 'agentvm_delivery_step_failures_total', { platform: 'slack', kind: 'reply', step: 'file', code: 'missing_scope', shown: 'true' })).toBe(2);
    expect(series(m, 'agentvm_delivery_step_failures_total', { platform: 'discord', kind: 'reply', step: 'text', code: 'HTTP 503', shown: 'false' })).toBe(1);
    expect(series(m, 'agentvm_channel_unhealthy', { platform: 'clickup' })).toBe(1);
    expect(series(m, 'agentvm_channel_unhealthy', { platform: 'slack' })).toBe(0);
    // A later good check clears it; counts only grow.
    channels.credentials({ ok: true, platform: 'clickup', identity: 'bot' });
    channels.deliveryFailed({ platform: 'slack', kind: 'reply', step: 'file', code: 'missing_scope', retryable: false, shown: true });
    const again = parseMetrics(await registry.metrics());
    expect(series(again, 'agentvm_channel_unhealthy', { platform: 'clickup' })).toBe(0);
    expect(series(again, 'agentvm_delivery_step_failures_total', { platform: 'slack', kind: 'reply', step: 'file', code: 'missing_scope', shown: 'true' })).toBe(3);
  });

  describe('through the app', () => {
    let slack: FakeSlack;
    let store: Store;
    let driver: FakeDriver;
    let dataDir: string;

    beforeAll(async () => {
      slack = await startFakeSlack();
      dataDir = tempDir('channel-metrics');
      await mkdir(path.join(dataDir, 'profiles'), { recursive: true });
      store = await openStore({ dataDir });
      await store.migrate();
      driver = makeFakeDriver();
    });
    afterAll(async () => {
      await driver?.close();
      await store?.close();
      await slack?.close();
      await rm(dataDir, { recursive: true, force: true });
    });

    it('shows a platform served --degraded as unhealthy in /metrics, as /readyz does', async () => {
      const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: path.join(dataDir, 'profiles'), SLACK_SIGNING_SECRET: 's', SLACK_BOT_TOKEN: 'xoxb-wrong', SLACK_API_URL: slack.url });
      const ctx: Context = { config, logger: createLogger('silent'), store, driver, snapshots: createSnapshotStore(config.snapshots, dataDir), close: async () => undefined };
      const running = await startGatewayApp(ctx, { units: [], credentials: 'degraded' });
      try {
        const m = parseMetrics(await (await running.app.request('/metrics')).text());
        expect(series(m, 'agentvm_channel_unhealthy', { platform: 'slack' })).toBe(1);
        running.channels.deliveryFailed({ platform: 'slack', kind: 'notice', step: 'text', code: 'invalid_auth', retryable: false, shown: false });
        const after = parseMetrics(await (await running.app.request('/metrics')).text());
        expect(series(after, 'agentvm_delivery_step_failures_total', { platform: 'slack', kind: 'notice', step: 'text', code: 'invalid_auth', shown: 'false' })).toBe(1);
      } finally {
        await running.stop();
      }
    });
  });
});
