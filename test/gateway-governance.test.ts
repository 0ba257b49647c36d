/**
 * Governance through the whole gateway: a profile with tools gets the gateway's MCP endpoint in
 * its ACP session (over its own internal network), the allowlist is enforced there, secrets stay
 * gateway-side and are redacted from replies, and approvals time out as denials.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';

const SECRET = 'up-token-3f9c1d7e5a2b4c6d';
const tooly = profileId('gov-tools');
let upstream: FakeUpstream;
let gw: TestGateway;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  gw = await startTestGateway({
    manifests: [
      manifest(tooly, {
        // Under runsc the pids limit also counts the sandbox kernel's threads; a node agent doing
        // network calls needs headroom.
        limits: { cpus: 1, memoryMiB: 512, pids: 512 },
        tools: {
          servers: [{ name: 'srv', url: upstream.url, headers: { Authorization: 'Bearer secret://UP_TOKEN' } }],
          allow: ['srv.echo', 'srv.whoami', 'srv.add'],
          approval: ['srv.add'],
        },
        secrets: { UP_TOKEN: 'secret://UP_TOKEN' },
      }),
    ],
    env: { AGENTVM_SECRET_UP_TOKEN: SECRET },
    approvalTimeoutMs: 1500,
  });
});

afterAll(async () => {
  await gw?.close();
  await upstream?.close();
});

const say = async (text: string) => replyText((await gw.send({ profile: tooly, text, conversation: 'tools' })).outcome);

describe('tools through the gateway', () => {
  it('hands the agent only allowlisted tools; a denied call never reaches the upstream; both are audited', async () => {
    expect(await say('mcp srv__echo {"text":"hello via the gateway"}')).toBe('hello via the gateway');
    expect(await say('mcp srv__delete_everything {}')).toBe('mcp error -32602: Unknown tool: srv__delete_everything');
    expect(upstream.calls.get('delete_everything') ?? 0).toBe(0);
    expect(upstream.calls.get('echo')).toBe(1);
    const audit = await gw.running.gateway.audit.tail(200);
    const calls = audit.filter((a) => a.action === 'tool.call' && a.profile === tooly);
    expect(calls.map((c) => [c.decision, c.subject])).toEqual(expect.arrayContaining([['allow', 'srv.echo'], ['deny', 'srv__delete_everything']]));
    for (const c of calls) expect((c.data as { policyHash?: string }).policyHash).toMatch(/^[0-9a-f]{64}$/);
    // The sandbox is on its own internal network, not "none": its only peer is the gateway.
    const st = await gw.ctx.driver.exec(tooly, ['node', '-e', 'console.log(Object.keys(require("os").networkInterfaces()).join(","))'], { timeoutMs: 10_000 });
    expect(st.stdout.trim().split(',').length).toBeGreaterThan(1);
  });

  it('uses the secret gateway-side only and redacts it from the reply', async () => {
    // The upstream echoes the Authorization header it received: the proxy sent the real secret…
    expect(await say('mcp srv__whoami {}')).toBe('you sent: Bearer [redacted:UP_TOKEN]');
    expect(upstream.authSeen).toContain(`Bearer ${SECRET}`);
    // …and nothing in the sandbox ever held it.
    const env = await gw.ctx.driver.exec(tooly, ['sh', '-c', 'cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" "\\n"; find /workspace /tmp -type f -exec cat {} + 2>/dev/null'], { timeoutMs: 10_000 });
    expect(env.stdout).not.toContain(SECRET);
  });

  it('denies a call that needs approval when nobody answers, and runs it when a person approves', async () => {
    expect(await say('mcp srv__add {"a":1,"b":2}')).toMatch(/approval|denied/i);
    expect(upstream.calls.get('add') ?? 0).toBe(0);

    const e = localEvent(localMessageSchema.parse({ profile: tooly, text: 'mcp srv__add {"a":2,"b":3}', conversation: 'tools' }), 'test');
    await gw.running.gateway.intake.accept(e);
    const deadline = Date.now() + 10_000;
    while ((await gw.running.gateway.approvals.pending()).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const [pending] = await gw.running.gateway.approvals.pending();
    // The person who asked may answer through the channel; the local channel's user is the caller.
    expect(pending).toMatchObject({ profile: tooly, tool: 'srv.add', eventId: e.id, approvers: [`local:${e.user.id}`] });
    // The request is posted to the conversation through the local API.
    const res = await gw.running.app.request(`/v1/approvals/${pending!.id}`, {
      method: 'POST',
      headers: { authorization: 'Bearer no-token-configured', 'content-type': 'application/json' },
      body: JSON.stringify({ decision: 'approved' }),
    });
    expect(res.status).toBe(403); // the local API is closed without AGENTVM_API_TOKEN
    expect(await gw.running.gateway.approvals.answer(pending!.id, 'approved', { platform: 'slack', user: 'USOMEONE' })).toMatchObject({ status: 'not_allowed' });
    expect(await gw.running.gateway.approvals.answer(pending!.id, 'approved')).toEqual({ status: 'answered' });
    let out = '';
    const progress: string[] = [];
    for await (const o of gw.running.gateway.watcher.watch(e.id)) {
      if (o.kind === 'progress') progress.push(o.text);
      else out = replyText(o);
    }
    expect(out).toBe('5');
    expect(progress.join('\n')).toContain('Approval needed: the agent wants to call srv.add with {"a":2,"b":3}');
  });
});
