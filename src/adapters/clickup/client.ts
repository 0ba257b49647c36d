/**
 * A small typed client for the parts of the ClickUp API v2 agent-vm uses (ClickUp publishes no
 * official SDK). Every call goes through one retry loop:
 *
 * - 429: wait until `X-RateLimit-Reset` (UTC epoch seconds) and try again, so a burst never
 *   loses a reply; the wait uses the injected clock and sleep so tests need not wait.
 * - 5xx and network failures: a few retries with exponential backoff, then a retryable error.
 * - any other failure: `AgentVmError('clickup_api_error', ..., { retryable: false })`.
 *
 * Deliberately left out: pagination, task/list mutation, OAuth. The token is sent as ClickUp
 * expects (`Authorization: <token>`, personal tokens carry no scheme) and only to the API origin.
 */
import { readBodyCapped } from '../http.js';
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';

export interface ClickUpClientOptions {
  apiUrl: string;
  token: string;
  logger?: Logger;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** How many 429s in a row one call sits out before giving up (retryably). */
  maxRateLimitWaits?: number;
  /** Retries after a 5xx or a network failure. */
  maxServerRetries?: number;
  /** First backoff after a 5xx; doubles each time. */
  backoffMs?: number;
  /** Per-attempt timeout. */
  timeoutMs?: number;
}

export interface ClickUpUser {
  id: number | string;
  username?: string | null;
}

/** The fields of `GET /task/{id}` agent-vm reads. */
export interface ClickUpTask {
  id: string;
  name?: string;
  description?: string | null;
  text_content?: string | null;
  url?: string;
  team_id?: string | number;
  space?: { id: string | number } | null;
  folder?: { id: string | number; hidden?: boolean } | null;
  list?: { id: string | number } | null;
}

/** A comment as `GET /task/{id}/comment` lists it (fields read defensively by callers). */
export interface ClickUpComment {
  id?: unknown;
  comment_text?: unknown;
  comment?: unknown;
  user?: { id?: unknown; username?: unknown; email?: unknown } | null;
  /** Epoch milliseconds, as a string. */
  date?: unknown;
}

export interface ClickUpCommentCreated {
  id: string | number;
  hist_id?: string;
  date?: number;
}

export interface ClickUpAttachmentCreated {
  id: string;
  title?: string;
  url?: string;
}

export interface CreateWebhookInput {
  endpoint: string;
  events: string[];
  space?: string;
  folder?: string;
  list?: string;
}

export interface ClickUpWebhook {
  id: string;
  secret: string;
}

export interface DownloadResult {
  status: 'ok';
  data: Buffer;
}
export type DownloadOutcome = DownloadResult | { status: 'too_large' } | { status: 'failed'; reason: string };

export interface ClickUpClient {
  readonly apiUrl: string;
  getUser(): Promise<ClickUpUser>;
  getTask(taskId: string): Promise<ClickUpTask>;
  postComment(taskId: string, text: string): Promise<ClickUpCommentCreated>;
  /**
   * A task's comments, newest first, 25 at a time: the newest page without `before`, else the
   * page older than the comment `before` names (its id and date, as ClickUp pages them).
   */
  taskComments(taskId: string, before?: { id: string; date: string }): Promise<ClickUpComment[]>;
  uploadAttachment(taskId: string, file: { name: string; data: Buffer }): Promise<ClickUpAttachmentCreated>;
  createWebhook(team: string, input: CreateWebhookInput): Promise<ClickUpWebhook>;
  /** Downloads a file, sending the token only when `url` is on the API's own origin. */
  download(url: string, maxBytes: number): Promise<DownloadOutcome>;
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** ClickUp ids are numeric in some places and strings in others; ids in paths must be plain tokens. */
function pathId(kind: string, id: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    throw new AgentVmError('clickup_bad_id', `invalid ClickUp ${kind} id`, { status: 400 });
  }
  return encodeURIComponent(id);
}

/** ClickUp documents location ids of Create Webhook as numbers; send numeric ids as numbers. */
function idValue(id: string): string | number {
  return /^\d{1,15}$/.test(id) ? Number(id) : id;
}

