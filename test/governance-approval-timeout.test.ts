/**
 * One approval timer (issue 11.9): AGENTVM_APPROVAL_TIMEOUT_SECONDS is the broker's deadline and the
 * proxy sets none of its own, so the call is denied and the posted prompt marked expired together.
 * A call the agent abandons, or whose turn ends, settles its request at once (no button stays live
 * for a call that is gone), and a request that ends before its prompt was even posted still gets
 * its prompt updated.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApprovalOutcome, ApprovalPrompt, ChannelAdapter, Platform } from '../src/adapters/types.js';
import { loadConfig } from '../src/config.js';
import { createGatewayApprovals } from '../src/gateway/approvals.js';
import type { Router } from '../src/gateway/router.js';
import { createTurnSignals } from '../src/gateway/watch.js';
import { createApprovalBroker, type ApprovalBroker, type ApprovalDecision } from '../src/governance/approvals.js';
import { createAuditLog } from '../src/governance/audit.js';
import { createMcpProxy, type McpProxy } from '../src/governance/mcp-proxy.js';
import { validateProfile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createLogger } from '../src/log.js';
import type { Store } from '../src/store/index.js';
import { mcpClient, startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { storeBackends } from './helpers/stores.js';

const logger = createLogger('silent');
const text = (r: unknown) => ((r as { content: Array<{ text?: string }> }).content ?? []).map((c) => c.text ?? '').join('');

describe('AGENTVM_APPROVAL_TIMEOUT_SECONDS', () => {
  it('defaults to 300 s and names itself when wrong', () => {
    expect(loadConfig({}).approvalTimeoutSeconds).toBe(300);
    expect(loadConfig({ AGENTVM_APPROVAL_TIMEOUT_SECONDS: '45' }).approvalTimeoutSeconds).toBe(45);
    for (const bad of ['0', '-5', '1.5', 'soon', '90000']) {
      expect(() => loadConfig({ AGENTVM_APPROVAL_TIMEOUT_SECONDS: bad })).toThrow(/AGENTVM_APPROVAL_TIMEOUT_SECONDS/);
    }
  });
});

describe.each(storeBackends('approval-timeout'))('one approval timer ($kind)', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  let upstream: FakeUpstream;
  let proxy: McpProxy;
  let client: Client;
  let broker: ApprovalBroker;
  let timeoutMs = 700;
  const settled: Array<{ decision: ApprovalDecision; by: string | null; at: number }> = [];
  const requested: string[] = [];

  beforeAll(async () => {
    ({ store, close } = await backend.open());
    upstream = await startFakeUpstream();
    // The broker reads `timeoutMs` per request through this getter-backed object.
    broker = createApprovalBroker({
      store: store.approvals,
      get timeoutMs() {
        return timeoutMs;
      },
      pollMs: 50,
      onRequest: (r) => requested.push(r.id),
      onSettled: (_r, decision, by) => settled.push({ decision, by, at: performance.now() }),
    });
    const { profile } = validateProfile(
      { version: 1, id: 'appr', name: 'appr', agent: { command: ['x'] }, risk: 'L1', bindings: [{ platform: 'local', channels: ['a'] }], tools: { servers: [{ name: 'srv', url: upstream.url }], allow: ['srv.add'], approval: ['srv.add'] } },
      'appr.yaml',
    );
    proxy = await createMcpProxy({
      listen: { host: '127.0.0.1', port: 0 }, pins: store.pins, audit: createAuditLog(store.audit), logger, upstreamTimeoutMs: 5000,
      secrets: createSecretResolver({ env: {} }), approve: broker.request,
    });
    await proxy.register(profile!);
    client = await mcpClient(proxy.sessionEndpoint({ profile: 'appr', sessionKey: 's' }));
  });
  afterAll(async () => {
    await client?.close().catch(() => undefined);
    await broker?.close();
    await proxy?.close();
    await upstream?.close();
    await close?.();
  });

  it('denies the call and expires the prompt at the same moment, on the configured deadline', async () => {
    settled.length = 0;
    const t0 = performance.now();
    const r = await client.callTool({ name: 'srv__add', arguments: { a: 1, b: 2 } });
    const ended = performance.now();
    expect(text(r)).toBe('denied: approval timed out: nobody answered in time');
    expect(ended - t0).toBeGreaterThanOrEqual(timeoutMs - 50);
    expect(settled).toHaveLength(1);
    expect(settled[0]).toMatchObject({ decision: 'timeout', by: null });
    expect(Math.abs(settled[0]!.at - ended)).toBeLessThan(1000);
    expect(upstream.calls.get('add') ?? 0).toBe(0);
  });

  it('settles the request as soon as the agent abandons the call, instead of leaving its buttons live', async () => {
    settled.length = 0;
    timeoutMs = 60_000;
    const ac = new AbortController();
    const call = client.callTool({ name: 'srv__add', arguments: { a: 1, b: 2 } }, undefined, { signal: ac.signal }).catch((e: unknown) => e);
    const before = requested.length;
    while (requested.length === before) await new Promise((res) => setTimeout(res, 10));
    const id = requested.at(-1)!;
    const t0 = performance.now();
    ac.abort();
    await call;
    while (settled.length === 0 && performance.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 10));
    expect(settled[0]).toMatchObject({ decision: 'denied', by: 'system:cancelled' });
    expect(settled[0]!.at - t0).toBeLessThan(2000);
    expect(await store.approvals.get(id)).toMatchObject({ status: 'denied', answeredBy: 'system:cancelled' });
    expect(await broker.answer(id, 'approved')).toEqual({ status: 'unknown' });
    expect(upstream.calls.get('add') ?? 0).toBe(0);
    timeoutMs = 700;
  });

  it('ends the wait when the turn ends (its token released), and the prompt with it', async () => {
    settled.length = 0;
    timeoutMs = 60_000;
    const ep = proxy.sessionEndpoint({ profile: 'appr', sessionKey: 's2', turnId: 'ev-2' });
    const c = await mcpClient(ep);
    const before = requested.length;
    const call = c.callTool({ name: 'srv__add', arguments: { a: 2, b: 2 } }).then(text, (e: unknown) => String(e));
    while (requested.length === before) await new Promise((res) => setTimeout(res, 10));
    const t0 = performance.now();
    ep.release();
    expect(await call).toBe('denied: approval denied: the call was cancelled before anyone answered');
    expect(settled[0]).toMatchObject({ decision: 'denied', by: 'system:cancelled' });
    expect(settled[0]!.at - t0).toBeLessThan(2000);
    await c.close().catch(() => undefined);
    timeoutMs = 700;
  });

  it('updates a prompt whose request ended before the prompt was posted', async () => {
    const conversation = `slack:C1:${randomUUID()}`;
    const eventId = `slack:Ev${randomUUID()}`;
    await store.gateway.insertEvent({ id: eventId, platform: 'slack', profile: 'appr', conversation, status: 'queued', payload: { platform: 'slack', replyTo: '1.2', user: { id: 'U1' } } });
    const log: string[] = [];
    const adapter: ChannelAdapter = {
      platform: 'slack',
      async send() {},
      async askApproval(p: ApprovalPrompt) {
        await new Promise((res) => setTimeout(res, 150)); // a slow platform API
        log.push(`posted ${p.id}`);
      },
      async approvalSettled(p: ApprovalPrompt, o: ApprovalOutcome) {
        log.push(`settled ${p.id} ${o.decision}`);
      },
    };
    const gw = createGatewayApprovals({
      store,
      router: () => ({ profiles: new Map() }) as unknown as Router,
      adapters: new Map<Platform, ChannelAdapter>([['slack', adapter]]),
      signals: createTurnSignals(),
      logger,
      timeoutMs: 1,
    });
    expect(await gw.request({ profile: 'appr', sessionKey: conversation, tool: 'srv.add', argsHash: 'h' })).toEqual({ decision: 'timeout', by: null });
    const deadline = Date.now() + 3000;
    while (log.length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
    expect(log).toHaveLength(2);
    expect(log[0]).toMatch(/^posted /);
    expect(log[1]).toBe(`${log[0]!.replace('posted', 'settled')} timeout`);
    await gw.close();
  });
});
