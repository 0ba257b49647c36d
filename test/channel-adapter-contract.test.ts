/**
 * Every channel adapter against the one contract (test/contracts/channel-adapter.ts), each on a
 * local fake of its platform.
 */
import { describeChannelAdapter } from './contracts/channel-adapter.js';
import { clickupHarness } from './contracts/clickup.harness.js';
import { discordHarness } from './contracts/discord.harness.js';
import { localHarness } from './contracts/local.harness.js';
import { slackHarness } from './contracts/slack.harness.js';

describeChannelAdapter(slackHarness);
describeChannelAdapter(discordHarness);
describeChannelAdapter(clickupHarness);
describeChannelAdapter(localHarness);
