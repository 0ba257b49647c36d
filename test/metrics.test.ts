/**
 * `GET /metrics` after a scripted run through the whole gateway (router, queue, unit, turns),
 * with the fake sandbox driver (the reference agent as a child process): values, not only names.
 * Turns by outcome, turn and wake histograms, delivery failures by platform and kind, and the
 * state gauges read from the database at scrape time (sandboxes, queue depth, approvals pending).
 * Also: labels stay bounded whatever a caller passes, and the no-op default counts nothing.
 */
import { randomUUID } from 'node:crypto';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleReferenceAgent } from '../agents/reference/bundle.js';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import type { ChannelAdapter } from '../src/adapters/types.js';
import { platformAdapters, startGatewayApp, type Running } from '../src/app.js';
import type { Context } from '../src/context.js';
import { createLogger } from '../src/log.js';
import { createMetrics, MAX_PROFILES, modelRelayMetrics, noopMetrics } from '../src/metrics.js';
import type { FakeDriver } from '../src/sandbox/fake.js';
import { openStore, type Store } from '../src/store/index.js';
import { REFERENCE_AGENT_HOST_BUNDLE, makeFakeDriver } from './helpers/fake.js';
import { tempDir, testConfig } from './helpers/env.js';
import { manifest, writeProfiles } from './helpers/gateway.js';
import { parseMetrics, series } from './helpers/metrics.js';

const P = 'metrics-fake';
/** An agent that exits at once: its starts are restarted (self-healing), then the turn fails. */
const BROKEN = 'metrics-broken';
let store: Store;
let driver: FakeDriver;
let running: Running;
let failProgress = true;

async function send(text: string, conversation = 'c1', profile = P) {
  const event = localEvent(localMessageSchema.parse({ profile, text, conversation }), 'test');
  await running.gateway.intake.accept(event);
  let last = '';
  for await (const o of running.gateway.watcher.watch(event.id)) if (o.kind !== 'progress') last = o.kind;
  return last;
}

