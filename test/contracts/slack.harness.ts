/** The Slack adapter on the Slack Web API fake: v0-signed Events API requests, replies read off the fake. */
import { createSlackAdapter, signSlackRequest } from '../../src/adapters/slack/index.js';
import { createLogger } from '../../src/log.js';
import { startFakeSlack } from '../fakes/slack-api.js';
import type { ChannelHarness, RecordingIntake } from './channel-adapter.js';

const SECRET = 'contract-signing-secret';

export const slackHarness: ChannelHarness = {
  platform: 'slack',
  async start(intake: RecordingIntake) {
    const fake = await startFakeSlack();
    const adapter = createSlackAdapter({
      signingSecret: SECRET,
      botToken: fake.botToken,
      apiUrl: fake.url,
      intake,
      logger: createLogger('silent'),
      botUserId: fake.botUserId,
      retryConfig: { retries: 0 },
    });
    return {
      adapter,
      inbound(n, o = {}) {
        const ts = `1699999999.${String(n).padStart(6, '0')}`;
        const body = JSON.stringify({
          token: 'x',
          team_id: fake.teamId,
          api_app_id: 'AFAKE',
          type: 'event_callback',
          event_id: `Ev${String(n).padStart(6, '0')}`,
          event_time: Math.floor(Date.now() / 1000),
          event: { type: 'app_mention', user: 'UHUMAN1', text: `<@${fake.botUserId}> hello`, ts, channel: 'C0CHAN', team: fake.teamId },
        });
        const stamp = String(Math.floor(Date.now() / 1000));
        const signature = o.signed === false ? signSlackRequest('not-the-secret', stamp, body) : signSlackRequest(SECRET, stamp, body);
        return {
          path: '/slack/events',
          init: { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-slack-request-timestamp': stamp, 'x-slack-signature': signature } },
        };
      },
      deliver: (event, reply) => adapter.send({ kind: 'reply', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, ...reply }),
      partial: (event, text) => adapter.send({ kind: 'partial', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, text }),
      refuseFile: () => fake.failNext('files.getUploadURLExternal', { error: 'missing_scope', needed: 'files:write' }),
      hangApi: () => fake.hang(),
      failPartway() {
        // The text goes out, then the file upload fails (retryably).
        fake.failNext('files.getUploadURLExternal', { error: 'internal_error' });
        return () => undefined;
      },
      posted: () => ({
        texts: fake.messages.map((m) => m.text),
        files: fake.uploads.filter((u) => u.completed).map((u) => ({ name: u.filename, data: u.data ?? Buffer.alloc(0) })),
      }),
      async close() {
        await adapter.close();
        await fake.close();
      },
    };
  },
};
