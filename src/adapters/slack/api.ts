/**
 * The Slack Web API as this adapter uses it: one `call` that turns every failure into an
 * `AgentVmError`, the upload step of the three-step file upload, and bot-token file downloads
 * that never send the token to a host that is not Slack (or the configured API base).
 *
 * Rate limits: WebClient waits for `Retry-After` on a 429 and retries (bounded by `retryConfig`);
 * what still fails surfaces as a retryable error, never silently.
 */
import { readBodyCapped } from '../http.js';
import { LogLevel, WebAPIHTTPError, WebAPIPlatformError, WebAPIRateLimitedError, WebAPIRequestError, WebClient } from '@slack/web-api';
import type { ChatStreamer, Logger as SlackLogger, RetryOptions, WebAPICallResult } from '@slack/web-api';
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';

/** Slack `error` strings worth retrying: the call may well succeed later. */
const RETRYABLE = new Set([
  'ratelimited', 'rate_limited', 'internal_error', 'fatal_error', 'service_unavailable', 'request_timeout', 'transient',
]);

export const DEFAULT_RETRY: RetryOptions = { retries: 3, factor: 2, minTimeout: 200, maxTimeout: 2000 };

/** Slack's logger interface on top of pino. Slack's own info chatter goes to debug, except rate limits. */
export function slackLogger(logger: Logger): SlackLogger {
  const text = (msg: unknown[]) => msg.map((m) => (typeof m === 'string' ? m : describeError(m))).join(' ');
  return {
    debug: (...m: unknown[]) => logger.debug({ slack: true }, text(m)),
    info: (...m: unknown[]) => {
      const s = text(m);
      if (/rate limit/i.test(s)) logger.info({ slack: true }, s);
      else logger.debug({ slack: true }, s);
    },
    warn: (...m: unknown[]) => logger.warn({ slack: true }, text(m)),
    error: (...m: unknown[]) => logger.error({ slack: true }, text(m)),
    setLevel: () => {},
    getLevel: () => (logger.isLevelEnabled('debug') ? LogLevel.DEBUG : LogLevel.INFO),
    setName: () => {},
  };
}

/** Maps whatever WebClient threw to our one error type. */
export function toAgentVmError(method: string, err: unknown): AgentVmError {
  if (err instanceof AgentVmError) return err;
  if (err instanceof WebAPIPlatformError) {
    const code = err.data.error;
    const rawNeeded = (err.data as { needed?: unknown }).needed;
    const needed = typeof rawNeeded === 'string' ? ` (needed: ${rawNeeded.slice(0, 200)})` : '';
    return new AgentVmError('slack_api_error', `${method}: ${code}${needed}`, { status: 502, retryable: RETRYABLE.has(code), cause: err });
  }
  if (err instanceof WebAPIRateLimitedError) {
    return new AgentVmError('slack_api_error', `${method}: ratelimited (retry after ${err.retryAfter}s)`, { status: 503, retryable: true, cause: err });
  }
  if (err instanceof WebAPIHTTPError) {
    return new AgentVmError('slack_api_error', `${method}: HTTP ${err.statusCode}`, {
      status: 502, retryable: err.statusCode >= 500 || err.statusCode === 429, cause: err,
    });
  }
  if (err instanceof WebAPIRequestError) {
    return new AgentVmError('slack_api_error', `${method}: ${describeError(err.original)}`, { status: 502, retryable: true, cause: err });
  }
  // p-retry rethrows WebClient's plain "A rate limit was exceeded" error once retries run out.
  const msg = describeError(err);
  const limited = /rate limit/i.test(msg);
  return new AgentVmError('slack_api_error', `${method}: ${limited ? 'ratelimited' : msg}`, { status: 502, retryable: true, cause: err });
}

/** Slack's own `error` string behind an AgentVmError from `call`, if it came from an `ok:false` answer. */
export function slackErrorCode(err: unknown): string | undefined {
  if (err instanceof AgentVmError && err.cause instanceof WebAPIPlatformError) return err.cause.data.error;
  return undefined;
}