async function scrape(): Promise<Map<string, number>> {
  const res = await running.app.request('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return parseMetrics(await res.text());
}

beforeAll(async () => {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
  const profilesDir = tempDir('profiles');
  const dataDir = tempDir('data');
  await writeProfiles(profilesDir, [manifest(P, { turn: { timeoutSeconds: 20 } }), manifest(BROKEN, { agent: { command: ['node', '-e', 'process.exit(3)'] } })]);
  const config = testConfig({ AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir });
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
  // The fake driver keeps its own snapshots: the context's snapshot store (when it has one) is not used.
  const ctx = { config, logger: createLogger('silent'), store, driver, close: async () => undefined } as Omit<Context, 'snapshots'> as Context;
  // The local channel, whose progress messages fail to deliver while `failProgress` is set.
  const adapters: typeof platformAdapters = (cfg, deps) =>
    platformAdapters(cfg, deps).map((a): ChannelAdapter => ({
      ...a,
      platform: a.platform,
      send: async (m) => {
        if (failProgress && m.kind === 'progress') throw new Error('the platform is down');
        return a.send(m);
      },
    }));
  running = await startGatewayApp(ctx, { units: 'all', adapters });
});

afterAll(async () => {
  await running?.stop();
  await driver?.close();
  await store?.close();
});

describe('metrics after a scripted run (fake sandbox driver)', () => {
  it('counts turns by outcome with their durations, wakes by kind, and delivery failures by platform and kind', async () => {
    expect(await send('echo one')).toBe('reply');
    expect(await send('progress 2')).toBe('reply');
    failProgress = false;
    expect(await send('crash')).toBe('notice');
    expect(await send('echo after the crash')).toBe('reply');

    const m = await scrape();
    expect(series(m, 'agentvm_turns_total', { profile: P, platform: 'local', outcome: 'replied' })).toBe(3);
    expect(series(m, 'agentvm_turns_total', { profile: P, platform: 'local', outcome: 'failed' })).toBe(1);
    expect(series(m, 'agentvm_turn_duration_seconds_count', { profile: P, outcome: 'replied' })).toBe(3);
    expect(series(m, 'agentvm_turn_duration_seconds_sum', { profile: P, outcome: 'replied' })).toBeGreaterThan(0);
    // The +Inf bucket holds every observation; the smallest bucket not more than that.
    expect(series(m, 'agentvm_turn_duration_seconds_bucket', { profile: P, outcome: 'replied', le: '+Inf' })).toBe(3);
    // First wake created the sandbox; after the crash the stopped sandbox was started again.
    expect(series(m, 'agentvm_wake_duration_seconds_count', { profile: P, kind: 'created', pool: 'none' })).toBe(1);
    expect(series(m, 'agentvm_wake_duration_seconds_count', { profile: P, kind: 'started', pool: 'none' })).toBeGreaterThanOrEqual(1);
    // Two progress updates failed to reach the platform (and the turns still answered).
    expect(series(m, 'agentvm_delivery_failures_total', { platform: 'local', kind: 'progress' })).toBeGreaterThanOrEqual(1);
    expect(series(m, 'agentvm_delivery_failures_total', { platform: 'local', kind: 'reply' })).toBeUndefined();
    // Recorded state, read at scrape time.
    expect(series(m, 'agentvm_sandboxes', { state: 'running' })).toBe(1);
    expect(series(m, 'agentvm_approvals_pending')).toBe(0);
    // Process defaults carry the prefix too.
    expect([...m.keys()].some((k) => k.startsWith('agentvm_process_cpu'))).toBe(true);
    // No series carries a conversation or event id.
    expect([...m.keys()].filter((k) => k.includes('local:') || k.includes('c1'))).toEqual([]);
  });

  it('reads queue depth and pending approvals from the database at scrape time', async () => {
    // A profile with no unit in this process: its events wait.
    for (let i = 0; i < 3; i++) {
      await store.gateway.insertEvent({ id: `local:${randomUUID()}`, platform: 'local', profile: 'elsewhere', conversation: `local:elsewhere:q${i}`, status: 'queued', payload: {} });
    }
    await store.approvals.insert({ id: randomUUID(), profile: P, sessionKey: 's', eventId: null, tool: 'srv.add', argsHash: 'h', approvers: [], requestedAt: new Date(), expiresAt: new Date(Date.now() + 60_000) });
    await store.approvals.insert({ id: randomUUID(), profile: P, sessionKey: 's', eventId: null, tool: 'srv.add', argsHash: 'h', approvers: [], requestedAt: new Date(Date.now() - 120_000), expiresAt: new Date(Date.now() - 60_000) });
    const m = await scrape();
    expect(series(m, 'agentvm_queue_depth', { profile: 'elsewhere' })).toBe(3);
    expect(series(m, 'agentvm_queue_depth', { profile: P })).toBeUndefined();
    expect(series(m, 'agentvm_approvals_pending')).toBe(1);
  });

  it('sleeps the agent through the operator control and counts the snapshot', async () => {
    const unit = running.gateway.units.get(P)!;
    await driver.writeFiles(P, 'notes', [{ name: 'kept.txt', data: Buffer.from('kept across sleep') }]);
    expect(await unit.sleep('test')).toBe(true);
    const m = await scrape();
    expect(series(m, 'agentvm_sandboxes', { state: 'sleeping' })).toBe(1);
    expect(series(m, 'agentvm_sandboxes', { state: 'running' })).toBeUndefined();
    expect(series(m, 'agentvm_snapshot_bytes', { profile: P })).toBeGreaterThanOrEqual('kept across sleep'.length);
    expect(series(m, 'agentvm_snapshot_age_seconds', { profile: P })).toBeGreaterThanOrEqual(0);
    await unit.wake();
    expect(series(await scrape(), 'agentvm_sandboxes', { state: 'running' })).toBe(1);
  });

  it('counts self-healing restarts of an agent that does not start, and the failed turn', async () => {
    expect(await send('echo never', 'c2', BROKEN)).toBe('notice');
    const m = await scrape();
    expect(series(m, 'agentvm_self_healing_escalations_total', { profile: BROKEN, level: 'restart' })).toBe(2);
    expect(series(m, 'agentvm_turns_total', { profile: BROKEN, platform: 'local', outcome: 'failed' })).toBe(1);
  });
});

describe('the Metrics seam', () => {
  it('keeps labels bounded: ids that are not ids, unknown platforms and profiles past the cap are `other`', async () => {
    const registry = new Registry();
    const metrics = createMetrics(registry);
    metrics.turnFinished('bad id\n{x="1"}', 'irc', 'replied', 1);
    for (let i = 0; i < MAX_PROFILES + 5; i++) metrics.toolCall(`p${i}`, 'allowed');
    metrics.egress('p1', 'deny');
    metrics.approvalSettled('p1', 'timeout');
    metrics.selfHealing('p1', 'restart');
    const relay = modelRelayMetrics(metrics);
    await relay({ type: 'usage', profile: 'p1', provider: 'anthropic', usage: { inputTokens: 10, outputTokens: 5, cacheReadTokens: 2, cacheWriteTokens: 0 } });
    await relay({ type: 'call', profile: 'p1', provider: 'anthropic' });
    const m = parseMetrics(await registry.metrics());
    expect(series(m, 'agentvm_turns_total', { profile: 'other', platform: 'other', outcome: 'replied' })).toBe(1);
    expect(series(m, 'agentvm_tool_calls_total', { profile: 'other', decision: 'allowed' })).toBe(5);
    expect([...m.keys()].filter((k) => k.startsWith('agentvm_tool_calls_total')).length).toBe(MAX_PROFILES + 1);
    expect(series(m, 'agentvm_egress_attempts_total', { profile: 'p1', decision: 'deny' })).toBe(1);
    expect(series(m, 'agentvm_approvals_total', { profile: 'p1', outcome: 'timeout' })).toBe(1);
    expect(series(m, 'agentvm_self_healing_escalations_total', { profile: 'p1', level: 'restart' })).toBe(1);
    expect(series(m, 'agentvm_model_tokens_total', { profile: 'p1', provider: 'anthropic', kind: 'input' })).toBe(10);
    expect(series(m, 'agentvm_model_tokens_total', { profile: 'p1', provider: 'anthropic', kind: 'output' })).toBe(5);
    expect(series(m, 'agentvm_model_tokens_total', { profile: 'p1', provider: 'anthropic', kind: 'cache_read' })).toBe(2);
    // A state gauge without sources is absent, not zero.
    expect(m.has('agentvm_queue_depth')).toBe(false);
  });

  it('the no-op default accepts every call and registers nothing', () => {
    const registry = new Registry();
    noopMetrics.turnFinished('p', 'local', 'failed');
    noopMetrics.wake('p', 'created', 10, 'none');
    noopMetrics.deliveryFailed('slack', 'reply');
    expect(registry.getMetricsAsArray()).toEqual([]);
  });
});