export function createClickUpClient(opts: ClickUpClientOptions): ClickUpClient {
  const base = opts.apiUrl.replace(/\/+$/, '');
  const apiOrigin = new URL(base).origin;
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? defaultSleep;
  const maxRateLimitWaits = opts.maxRateLimitWaits ?? 10;
  const maxServerRetries = opts.maxServerRetries ?? 3;
  const backoffMs = opts.backoffMs ?? 500;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const log = opts.logger;

  /** One logical request: retried on 429 / 5xx / network errors; returns the first other response. */
  async function send(what: string, url: string, init: () => RequestInit, withToken: boolean): Promise<Response> {
    let rateLimited = 0;
    let failures = 0;
    for (;;) {
      const req = init();
      const headers = new Headers(req.headers);
      if (withToken) headers.set('authorization', opts.token);
      let res: Response;
      try {
        res = await fetch(url, { ...req, headers, signal: AbortSignal.timeout(timeoutMs) });
      } catch (err) {
        if (++failures > maxServerRetries) {
          throw new AgentVmError('clickup_api_error', `${what}: ${describeError(err)}`, { status: 502, retryable: true, cause: err });
        }
        const wait = backoffMs * 2 ** (failures - 1);
        log?.warn({ what, attempt: failures, waitMs: wait, err: describeError(err) }, 'clickup request failed; retrying');
        await sleep(wait);
        continue;
      }
      if (res.status === 429) {
        await res.body?.cancel();
        if (++rateLimited > maxRateLimitWaits) {
          throw new AgentVmError('clickup_api_error', `${what}: still rate limited after ${maxRateLimitWaits} waits`, { status: 503, retryable: true });
        }
        const wait = rateLimitWait(res.headers, now());
        log?.warn({ what, waitMs: wait }, 'clickup rate limit; waiting for the reset');
        await sleep(wait);
        continue;
      }
      if (res.status >= 500) {
        await res.body?.cancel();
        if (++failures > maxServerRetries) {
          throw new AgentVmError('clickup_api_error', `${what}: ClickUp answered HTTP ${res.status}`, { status: 502, retryable: true });
        }
        const wait = backoffMs * 2 ** (failures - 1);
        log?.warn({ what, status: res.status, attempt: failures, waitMs: wait }, 'clickup server error; retrying');
        await sleep(wait);
        continue;
      }
      return res;
    }
  }

  async function api<T>(method: string, path: string, body?: () => NonNullable<RequestInit['body']>, json?: unknown): Promise<T> {
    const what = `${method} ${path.replace(/\?.*$/, '')}`;
    const res = await send(
      what,
      `${base}${path}`,
      () => {
        const headers: Record<string, string> = { accept: 'application/json' };
        if (json !== undefined) headers['content-type'] = 'application/json';
        return { method, headers, body: json !== undefined ? JSON.stringify(json) : body?.() };
      },
      true,
    );
    const text = await res.text();
    if (!res.ok) {
      throw new AgentVmError('clickup_api_error', `${what}: HTTP ${res.status}${errorDetail(text)}`, { status: 502, retryable: false });
    }
    try {
      return (text === '' ? {} : JSON.parse(text)) as T;
    } catch (err) {
      throw new AgentVmError('clickup_api_error', `${what}: response is not JSON`, { status: 502, cause: err });
    }
  }

  return {
    apiUrl: base,

    async getUser() {
      const r = await api<{ user?: ClickUpUser }>('GET', '/user');
      if (!r.user || (typeof r.user.id !== 'number' && typeof r.user.id !== 'string')) {
        throw new AgentVmError('clickup_api_error', 'GET /user: no user in the response', { status: 502 });
      }
      return r.user;
    },

    async getTask(taskId) {
      const r = await api<ClickUpTask>('GET', `/task/${pathId('task', taskId)}`);
      if (typeof r.id !== 'string' && typeof r.id !== 'number') {
        throw new AgentVmError('clickup_api_error', 'GET /task: no task in the response', { status: 502 });
      }
      return { ...r, id: String(r.id) };
    },

    postComment(taskId, text) {
      return api<ClickUpCommentCreated>('POST', `/task/${pathId('task', taskId)}/comment`, undefined, {
        comment_text: text,
        notify_all: false,
      });
    },

    async taskComments(taskId, before) {
      const q = before ? `?start=${encodeURIComponent(before.date)}&start_id=${encodeURIComponent(before.id)}` : '';
      const r = await api<{ comments?: unknown }>('GET', `/task/${pathId('task', taskId)}/comment${q}`);
      return Array.isArray(r.comments) ? (r.comments as ClickUpComment[]) : [];
    },

    uploadAttachment(taskId, file) {
      // A fresh FormData per attempt: a retried upload must send the whole file again.
      return api<ClickUpAttachmentCreated>('POST', `/task/${pathId('task', taskId)}/attachment`, () => {
        const form = new FormData();
        form.append('attachment', new Blob([new Uint8Array(file.data)]), file.name);
        return form;
      });
    },

    async createWebhook(team, input) {
      const body: Record<string, unknown> = { endpoint: input.endpoint, events: input.events };
      if (input.space !== undefined) body.space_id = idValue(input.space);
      if (input.folder !== undefined) body.folder_id = idValue(input.folder);
      if (input.list !== undefined) body.list_id = idValue(input.list);
      const r = await api<{ id?: string; webhook?: { id?: string; secret?: string } }>(
        'POST',
        `/team/${pathId('team', team)}/webhook`,
        undefined,
        body,
      );
      const id = r.webhook?.id ?? r.id;
      const secret = r.webhook?.secret;
      if (typeof id !== 'string' || typeof secret !== 'string' || secret === '') {
        throw new AgentVmError('clickup_api_error', 'POST /team/{id}/webhook: no webhook id or secret in the response', { status: 502 });
      }
      return { id, secret };
    },

    async download(url, maxBytes) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return { status: 'failed', reason: 'not a URL' };
      }
      if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return { status: 'failed', reason: 'not an http(s) URL' };
      let res: Response;
      try {
        res = await send('download attachment', parsed.href, () => ({ method: 'GET' }), parsed.origin === apiOrigin);
      } catch (err) {
        return { status: 'failed', reason: describeError(err) };
      }
      if (!res.ok) {
        await res.body?.cancel();
        return { status: 'failed', reason: `download failed (HTTP ${res.status})` };
      }
      const declared = Number(res.headers.get('content-length'));
      if (Number.isFinite(declared) && declared > maxBytes) {
        await res.body?.cancel();
        return { status: 'too_large' };
      }
      return readCapped(res, maxBytes);
    },
  };
}

