/**
 * Socket Mode: Slack pushes the same Events API envelopes over a WebSocket that we open with the
 * app-level token (`apps.connections.open`, a Web API call, so it honours `SLACK_API_URL`).
 * Bolt's SocketModeReceiver is used only for its client (connection, pings, reconnects); events
 * go to our own handler, not to a Bolt App.
 *
 * An envelope is acknowledged only once the event is stored (or deliberately ignored); if storing
 * fails we stay silent and Slack redelivers it, exactly like a 5xx on the HTTP endpoint.
 */
import { describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { slackLogger } from './api.js';

export interface SocketModeHandle {
  stop(): Promise<void>;
}

/** What the shared envelope handler decided: acknowledge, or not (so Slack redelivers). */
export type EnvelopeHandler = (payload: unknown, meta: { retryNum?: number }) => Promise<{ ack: boolean }>;

interface SlackEventArgs {
  ack: (response?: Record<string, unknown>) => Promise<void>;
  type: string;
  body: unknown;
  retry_num?: number;
}

export async function startSocketMode(opts: {
  appToken: string;
  apiUrl: string;
  logger: Logger;
  handle: EnvelopeHandler;
  /** Interactivity (button presses): acknowledged at once, then handled. */
  interact?: (payload: unknown) => void;
}): Promise<SocketModeHandle> {
  // Loaded lazily: the HTTP-only deployment never pays for Bolt and its WebSocket stack.
  const { SocketModeReceiver } = await import('@slack/bolt');
  const receiver = new SocketModeReceiver({
    appToken: opts.appToken,
    logger: slackLogger(opts.logger),
    installerOptions: { clientOptions: { slackApiUrl: opts.apiUrl } },
  });
  receiver.client.on('slack_event', (args: SlackEventArgs) => {
    void (async () => {
      if (args.type === 'interactive') {
        await args.ack();
        opts.interact?.(args.body);
        return;
      }
      if (args.type !== 'events_api') {
        // Slash commands and the like are not ours; acknowledge so Slack does not retry them.
        await args.ack();
        return;
      }
      const meta = args.retry_num === undefined ? {} : { retryNum: args.retry_num };
      const { ack } = await opts.handle(args.body, meta);
      if (ack) await args.ack();
    })().catch((err: unknown) => {
      opts.logger.error({ err: describeError(err) }, 'slack: socket mode envelope failed');
    });
  });
  await receiver.start();
  opts.logger.info('slack: socket mode connected');
  return {
    async stop() {
      await receiver.client.disconnect();
    },
  };
}