/** The scope(s) a `missing_scope` answer says are needed (e.g. `files:write`), if it said. */
export function neededScope(err: unknown): string | undefined {
  if (err instanceof AgentVmError && err.cause instanceof WebAPIPlatformError && err.cause.data.error === 'missing_scope') {
    const needed = (err.cause.data as { needed?: unknown }).needed;
    return typeof needed === 'string' && /^[a-z.:_,-]{1,200}$/.test(needed) ? needed : undefined;
  }
  return undefined;
}

/** A short code for reports and metrics: Slack's error string, or what went wrong on the way. */
export function failureCode(err: unknown): string {
  const code = slackErrorCode(err);
  if (code) return code;
  if (err instanceof AgentVmError && err.cause instanceof WebAPIRateLimitedError) return 'ratelimited';
  if (err instanceof AgentVmError && err.cause instanceof WebAPIHTTPError) return `HTTP ${err.cause.statusCode}`;
  // WebClient wraps a rate limit that outlasted its retries as a request error.
  if (err instanceof AgentVmError && err.cause instanceof WebAPIRequestError) return /rate limit/i.test(describeError(err.cause.original)) ? 'ratelimited' : 'unreachable';
  if (err instanceof AgentVmError) return err.code;
  return 'error';
}

/** A Web API answer; fields beyond `ok` are read defensively by callers. */
export type SlackResult = WebAPICallResult & Record<string, unknown>;

export type DownloadResult = { ok: true; data: Buffer } | { ok: false; reason: string };

/** One streamed answer (chat.startStream → appendStream → stopStream), through the SDK's ChatStreamer. */
export interface SlackStream {
  /** The streamed message's ts, once the first append started it. */
  readonly ts: string | undefined;
  /** Appends markdown (the first append starts the stream). Throws AgentVmError like `call`. */
  append(markdown: string): Promise<void>;
  /** Ends the stream with a last piece of markdown and, optionally, blocks under it. */
  stop(o?: { markdown?: string; blocks?: unknown[] }): Promise<void>;
}

export interface SlackApi {
  /** Calls a Web API method with the bot token. Throws AgentVmError('slack_api_error') on any failure. */
  call(method: string, args?: Record<string, unknown>): Promise<SlackResult>;
  /**
   * A streamed answer in a thread. `recipient` (the person asking, and their team) is required by
   * Slack outside direct messages. Nothing is sent until the first `append`.
   */
  stream(args: { channel: string; threadTs: string; recipient?: { user: string; team: string } }): SlackStream;
  /** getUploadURLExternal → POST bytes → completeUploadExternal into a thread. Returns the file id. */
  uploadFile(args: { channel: string; threadTs: string; name: string; data: Buffer }): Promise<string>;
  /** Downloads a Slack file with the bot token, refusing foreign hosts and anything over `maxBytes`. */
  download(ref: string, opts: { maxBytes: number; mimeType?: string }): Promise<DownloadResult>;
  /** Whether `url` may receive the bot token. */
  isSlackUrl(url: URL): boolean;
}

