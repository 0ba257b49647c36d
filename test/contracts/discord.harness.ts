/** The Discord adapter on the Discord REST fake: Ed25519-signed slash commands, answers read off the fake. */
import { createDiscordAdapter } from '../../src/adapters/discord/index.js';
import { createLogger } from '../../src/log.js';
import { startFakeDiscord, type RecordedCall } from '../fakes/discord-api.js';
import { keys, PUBLIC_KEY_HEX, signed, slashCommand } from '../helpers/discord.js';
import { generateKeyPairSync } from 'node:crypto';
import type { ChannelHarness, RecordingIntake } from './channel-adapter.js';

const GUILD = '900000000000000001';
const CHANNEL = '900000000000000002';
const stranger = generateKeyPairSync('ed25519');

/** Calls that put a message in front of users: edits of the original, follow-ups, channel posts. */
const POSTS = /^(PATCH \/webhooks\/\d+\/[^/]+\/messages\/@original|POST \/webhooks\/\d+\/[^/]+|POST \/channels\/\d+\/messages)$/;

export const discordHarness: ChannelHarness = {
  platform: 'discord',
  async start(intake: RecordingIntake) {
    const fake = await startFakeDiscord({ guilds: [{ id: GUILD, channels: [{ id: CHANNEL, name: 'general' }] }] });
    const adapter = createDiscordAdapter({
      publicKey: PUBLIC_KEY_HEX,
      applicationId: fake.applicationId,
      botToken: fake.botToken,
      apiUrl: fake.url,
      intake,
      logger: createLogger('silent'),
    });
    const posts = (): RecordedCall[] => fake.calls.filter((c) => c.status < 300 && POSTS.test(`${c.method} ${c.path}`));
    return {
      adapter,
      inbound(n, o = {}) {
        const payload = {
          ...slashCommand({ applicationId: fake.applicationId, guild: GUILD, channel: CHANNEL, user: '900000000000000004' }, 'hello'),
          id: String(1_200_000_000_000_000_000n + BigInt(n)),
          token: `tok-contract-${n}`,
        };
        const body = JSON.stringify(payload);
        return { path: '/discord/interactions', init: { method: 'POST', body, headers: signed(body, o.signed === false ? stranger.privateKey : keys.privateKey) } };
      },
      deliver: (event, reply) => adapter.send({ kind: 'reply', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, ...reply }),
      partial: (event, text) => adapter.send({ kind: 'partial', conversation: event.conversation, replyTo: event.replyTo, eventId: event.id, text }),
      refuseFile: () => fake.failNext({ status: 400, code: 50035, match: /^PATCH \/webhooks\/\d+\/[^/]+\/messages\/@original$/ }),
      hangApi: () => fake.hang(),
      failPartway() {
        // The first part (an edit of the original) goes out; every follow-up fails for now.
        fake.failNext({ status: 503, times: 50, match: /^POST \/webhooks\// });
        return () => fake.clearFailures();
      },
      posted: () => ({
        // What people see now: each message's current text (edits included), once.
        texts: fake.allMessages().map((m) => m.content).filter((t) => t !== ''),
        files: posts().flatMap((c) => c.files.map((f) => ({ name: f.filename, data: f.data }))),
      }),
      async close() {
        await adapter.close();
        await fake.close();
      },
    };
  },
};
