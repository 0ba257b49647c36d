/**
 * The unit's model endpoint honours the sandbox's token during a turn, including the first turn
 * of a sleeping agent, whose relay is bound only while the turn wakes it (the turn opened before
 * the relay existed). Through the real gateway on the fake driver: the reference agent calls the
 * relay with the env the spec gave it; the fake Anthropic API holds the real key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeAnthropic, type FakeProvider } from '../fakes/providers/index.js';
import { manifest, profileId, replyText } from '../helpers/gateway.js';
import { startFakeGateway, type FakeGateway } from '../helpers/unit-gateway.js';

const MODEL = 'claude-sonnet-4-5-20250929';
/** One Messages call with the sandbox's own base URL and token; prints the status. */
const CALL = `sh node -e 'fetch(process.env.ANTHROPIC_BASE_URL + "/v1/messages", { method: "POST", headers: { "x-api-key": process.env.ANTHROPIC_API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json" }, body: JSON.stringify({ model: "${MODEL}", max_tokens: 8, messages: [{ role: "user", content: "hi" }] }) }).then((r) => console.log("status " + r.status), (e) => console.log("error " + e.message))'`;

const id = profileId('model-endpoint');
let fake: FakeProvider;
let gw: FakeGateway;

beforeAll(async () => {
  fake = await startFakeAnthropic();
  gw = await startFakeGateway({
    manifests: [manifest(id, { models: [{ provider: 'anthropic', key: 'secret://UNIT_ANTHROPIC_KEY', allow: [MODEL] }] })],
    env: { AGENTVM_ANTHROPIC_API_URL: fake.url, AGENTVM_SECRET_UNIT_ANTHROPIC_KEY: fake.apiKey },
  });
});
afterAll(async () => {
  await gw?.close();
  await fake?.close();
});

describe('model endpoint and turns', () => {
  it("honours the token in the turn that wakes the agent (the relay is bound during that turn's wake)", async () => {
    expect((await gw.driver.status(id)).state).toBe('missing');
    const r = await gw.send({ profile: id, text: CALL, conversation: 'first' });
    expect(replyText(r.outcome)).toContain('status 200');
    expect(fake.requests.filter((q) => q.path === '/v1/messages').map((q) => q.credential)).toEqual([fake.apiKey]);
  });

  it('honours it again after the agent slept and woke (the relay is bound again on wake)', async () => {
    expect(await gw.running.gateway.units.get(id)!.sleep('test')).toBe(true);
    const r = await gw.send({ profile: id, text: CALL, conversation: 'second' });
    expect(replyText(r.outcome)).toContain('status 200');
  });
});