export function createSlackApi(opts: {
  botToken: string;
  apiUrl: string;
  logger: Logger;
  retryConfig?: RetryOptions;
  timeoutMs?: number;
}): SlackApi {
  const apiOrigin = new URL(opts.apiUrl).origin;
  const client = new WebClient(opts.botToken, {
    slackApiUrl: opts.apiUrl,
    logger: slackLogger(opts.logger),
    retryConfig: opts.retryConfig ?? DEFAULT_RETRY,
    timeout: opts.timeoutMs ?? 30_000,
    // Method names only: an absolute URL must never receive the token by accident.
    allowAbsoluteUrls: false,
  });

  async function call(method: string, args: Record<string, unknown> = {}): Promise<SlackResult> {
    try {
      return (await client.apiCall(method, args)) as SlackResult;
    } catch (err) {
      throw toAgentVmError(method, err);
    }
  }

  function isSlackUrl(url: URL): boolean {
    if (url.origin === apiOrigin) return true;
    return url.protocol === 'https:' && (url.hostname === 'slack.com' || url.hostname.endsWith('.slack.com'));
  }

  async function uploadFile(a: { channel: string; threadTs: string; name: string; data: Buffer }): Promise<string> {
    const got = await call('files.getUploadURLExternal', { filename: a.name, length: a.data.length });
    const uploadUrl = got.upload_url;
    const fileId = got.file_id;
    if (typeof uploadUrl !== 'string' || typeof fileId !== 'string') {
      throw new AgentVmError('slack_api_error', 'files.getUploadURLExternal: no upload_url or file_id', { status: 502, retryable: true });
    }
    // The upload URL is pre-signed: no token goes with the bytes.
    let res: Response;
    try {
      res = await fetch(uploadUrl, {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: a.data,
        signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
      });
      await res.arrayBuffer();
    } catch (err) {
      throw new AgentVmError('slack_upload_failed', `upload of ${a.name}: ${describeError(err)}`, { status: 502, retryable: true, cause: err });
    }
    if (!res.ok) {
      throw new AgentVmError('slack_upload_failed', `upload of ${a.name}: HTTP ${res.status}`, {
        status: 502, retryable: res.status >= 500 || res.status === 429,
      });
    }
    await call('files.completeUploadExternal', {
      files: [{ id: fileId, title: a.name }],
      channel_id: a.channel,
      thread_ts: a.threadTs,
    });
    return fileId;
  }

  async function download(ref: string, o: { maxBytes: number; mimeType?: string }): Promise<DownloadResult> {
    let url: URL;
    try {
      url = new URL(ref);
    } catch {
      return { ok: false, reason: 'not a URL' };
    }
    // Follow redirects by hand so each hop is checked before the token goes with it.
    for (let hop = 0; hop < 4; hop++) {
      if (!isSlackUrl(url)) return { ok: false, reason: 'not a Slack file URL; not downloaded' };
      let res: Response;
      try {
        res = await fetch(url, {
          headers: { Authorization: `Bearer ${opts.botToken}` },
          redirect: 'manual',
          signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
        });
      } catch (err) {
        return { ok: false, reason: `download failed: ${describeError(err)}` };
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        url = new URL(location, url);
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel();
        return { ok: false, reason: `download failed (HTTP ${res.status})` };
      }
      const type = res.headers.get('content-type') ?? '';
      if (type.startsWith('text/html') && !o.mimeType?.startsWith('text/html')) {
        // Slack answers a token without files:read with its sign-in page, status 200.
        await res.body?.cancel();
        return { ok: false, reason: 'Slack returned a sign-in page (does the bot token have files:read?)' };
      }
      const declared = Number(res.headers.get('content-length') ?? NaN);
      if (declared > o.maxBytes) {
        await res.body?.cancel();
        return { ok: false, reason: `too large (${declared} bytes, limit ${o.maxBytes})` };
      }
      return readCapped(res, o.maxBytes);
    }
    return { ok: false, reason: 'too many redirects' };
  }

  function stream(a: { channel: string; threadTs: string; recipient?: { user: string; team: string } }): SlackStream {
    // buffer_size 1: every append is sent at once; the gateway already paces partial answers.
    const streamer: ChatStreamer = client.chatStream({
      channel: a.channel,
      thread_ts: a.threadTs,
      ...(a.recipient ? { recipient_user_id: a.recipient.user, recipient_team_id: a.recipient.team } : {}),
      buffer_size: 1,
    });
    return {
      get ts() {
        return streamer.ts;
      },
      async append(markdown) {
        if (!markdown) return;
        try {
          await streamer.append({ markdown_text: markdown });
        } catch (err) {
          throw toAgentVmError(streamer.ts ? 'chat.appendStream' : 'chat.startStream', err);
        }
      },
      async stop(o = {}) {
        try {
          await streamer.stop({ ...(o.markdown ? { markdown_text: o.markdown } : {}), ...(o.blocks ? { blocks: o.blocks as never } : {}) });
        } catch (err) {
          throw toAgentVmError('chat.stopStream', err);
        }
      },
    };
  }

  return { call, stream, uploadFile, download, isSlackUrl };
}

async function readCapped(res: Response, maxBytes: number): Promise<DownloadResult> {
  try {
    const data = await readBodyCapped(res, maxBytes);
    return data === 'too_large' ? { ok: false, reason: `too large (over ${maxBytes} bytes)` } : { ok: true, data };
  } catch (err) {
    return { ok: false, reason: `download failed: ${describeError(err)}` };
  }
}
