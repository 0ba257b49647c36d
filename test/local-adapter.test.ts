/**
 * The local channel's HTTP API (`POST /v1/messages`) on the real app: a resent `id` answers with
 * the first sending's turn and conversation, errors are the one `{error, message}` shape, and the
 * wire module both sides share reads back what the route writes (and refuses what it did not).
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLocalAdapter, parseStreamLine, type MessageAnswer } from '../src/adapters/local/index.js';
import type { Intake, TurnOutcome } from '../src/adapters/types.js';
import { isAgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { RecordingIntake } from './contracts/channel-adapter.js';
import { mounted } from './helpers/app.js';

const TOKEN = 'local-api-token-0123456789';

function make(intake: Intake = new RecordingIntake(), apiToken: string | undefined = TOKEN) {
  let turns = 0;
  const watcher = {
    async *watch(eventId: string): AsyncIterable<TurnOutcome> {
      turns += 1;
      yield { kind: 'progress', text: 'working' };
      yield { kind: 'reply', text: `answer to ${eventId}`, files: [{ name: 'a.txt', data: Buffer.from('A') }], heldBack: [] };
    },
  };
  const adapter = createLocalAdapter({ intake, watcher, logger: createLogger('silent'), ...(apiToken ? { apiToken } : {}) });
  const post = (body: unknown, headers: Record<string, string> = {}) =>
    mounted(adapter.routes!).request('/v1/messages', {
      method: 'POST',
      body: typeof body === 'string' ? body : JSON.stringify(body),
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
    });
  return { adapter, post, turns: () => turns };
}

describe('POST /v1/messages', () => {
  it('answers only its own route: the rest of /v1/* is the operator API (no second approvals route, no API-token guard on it)', async () => {
    for (const token of [TOKEN, undefined]) {
      const { adapter } = make(new RecordingIntake(), token);
      const app = mounted(adapter.routes!);
      expect((await app.request('/v1/approvals', { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
      expect((await app.request('/v1/approvals/x', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: '{"decision":"approved"}' })).status).toBe(404);
      expect((await app.request('/v1/releases')).status).toBe(404);
    }
  });

  it('answers a resent id with the first turn and its conversation, not a new one or the one the resend names', async () => {
    const intake = new RecordingIntake();
    const { post } = make(intake);
    const first = (await (await post({ profile: 'p', text: 'hi', id: 'e1' })).json()) as MessageAnswer;
    expect(first).toMatchObject({ eventId: 'local:e1', duplicate: false, status: 'replied', type: 'reply', text: 'answer to local:e1', progress: ['working'] });
    expect(first.conversation).toMatch(/^local:p:[0-9a-f-]{36}$/);

    const again = (await (await post({ profile: 'p', text: 'hi', id: 'e1' })).json()) as MessageAnswer;
    expect(again).toMatchObject({ eventId: 'local:e1', duplicate: true, conversation: first.conversation, text: 'answer to local:e1' });
    const named = (await (await post({ profile: 'p', text: 'hi', id: 'e1', conversation: 'other' })).json()) as MessageAnswer;
    expect(named).toMatchObject({ duplicate: true, conversation: first.conversation });

    // Streamed, the head says the same.
    const res = await post({ profile: 'p', text: 'hi', id: 'e1', conversation: 'other' }, { accept: 'application/x-ndjson' });
    const lines = (await res.text()).trim().split('\n').map(parseStreamLine);
    expect(lines[0]).toEqual({ type: 'accepted', eventId: 'local:e1', conversation: first.conversation, profile: 'p', duplicate: true });
    expect(lines.map((l) => l.type)).toEqual(['accepted', 'progress', 'reply']);
    expect(intake.accepted).toHaveLength(1);
  });

  it('renders every refusal as {error, message} with its status', async () => {
    const shape = async (res: Response, status: number, error: string) => {
      expect(res.status).toBe(status);
      expect(await res.json()).toEqual({ error, message: expect.any(String) });
    };
    const { post } = make();
    await shape(await post({ profile: 'p', text: 'hi' }, { authorization: 'Bearer wrong' }), 401, 'unauthorized');
    expect((await post({ profile: 'p', text: 'hi' }, { authorization: 'Bearer wrong' })).headers.get('www-authenticate')).toBe('Bearer');
    await shape(await post('{not json'), 400, 'bad_request');
    await shape(await post({ profile: 'p', text: '   ' }), 400, 'bad_request');
    await shape(await make(new RecordingIntake(), '').post({ profile: 'p', text: 'hi' }), 403, 'api_disabled');
    const rejecting: Intake = { accept: async () => ({ status: 'rejected', reason: 'unbound', message: 'No agent is bound here.' }) };
    await shape(await make(rejecting).post({ profile: 'p', text: 'hi' }), 404, 'unbound');
  });

  it('the client side refuses lines that are not answers, naming the problem', () => {
    for (const bad of ['not json', '{"type":"reply","text":"x"}', '{"type":"accepted"}', '[]']) {
      let err: unknown;
      try {
        parseStreamLine(bad);
      } catch (e) {
        err = e;
      }
      expect(isAgentVmError(err, 'bad_answer'), bad).toBe(true);
    }
  });
});

describe('a resent id through the real intake', () => {
  it('answers duplicate with the stored conversation, whatever conversation the resend carries', async () => {
    const { startTestGateway, manifest, profileId } = await import('./helpers/gateway.js');
    const { localEvent, localMessageSchema } = await import('../src/adapters/local/index.js');
    const { Queue } = await import('bullmq');
    const { queueName } = await import('../src/gateway/queue.js');
    const redisUrl = 'redis://127.0.0.1:6379';
    const id = profileId('dup');
    const msgId = `e-${randomUUID()}`;
    // A front door only (no unit runs the turn): the intake is what is under test.
    const gw = await startTestGateway({ manifests: [manifest(id)], units: 'none', env: { REDIS_URL: redisUrl } });
    try {
      const first = localEvent(localMessageSchema.parse({ profile: id, text: 'echo once', id: msgId }), 'test');
      const again = localEvent(localMessageSchema.parse({ profile: id, text: 'echo once', id: msgId, conversation: 'elsewhere' }), 'test');
      expect(await gw.running.gateway.intake.accept(first)).toEqual({ status: 'accepted', profile: id });
      expect(again.conversation).not.toBe(first.conversation);
      expect(await gw.running.gateway.intake.accept(again)).toEqual({ status: 'duplicate', profile: id, conversation: first.conversation });
    } finally {
      await gw.close();
      const q = new Queue(queueName(id), { connection: { url: redisUrl } });
      await q.obliterate({ force: true });
      await q.close();
    }
  });
});
