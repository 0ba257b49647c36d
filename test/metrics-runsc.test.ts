/**
 * `GET /metrics` after a scripted run with real runsc sandboxes: the reference agent calls an
 * allowed tool, an unknown one and one that needs approval (approved through the operator API),
 * tries an allowlisted and a refused egress target, is put to sleep through the operator API
 * (snapshot) and woken again by a message. The scrape is checked for values: tool calls by
 * decision, approvals by outcome, egress attempts by decision, wakes by kind, turns, snapshot.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { parseMetrics, series } from './helpers/metrics.js';

const ADMIN = 'metrics-admin-token-0123456789';
const P = profileId('metrics');
/** A host service the profile may reach through its egress relay, on this machine's own LAN address. */
const lanAddress = Object.entries(os.networkInterfaces())
  .filter(([name]) => !/^(docker|br-|avm|veth)/.test(name))
  .flatMap(([, addrs]) => addrs ?? [])
  .find((a) => a.family === 'IPv4' && !a.internal)?.address;
let upstream: FakeUpstream;
let target: http.Server;
let targetPort: number;
let gw: TestGateway;
let n = 0;

// Each message in a conversation of its own: a fresh ACP session and tool token per call.
const say = async (text: string) => replyText((await gw.send({ profile: P, text, conversation: `m${n++}` })).outcome);
const auth = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };

async function scrape(): Promise<Map<string, number>> {
  return parseMetrics(await (await gw.running.app.request('/metrics')).text());
}

beforeAll(async () => {
  upstream = await startFakeUpstream();
  target = http.createServer((_req, res) => res.end('outside'));
  await new Promise<void>((r) => target.listen(0, '0.0.0.0', r));
  targetPort = (target.address() as AddressInfo).port;
  gw = await startTestGateway({
    manifests: [
      manifest(P, {
        limits: { cpus: 1, memoryMiB: 512, pids: 512 },
        tools: { servers: [{ name: 'srv', url: upstream.url }], allow: ['srv.echo', 'srv.add'], approval: ['srv.add'] },
        egress: { allow: [`${lanAddress}:${targetPort}`] },
      }),
    ],
    env: { AGENTVM_ADMIN_TOKEN: ADMIN },
    approvalTimeoutMs: 60_000,
  });
});

afterAll(async () => {
  await gw?.close();
  await upstream?.close();
  target?.closeAllConnections();
  await new Promise((r) => target?.close(r));
});

describe('metrics after a scripted run (runsc)', () => {
  it('counts tool calls, approvals, egress, wakes, turns and the snapshot with their values', async () => {
    expect(await say('mcp srv__echo {"text":"counted"}')).toBe('counted');
    expect(await say('mcp srv__delete_everything {}')).toMatch(/Unknown tool/);

    const e = localEvent(localMessageSchema.parse({ profile: P, text: 'mcp srv__add {"a":2,"b":3}', conversation: `m${n++}` }), 'test');
    await gw.running.gateway.intake.accept(e);
    const deadline = Date.now() + 30_000;
    while ((await gw.running.gateway.approvals.pending()).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(series(await scrape(), 'agentvm_approvals_pending')).toBe(1);
    const [pending] = await gw.running.gateway.approvals.pending();
    const answered = await gw.running.app.request(`/v1/approvals/${pending!.id}`, { method: 'POST', headers: auth, body: '{"decision":"approved"}' });
    expect(answered.status).toBe(200);
    let added = '';
    for await (const o of gw.running.gateway.watcher.watch(e.id)) if (o.kind !== 'progress') added = replyText(o);
    expect(added).toBe('5');

    const connect = (t: string) =>
      say(
        `sh node -e 'const h=require("http");const p=new URL(process.env.HTTPS_PROXY);h.request({host:p.hostname,port:p.port,method:"CONNECT",path:process.argv[1]}).on("connect",r=>{console.log("status "+r.statusCode);process.exit(0)}).on("response",r=>{console.log("status "+r.statusCode);process.exit(0)}).on("error",e=>console.log("error "+e.code)).end()' ${t}`,
      );
    expect(await connect(`${lanAddress}:${targetPort}`)).toMatch(/^status 200$/m);
    expect(await connect('example.com:443')).toMatch(/^status 403$/m);

    // Asleep through the operator API (snapshot + stop), then woken by the next message.
    const slept = await gw.running.app.request(`/v1/agents/${P}/sleep`, { method: 'POST', headers: auth });
    expect(await slept.json()).toEqual({ id: P, action: 'sleep', detail: 'asleep' });
    const asleep = await scrape();
    expect(series(asleep, 'agentvm_sandboxes', { state: 'sleeping' })).toBe(1);
    expect(series(asleep, 'agentvm_snapshot_bytes', { profile: P })).toBeGreaterThan(0);
    expect(await say('echo awake again')).toBe('awake again');

    const m = await scrape();
    expect(series(m, 'agentvm_tool_calls_total', { profile: P, decision: 'allowed' })).toBe(2);
    expect(series(m, 'agentvm_tool_calls_total', { profile: P, decision: 'denied' })).toBe(1);
    expect(series(m, 'agentvm_tool_calls_total', { profile: P, decision: 'approval' })).toBe(1);
    expect(series(m, 'agentvm_approvals_total', { profile: P, outcome: 'approved' })).toBe(1);
    expect(series(m, 'agentvm_approvals_pending')).toBe(0);
    expect(series(m, 'agentvm_egress_attempts_total', { profile: P, decision: 'allow' })).toBe(1);
    expect(series(m, 'agentvm_egress_attempts_total', { profile: P, decision: 'deny' })).toBe(1);
    expect(series(m, 'agentvm_turns_total', { profile: P, platform: 'local', outcome: 'replied' })).toBe(6);
    expect(series(m, 'agentvm_turn_duration_seconds_count', { profile: P, outcome: 'replied' })).toBe(6);
    expect(series(m, 'agentvm_wake_duration_seconds_count', { profile: P, kind: 'created', pool: 'none' })).toBe(1);
    expect(series(m, 'agentvm_wake_duration_seconds_count', { profile: P, kind: 'started', pool: 'none' })).toBeGreaterThanOrEqual(1);
    expect(series(m, 'agentvm_sandboxes', { state: 'running' })).toBe(1);
    expect(series(m, 'agentvm_delivery_failures_total', { platform: 'local', kind: 'reply' })).toBeUndefined();
  });
});
