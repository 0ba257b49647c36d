/**
 * The answer while the agent writes it: streamed with Slack's streaming methods for AI apps
 * (`chat.startStream` / `appendStream` / `stopStream`, through the SDK's ChatStreamer), or, where
 * the token or the channel cannot stream, posted once and then edited (`chat.update`, at most one
 * edit per `editIntervalMs`). The final reply completes that same message, so the person never
 * sees the answer twice.
 *
 * What is streamed is the agent's Markdown (Slack renders it), with Slack's mention syntax
 * defused: a zero-width space after `<` before `!`, `@` or `#`, and after `@` before
 * `here`/`channel`/`everyone`, so a prompt-injected agent cannot ping a channel. The transform
 * only ever inserts after the character that triggers it, so the streamed text of a prefix is a
 * prefix of the streamed text of the whole: appending the difference is always right.
 *
 * Deliberately left out: streaming past `STREAM_MAX_CHARS` (the rest of a long answer follows as
 * ordinary messages with the final reply) and task/plan chunks (progress has the status line).
 */
import type { Logger } from '../../log.js';
import type { ReportFailure } from '../delivery.js';
import { failureCode, slackErrorCode, type SlackApi, type SlackStream } from './api.js';
import { markdownToMrkdwn, splitMessage } from './mrkdwn.js';

/** Slack takes at most 12,000 characters of markdown in one call; the streamed message stays under. */
export const STREAM_MAX_CHARS = 11_000;

/** A section block's text limit: a longer message goes without blocks (and so without buttons). */
export const SECTION_MAX_CHARS = 3000;

/** startStream errors that mean "not here": fall back to post-then-edit. Of those, the ones that hold for the whole token. */
const STREAM_UNAVAILABLE_EVERYWHERE = new Set(['not_allowed_token_type', 'missing_scope', 'unknown_method', 'feature_not_enabled', 'no_permission', 'access_denied']);

export interface Live {
  mode: 'stream' | 'edit';
  /** The message being streamed or edited, once it exists. */
  ts?: string;
  /** What the message shows now: defused Markdown (stream) or mrkdwn (edit). */
  shown: string;
  stream?: SlackStream;
  /** An append or the stop failed: no more appends; the final reply rewrites the message. */
  broken: boolean;
  lastEditAt: number;
}

export interface Place {
  channel: string;
  threadTs: string;
  team: string;
  /** The person asking (Slack wants them as the stream's recipient outside DMs). */
  user?: string;
}

