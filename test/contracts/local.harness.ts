/**
 * The local channel (`POST /v1/messages`): the bearer token stands in for a signature, the turn's
 * outcome comes from a scripted watcher, and what "reaches the user" is what `agent-vm send`
 * prints for the HTTP answer (replyReport), so held-back notes are checked where people read them.
 */
import { createLocalAdapter, messageAnswer, type MessageAnswer } from '../../src/adapters/local/index.js';
import type { TurnOutcome } from '../../src/adapters/types.js';
import { replyReport } from '../../src/cli/common.js';
import { createLogger } from '../../src/log.js';
import { mounted } from '../helpers/app.js';
import type { ChannelHarness, ContractReply, Posted, RecordingIntake } from './channel-adapter.js';

const TOKEN = 'contract-api-token-0123456789';

export const localHarness: ChannelHarness = {
  platform: 'local',
  async start(intake: RecordingIntake) {
    let next: ContractReply = { text: 'ok', files: [], heldBack: [] };
    const outcomes = new Map<string, TurnOutcome>();
    const watcher = {
      // A turn's outcome is fixed when it is first watched; a resent id sees the same one.
      async *watch(eventId: string): AsyncIterable<TurnOutcome> {
        if (!outcomes.has(eventId)) outcomes.set(eventId, { kind: 'reply', ...next });
        yield outcomes.get(eventId)!;
      },
    };
    const adapter = createLocalAdapter({ intake, watcher, apiToken: TOKEN, logger: createLogger('silent') });
    const posted: Posted = { texts: [], files: [] };
    let seq = 0;
    const request = (body: Record<string, unknown>, signed = true) => ({
      path: '/v1/messages',
      init: {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json', ...(signed ? { authorization: `Bearer ${TOKEN}` } : {}) } as Record<string, string>,
      },
    });
    return {
      adapter,
      inbound: (n, o = {}) => request({ profile: 'p', text: 'hello', id: `m${n}` }, o.signed !== false),
      async deliver(event, reply) {
        next = reply;
        const r = request({ profile: 'p', text: 'deliver', id: `deliver-${++seq}` });
        const res = await mounted(adapter.routes!).request(r.path, r.init);
        if (res.status !== 200) throw new Error(`/v1/messages answered ${res.status}: ${await res.text()}`);
        const answer = (await res.json()) as MessageAnswer;
        if (answer.type !== 'reply') throw new Error(`not a reply: ${JSON.stringify(answer)}`);
        const lines = replyReport({ text: answer.text, written: answer.files.map((f) => ({ file: f.name, bytes: f.size })), heldBack: answer.heldBack, conversation: answer.conversation });
        posted.texts.push([...lines.stdout, ...lines.stderr].join('\n'));
        posted.files.push(...answer.files.map((f) => ({ name: f.name, data: Buffer.from(f.base64, 'base64') })));
        void event;
      },
      posted: () => posted,
      close: async () => adapter.close?.(),
    };
  },
};

/** The answer shape the route gives, for the local-only tests. */
export { messageAnswer };
