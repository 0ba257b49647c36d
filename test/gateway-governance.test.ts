/**
 * Governance through the whole gateway: a profile with tools gets the gateway's MCP endpoint in
 * its ACP session (over its own internal network), the allowlist is enforced there, secrets stay
 * gateway-side and are redacted from replies, and approvals time out as denials.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localEvent, localMessageSchema } from '../src/adapters/local/index.js';
import { signSlackRequest } from '../src/adapters/slack/index.js';
import { startFakeSlack, type FakeSlack } from './fakes/slack-api.js';
import { startFakeUpstream, type FakeUpstream } from './fakes/mcp-upstream.js';
import { manifest, profileId, replyText, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { until } from './helpers/wait.js';

const SECRET = 'up-token-3f9c1d7e5a2b4c6d';
const tooly = profileId('gov-tools');
const SLACK_SECRET = 'gov-slack-signing-secret';
const TEAM = 'T0FAKE';
const CHANNEL = 'C0TOOLS01';
const HUMAN = 'UHUMAN001';
/** A host service the profile may reach through the egress relay, on this machine's LAN address. */
const lanAddress = Object.entries(os.networkInterfaces())
  .filter(([name]) => !/^(docker|br-|avm|veth)/.test(name))
  .flatMap(([, addrs]) => addrs ?? [])
  .find((a) => a.family === 'IPv4' && !a.internal)?.address;
let target: http.Server;
let targetPort: number;
let upstream: FakeUpstream;
let slack: FakeSlack;
let gw: TestGateway;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  slack = await startFakeSlack();
  target = http.createServer((_req, res) => res.end('outside'));
  await new Promise<void>((r) => target.listen(0, '0.0.0.0', r));
  targetPort = (target.address() as AddressInfo).port;
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
        egress: { allow: [`${lanAddress}:${targetPort}`] },
        bindings: [
          { platform: 'local', channels: ['*'] },
          { platform: 'slack', team: TEAM, channels: [CHANNEL] },
        ],
      }),
    ],
    env: { AGENTVM_SECRET_UP_TOKEN: SECRET, SLACK_SIGNING_SECRET: SLACK_SECRET, SLACK_BOT_TOKEN: slack.botToken, SLACK_API_URL: slack.url },
    approvalTimeoutMs: 4000,
  });
});

