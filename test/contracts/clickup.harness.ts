/** The ClickUp adapter on the ClickUp API fake: HMAC-signed webhooks, comments and attachments read off the fake. */
import { createClickUpAdapter } from '../../src/adapters/clickup/index.js';
import { createLogger } from '../../src/log.js';
import { startFakeClickUp } from '../fakes/clickup-api.js';
import { commentPostedBody } from '../helpers/clickup.js';
import { signClickUpBody } from '../../src/adapters/clickup/index.js';
import type { ChannelHarness, RecordingIntake } from './channel-adapter.js';

const SECRET = 'contract-webhook-secret';

export const clickupHarness: ChannelHarness = {
  platform: 'clickup',
  async start(intake: RecordingIntake) {
    const fake = await startFakeClickUp();
    fake.tasks.set('t1', { id: 't1', name: 'Quarterly report', team_id: '9001', space: { id: '1' }, folder: { id: '2' }, list: { id: '3' } });
    // No real waiting between retries: the backoff is the client's own business.
    const adapter = createClickUpAdapter({ webhookSecret: SECRET, token: fake.token, apiUrl: fake.url, intake, logger: createLogger('silent'), sleep: async () => {} });
    return {
      adapter,
      inbound(n, o = {}) {
        const body = commentPostedBody({
          historyId: String(2_800_000_000_000_000_000n + BigInt(n)),
          taskId: 't1',
          parentId: '162641285',
          user: { id: 183, username: 'John', email: 'john@example.com' },
          text: '@support hello\n',
          date: String(Date.now()),
        });
        const signature = signClickUpBody(body, o.signed === false ? 'not-the-secret' : SECRET);
        return { path: '/clickup/webhook', init: { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-signature': signature } } };
      },
      deliver: (event, reply) => adapter.send({ kind: 'reply', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, ...reply }),
      partial: (event, text) => adapter.send({ kind: 'partial', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, text }),
      refuseFile: () => fake.failNext(400, 1, /^POST \/task\/[^/]+\/attachment$/),
      hangApi: () => fake.hang(),
      settle: () => adapter.idle(),
      failPartway() {
        // The files are attached, then the comment fails (retryably, after the client's retries).
        fake.failNext(503, 50, /^POST \/task\/[^/]+\/comment$/);
        return () => fake.clearFailures();
      },
      posted: () => ({
        texts: fake.find('POST', /^\/task\/[^/]+\/comment$/).filter((c) => c.status < 300).map((c) => (c.json as { comment_text: string }).comment_text),
        files: fake.find('POST', /^\/task\/[^/]+\/attachment$/).filter((c) => c.status < 300).flatMap((c) => c.files.map((f) => ({ name: f.name, data: f.data }))),
      }),
      async close() {
        await adapter.close();
        await fake.close();
      },
    };
  },
};