/** Neutralizes Slack mention syntax in Markdown; prefix-preserving (see the file comment). */
export function defuse(md: string): string {
  return md.replace(/<(?=[!@#])/g, '<\u200b').replace(/@(?=(here|channel|everyone)\b)/gi, '@\u200b');
}

function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  const c = s.charCodeAt(max - 1);
  return s.slice(0, c >= 0xd800 && c <= 0xdbff ? max - 1 : max);
}

export function createLive(deps: { api: SlackApi; logger: Logger; now: () => number; editIntervalMs: number; maxMessageChars: number; report: ReportFailure }) {
  const { api } = deps;
  /** '*' (the whole token) or channel ids where streaming was refused. */
  const noStream = new Set<string>();

  function streamable(channel: string): boolean {
    return !noStream.has('*') && !noStream.has(channel);
  }

  /** The edit-mode text: the first message's worth of the answer so far. */
  function editText(text: string): string {
    const chunks = splitMessage(markdownToMrkdwn(text), deps.maxMessageChars);
    if (chunks.length === 0) return '';
    return chunks.length > 1 ? `${chunks[0]!}\n…` : chunks[0]!;
  }

  /**
   * Shows the answer so far. `placeholder` is a progress message already in the thread (edited
   * instead of posting another). Never throws: a failed step is reported and the final reply
   * repairs the message.
   */
  async function show(live: Live | undefined, at: Place, text: string, eventId: string, placeholder: string | undefined): Promise<Live | undefined> {
    if (!text.trim()) return live;
    if ((!live && streamable(at.channel) && !placeholder) || live?.mode === 'stream') {
      const head = cut(defuse(text), STREAM_MAX_CHARS);
      if (!live) {
        const stream = api.stream({ channel: at.channel, threadTs: at.threadTs, ...(at.user ? { recipient: { user: at.user, team: at.team } } : {}) });
        try {
          await stream.append(head);
          return { mode: 'stream', ts: stream.ts, shown: head, stream, broken: false, lastEditAt: deps.now() };
        } catch (err) {
          const code = slackErrorCode(err);
          if (!code || (err as { retryable?: boolean }).retryable) {
            deps.report({ kind: 'partial', step: 'stream', code: failureCode(err), retryable: true, shown: false }, { eventId, err });
            return undefined;
          }
          noStream.add(STREAM_UNAVAILABLE_EVERYWHERE.has(code) ? '*' : at.channel);
          deps.logger.info({ channel: at.channel, code }, 'slack: cannot stream here; posting the answer and editing it instead');
        }
      } else {
        if (live.broken || !head.startsWith(live.shown) || head.length === live.shown.length) return live;
        try {
          await live.stream!.append(head.slice(live.shown.length));
          live.shown = head;
        } catch (err) {
          live.broken = true;
          deps.report({ kind: 'partial', step: 'stream', code: failureCode(err), retryable: true, shown: false }, { eventId, err });
        }
        return live;
      }
    }
    // Post, then edit (throttled): the fallback, and the continuation of a progress placeholder.
    const body = editText(text);
    if (!body) return live;
    const current = live ?? { mode: 'edit' as const, ts: placeholder, shown: '', broken: false, lastEditAt: Number.NEGATIVE_INFINITY };
    if (current.ts && deps.now() - current.lastEditAt < deps.editIntervalMs) return current;
    if (body === current.shown) return current;
    try {
      if (current.ts) {
        await api.call('chat.update', { channel: at.channel, ts: current.ts, text: body });
      } else {
        const res = await api.call('chat.postMessage', { channel: at.channel, thread_ts: at.threadTs, text: body });
        if (typeof res.ts === 'string') current.ts = res.ts;
      }
      current.shown = body;
      current.lastEditAt = deps.now();
    } catch (err) {
      deps.report({ kind: 'partial', step: current.ts ? 'edit' : 'post', code: failureCode(err), retryable: true, shown: false }, { eventId, err });
    }
    return current.ts ? current : undefined;
  }

  /**
   * Completes a streamed message with the first part of the final answer (`first`, defused
   * Markdown): appends what is missing and stops the stream, with `blocks` (feedback buttons)
   * under it. When the answer no longer begins with what was streamed (or streaming broke), the
   * message is rewritten instead. Throws (retryably or not) only when the message could not be
   * completed at all.
   */
  async function complete(live: Live, at: Place, first: string, blocks: unknown[] | undefined): Promise<void> {
    if (!live.broken && first.startsWith(live.shown)) {
      try {
        await live.stream!.stop({ markdown: first.slice(live.shown.length), ...(blocks ? { blocks } : {}) });
        live.shown = first;
        return;
      } catch (err) {
        // The SDK keeps a failed stop's text in its buffer: never stop through it again.
        live.broken = true;
        throw err;
      }
    }
    // Best effort: a stream still open would show as unfinished; the rewrite below is what counts.
    await api.call('chat.stopStream', { channel: at.channel, ts: live.ts }).catch(() => undefined);
    const text = markdownToMrkdwn(first) || '…';
    await api.call('chat.update', { channel: at.channel, ts: live.ts, text, ...(blocks && text.length <= SECTION_MAX_CHARS ? { blocks: [{ type: 'section', text: { type: 'mrkdwn', text } }, ...blocks] } : {}) });
    live.shown = first;
  }

  /** Ends a stream without more text (the turn failed); never throws. */
  async function abandon(live: Live | undefined, at: Place): Promise<void> {
    if (live?.mode !== 'stream' || !live.ts) return;
    try {
      if (live.broken) await api.call('chat.stopStream', { channel: at.channel, ts: live.ts });
      else await live.stream!.stop();
    } catch {
      // Slack closes an idle stream by itself.
    }
    live.broken = true;
  }

  return { show, complete, abandon, streamable };
}

export type LiveAnswers = ReturnType<typeof createLive>;