/** Reads a body but stops (and reports) once it passes `maxBytes`, whatever Content-Length claimed. */
async function readCapped(res: Response, maxBytes: number): Promise<DownloadOutcome> {
  try {
    const data = await readBodyCapped(res, maxBytes);
    return data === 'too_large' ? { status: 'too_large' } : { status: 'ok', data };
  } catch (err) {
    return { status: 'failed', reason: `download failed (${describeError(err)})` };
  }
}

/** Milliseconds until `X-RateLimit-Reset`; a short default when the header is missing or already past. */
export function rateLimitWait(headers: Headers, nowMs: number): number {
  const reset = Number(headers.get('x-ratelimit-reset'));
  const MIN_MS = 1_000;
  const MAX_MS = 120_000;
  if (!Number.isFinite(reset) || reset <= 0) return MIN_MS;
  const wait = reset * 1000 - nowMs;
  return Math.min(Math.max(wait, MIN_MS), MAX_MS);
}

/** ClickUp errors look like `{"err": "...", "ECODE": "..."}`; echo those, never a whole body. */
function errorDetail(text: string): string {
  try {
    const j = JSON.parse(text) as { err?: unknown; ECODE?: unknown };
    const parts = [typeof j.err === 'string' ? j.err.slice(0, 200) : undefined, typeof j.ECODE === 'string' ? j.ECODE.slice(0, 40) : undefined];
    const detail = parts.filter(Boolean).join(' ');
    return detail ? ` (${detail})` : '';
  } catch {
    return '';
  }
}