afterAll(async () => {
  await gw?.close();
  await upstream?.close();
  await slack?.close();
  target?.closeAllConnections();
  await new Promise((r) => target?.close(r));
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
    await until('the approval request', async () => ((await gw.running.gateway.approvals.pending()).length > 0 ? true : undefined), { timeoutMs: 10_000 });
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

/** Signs and posts to the gateway's Slack routes, as Slack would. */
async function slackPost(path: string, body: string, contentType: string): Promise<Response> {
  const ts = String(Math.floor(Date.now() / 1000));
  return gw.running.app.request(path, {
    method: 'POST',
    headers: { 'content-type': contentType, 'x-slack-request-timestamp': ts, 'x-slack-signature': signSlackRequest(SLACK_SECRET, ts, body) },
    body,
  });
}

/** Waits until `probe` returns something truthy; a timeout names the Slack calls made so far. */
const waitFor = <T>(what: string, probe: () => T | undefined | false): Promise<T> =>
  until(what, () => probe() || undefined, { timeoutMs: 30_000, everyMs: 25 }).catch((err: Error) => {
    throw new Error(`${err.message}; Slack calls: ${slack.calls.map((c) => c.method).join(', ')}`);
  });

describe('approval buttons in Slack, through the gateway', () => {
  it('asks in the thread; only the person who asked can approve; the call then runs and the answer arrives', async () => {
    const ts = `${Math.floor(Date.now() / 1000)}.000777`;
    const eventId = `EvGOV${randomBytes(5).toString('hex').toUpperCase()}`;
    const envelope = {
      token: 'x', team_id: TEAM, api_app_id: 'AFAKE', type: 'event_callback', event_id: eventId, event_time: Math.floor(Date.now() / 1000),
      authorizations: [{ user_id: slack.botUserId, is_bot: true }],
      event: { type: 'app_mention', user: HUMAN, text: `<@${slack.botUserId}> mcp srv__add {"a":20,"b":22}`, ts, channel: CHANNEL, team: TEAM },
    };
    const addsBefore = upstream.calls.get('add') ?? 0;
    expect((await slackPost('/slack/events', JSON.stringify(envelope), 'application/json')).status).toBe(200);

    const asking = await waitFor('the approval request in the thread', () =>
      slack.messages.find((m) => m.channel === CHANNEL && m.thread_ts === ts && JSON.stringify(m.blocks ?? []).includes('agentvm_approve')),
    );
    expect(asking.text).toContain('srv.add');
    expect(JSON.stringify(asking.blocks)).toContain(`<@${HUMAN}> can answer`);
    const id = (await gw.running.gateway.approvals.pending())[0]!.id;
    expect(JSON.stringify(asking.blocks)).toContain(id);

    const press = (user: string, action: string) =>
      slackPost(
        '/slack/interactivity',
        `payload=${encodeURIComponent(JSON.stringify({
          type: 'block_actions', user: { id: user }, channel: { id: CHANNEL },
          container: { type: 'message', channel_id: CHANNEL, message_ts: asking.ts, thread_ts: ts },
          actions: [{ action_id: action, value: id, type: 'button' }],
        }))}`,
        'application/x-www-form-urlencoded',
      );
    // Someone else in the channel cannot approve: told privately, and the request still waits.
    expect((await press('UMALLORY1', 'agentvm_approve')).status).toBe(200);
    await waitFor('the refusal', () => slack.ephemerals.find((e) => e.user === 'UMALLORY1'));
    expect(upstream.calls.get('add') ?? 0).toBe(addsBefore);
    expect((await gw.running.gateway.approvals.pending()).map((p) => p.id)).toContain(id);

    expect((await press(HUMAN, 'agentvm_approve')).status).toBe(200);
    const answer = await waitFor('the answer', () => slack.messages.find((m) => m.channel === CHANNEL && m.thread_ts === ts && m.text === '42'));
    expect(answer).toBeDefined();
    await waitFor('the request rewritten without buttons', () => !JSON.stringify(asking.blocks).includes('agentvm_approve') && asking);
    expect(JSON.stringify(asking.blocks)).toContain(`Approved by <@${HUMAN}>`);

    const decisions = (await gw.running.gateway.audit.tail(200)).filter((a) => a.action === 'tool.approval' && a.profile === tooly);
    expect(decisions.at(-1)).toMatchObject({ decision: 'approved', subject: 'srv.add', reason: `approved by slack:${HUMAN}` });
  });
});

describe('egress through the gateway', () => {
  it("reaches an allowlisted host:port only through the profile's relay, and audits each attempt", async () => {
    const connect = (t: string) =>
      say(
        `sh node -e 'const h=require("http");const p=new URL(process.env.HTTPS_PROXY);h.request({host:p.hostname,port:p.port,method:"CONNECT",path:process.argv[1]}).on("connect",r=>{console.log("status "+r.statusCode);process.exit(0)}).on("response",r=>{console.log("status "+r.statusCode);process.exit(0)}).on("error",e=>console.log("error "+e.code)).end()' ${t}`,
      );
    // The reference agent answers `sh` with "exit <code>" and the output.
    expect(await connect(`${lanAddress}:${targetPort}`)).toMatch(/^status 200$/m);
    expect(await connect('example.com:443')).toMatch(/^status 403$/m);
    // Straight out, without the relay: nothing.
    expect(await say(`sh node -e 'fetch("http://${lanAddress}:${targetPort}/").then(r=>console.log("reached"),e=>console.log("blocked"))'`)).toMatch(/^blocked$/m);
    await new Promise((r) => setTimeout(r, 100));
    const rows = (await gw.running.gateway.audit.tail(200)).filter((a) => a.action === 'egress.connect' && a.profile === tooly);
    expect(rows.map((r) => [r.decision, r.subject])).toEqual([
      ['allow', `${lanAddress}:${targetPort}`],
      ['deny', 'example.com:443'],
    ]);
  });
});
