/**
 * A local stand-in for the ClickUp API v2, enough for the ClickUp adapter: it checks the
 * `Authorization` token like the real API, answers in the documented shapes, sends the
 * documented rate-limit headers, and records every call for assertions.
 *
 * Handled: GET /user, GET /task/{id}, POST /task/{id}/comment, GET /task/{id}/comment (newest
 * first, 25 a page, older pages by `start` + `start_id`), POST /task/{id}/attachment (multipart,
 * field `attachment`), POST /team/{id}/webhook, and file downloads under /attachments/ (standing
 * in for ClickUp's attachment host; `private` files need the token). `delay` slows the API down
 * (to show a webhook is acknowledged without waiting for it).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { closeServer, headersOf, listen, readBody, type RecordedCall as HttpCall } from './http.js';

export interface FakeTask {
  id: string;
  name: string;
  description?: string;
  text_content?: string;
  team_id: string;
  space: { id: string };
  folder: { id: string; hidden?: boolean };
  list: { id: string };
  url?: string;
}

export interface RecordedFile {
  field: string;
  name: string;
  data: Buffer;
}

/** A call; `path` is without the `/api/v2` prefix for API calls. */
export type RecordedCall = HttpCall<RecordedFile>;

export interface FakeClickUp {
  /** API base, ending in `/api/v2`. */
  url: string;
  origin: string;
  token: string;
  /** The token's own user (what GET /user returns). */
  user: { id: number; username: string };
  calls: RecordedCall[];
  tasks: Map<string, FakeTask>;
  /** Comments per task, oldest first (posted through the API, or seeded with `addComment`). */
  comments: Map<string, FakeComment[]>;
  /** A comment someone wrote on a task; returns it. */
  addComment(taskId: string, c: { user?: { id: number; username: string }; text: string; date?: number; files?: string[] }): FakeComment;
  /** Every API call answers only after `ms` (0: at once). */
  delay(ms: number): void;
  /** Answers no API call until the returned function is called (a ClickUp that hangs). */
  hang(): () => void;
  /** Webhooks created through the API, with their secrets. */
  webhooks: Array<{ id: string; team: string; secret: string; body: unknown }>;
  /** Serves `data` at a download URL on this fake and returns the URL. */
  addFile(name: string, data: Buffer, opts?: { private?: boolean }): string;
  /** The next `times` API calls answer 429 with `X-RateLimit-Reset: resetEpochSeconds`. */
  rateLimitNext(resetEpochSeconds: number, times?: number): void;
  /** The next `times` API calls (only those whose `METHOD path` matches `match`, when given) answer `status` (e.g. 502). */
  failNext(status: number, times?: number, match?: RegExp): void;
  /** Drops failures not yet used. */
  clearFailures(): void;
  /** Calls whose method and path match. */
  find(method: string, path: string | RegExp): RecordedCall[];
  close(): Promise<void>;
}

export interface FakeComment {
  id: string;
  comment_text: string;
  comment: unknown[];
  user: { id: number; username: string; email: string };
  /** Epoch ms, as a string. */
  date: string;
}

export interface FakeClickUpOptions {
  token?: string;
  user?: { id: number; username: string };
}

const API_PREFIX = '/api/v2';

export async function startFakeClickUp(opts: FakeClickUpOptions = {}): Promise<FakeClickUp> {
  const token = opts.token ?? `pk_${randomBytes(8).toString('hex')}`;
  const user = opts.user ?? { id: 9_000_001, username: 'agent-vm bot' };
  const calls: RecordedCall[] = [];
  const tasks = new Map<string, FakeTask>();
  const files = new Map<string, { data: Buffer; private: boolean }>();
  const webhooks: FakeClickUp['webhooks'] = [];
  const rateLimits: number[] = [];
  const failures: Array<{ status: number; match?: RegExp }> = [];
  const comments = new Map<string, FakeComment[]>();
  let delayMs = 0;
  let hung: Promise<void> | undefined;
  let nextId = 1000;
  let clockMs = Date.now();
  const addComment = (taskId: string, c: { user?: { id: number; username: string }; text: string; date?: number; files?: string[] }): FakeComment => {
    clockMs = Math.max(clockMs + 1, c.date ?? Date.now());
    const u = c.user ?? { id: 183, username: 'John' };
    const made: FakeComment = {
      id: String(nextId++),
      comment_text: c.text,
      comment: [{ text: c.text }, ...(c.files ?? []).map((f) => ({ type: 'attachment', text: f, attachment: { title: f, url: `https://x/${f}` } }))],
      user: { ...u, email: `${u.username}@example.com` },
      date: String(c.date ?? clockMs),
    };
    comments.set(taskId, [...(comments.get(taskId) ?? []), made]);
    return made;
  };

  const server = http.createServer((req, res) => {
    readBody(req)
      .then((body) => handle(req, body))
      .then(
        (r) => reply(res, r),
        (err: unknown) => reply(res, { status: 500, json: { err: String(err), ECODE: 'FAKE_500' } }),
      );
  });

  interface Answer {
    status: number;
    json?: unknown;
    raw?: Buffer;
    headers?: Record<string, string>;
  }

  function reply(res: http.ServerResponse, a: Answer): void {
    const headers: Record<string, string> = {
      'x-ratelimit-limit': '100',
      'x-ratelimit-remaining': '99',
      'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 60),
      ...a.headers,
    };
    if (a.raw) {
      res.writeHead(a.status, { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(a.raw.length) });
      res.end(a.raw);
      return;
    }
    res.writeHead(a.status, { ...headers, 'content-type': 'application/json' });
    res.end(JSON.stringify(a.json ?? {}));
  }

  async function handle(req: http.IncomingMessage, body: Buffer): Promise<Answer> {
    const u = new URL(req.url ?? '/', 'http://fake');
    const isApi = u.pathname.startsWith(`${API_PREFIX}/`);
    const path = isApi ? u.pathname.slice(API_PREFIX.length) : u.pathname;
    const headers = headersOf(req);
    const call: RecordedCall = { method: req.method ?? 'GET', path, headers, files: [], status: 0 };
    calls.push(call);
    const answer = (a: Answer): Answer => {
      call.status = a.status;
      return a;
    };

    const contentType = headers['content-type'] ?? '';
    if (contentType.includes('application/json') && body.length > 0) {
      try {
        call.json = JSON.parse(body.toString('utf8'));
      } catch {
        return answer({ status: 400, json: { err: 'Invalid JSON', ECODE: 'JSON_001' } });
      }
    } else if (contentType.startsWith('multipart/form-data')) {
      const form = await new Request('http://fake/', { method: 'POST', headers: { 'content-type': contentType }, body }).formData();
      for (const [field, value] of form.entries()) {
        if (typeof value !== 'string') call.files.push({ field, name: value.name, data: Buffer.from(await value.arrayBuffer()) });
      }
    }

    if (!isApi) {
      const m = /^\/attachments\/([^/]+)\/[^/]+$/.exec(u.pathname);
      const file = m ? files.get(m[1]!) : undefined;
      if (!file) return answer({ status: 404, json: { err: 'Not found' } });
      if (file.private && headers.authorization !== token) return answer({ status: 401, json: { err: 'Token invalid', ECODE: 'OAUTH_025' } });
      return answer({ status: 200, raw: file.data });
    }

    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (hung && isApi) await hung;
    if (!headers.authorization) return answer({ status: 400, json: { err: 'Authorization header required', ECODE: 'OAUTH_017' } });
    if (headers.authorization !== token) return answer({ status: 401, json: { err: 'Token invalid', ECODE: 'OAUTH_025' } });

    const limited = rateLimits.shift();
    if (limited !== undefined) {
      return answer({
        status: 429,
        json: { err: 'Rate limit reached', ECODE: 'APP_002' },
        headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(limited) },
      });
    }
    const at = failures.findIndex((f) => !f.match || f.match.test(`${call.method} ${path}`));
    if (at >= 0) {
      const [failure] = failures.splice(at, 1);
      return answer({ status: failure!.status, json: { err: 'Internal error', ECODE: 'FAKE_FAIL' } });
    }

    let m: RegExpExecArray | null;
    if (call.method === 'GET' && path === '/user') {
      return answer({ status: 200, json: { user: { ...user, email: 'bot@example.com', color: '#000000', initials: 'AV', profilePicture: null } } });
    }
    if ((m = /^\/task\/([^/]+)$/.exec(path)) && call.method === 'GET') {
      const task = tasks.get(decodeURIComponent(m[1]!));
      if (!task) return answer({ status: 404, json: { err: 'Task not found', ECODE: 'ITEM_013' } });
      return answer({
        status: 200,
        json: {
          ...task,
          text_content: task.text_content ?? task.description ?? '',
          description: task.description ?? '',
          url: task.url ?? `https://app.clickup.com/t/${task.id}`,
          list: { ...task.list, name: 'List', access: true },
          folder: { hidden: false, ...task.folder, name: 'Folder', access: true },
          project: { ...task.folder, name: 'Folder', access: true },
          space: task.space,
          attachments: [],
        },
      });
    }
    if ((m = /^\/task\/([^/]+)\/comment$/.exec(path)) && call.method === 'POST') {
      if (!tasks.has(decodeURIComponent(m[1]!))) return answer({ status: 404, json: { err: 'Task not found', ECODE: 'ITEM_013' } });
      const j = call.json as { comment_text?: unknown } | undefined;
      if (typeof j?.comment_text !== 'string') return answer({ status: 400, json: { err: 'Comment text required', ECODE: 'COMM_002' } });
      const made = addComment(decodeURIComponent(m[1]!), { user, text: j.comment_text });
      return answer({ status: 200, json: { id: Number(made.id), hist_id: randomUUID(), date: Number(made.date) } });
    }
    if ((m = /^\/task\/([^/]+)\/comment$/.exec(path)) && call.method === 'GET') {
      const taskId = decodeURIComponent(m[1]!);
      if (!tasks.has(taskId)) return answer({ status: 404, json: { err: 'Task not found', ECODE: 'ITEM_013' } });
      const newest = [...(comments.get(taskId) ?? [])].reverse();
      const startId = u.searchParams.get('start_id');
      const from = startId ? newest.findIndex((c) => c.id === startId) + 1 : 0;
      return answer({ status: 200, json: { comments: newest.slice(from, from + 25) } });
    }
    if ((m = /^\/task\/([^/]+)\/attachment$/.exec(path)) && call.method === 'POST') {
      if (!tasks.has(decodeURIComponent(m[1]!))) return answer({ status: 404, json: { err: 'Task not found', ECODE: 'ITEM_013' } });
      const f = call.files.find((x) => x.field === 'attachment');
      if (!f) return answer({ status: 400, json: { err: 'No attachment supplied', ECODE: 'UPLOAD_002' } });
      const id = `${randomUUID()}.${f.name.split('.').pop() ?? 'bin'}`;
      return answer({
        status: 200,
        json: { id, version: '0', date: Date.now(), title: f.name, extension: f.name.split('.').pop() ?? '', url: `${origin}/attachments/${id}/${encodeURIComponent(f.name)}` },
      });
    }
    if ((m = /^\/team\/([^/]+)\/webhook$/.exec(path)) && call.method === 'POST') {
      const j = (call.json ?? {}) as { endpoint?: unknown; events?: unknown; space_id?: unknown; folder_id?: unknown; list_id?: unknown };
      if (typeof j.endpoint !== 'string' || !Array.isArray(j.events)) {
        return answer({ status: 400, json: { err: 'Endpoint and events required', ECODE: 'WEBHOOK_001' } });
      }
      const id = randomUUID();
      const secret = randomBytes(32).toString('hex').toUpperCase();
      webhooks.push({ id, team: m[1]!, secret, body: j });
      return answer({
        status: 200,
        json: {
          id,
          webhook: {
            id,
            userid: user.id,
            team_id: Number(m[1]),
            endpoint: j.endpoint,
            client_id: 'FAKECLIENT',
            events: j.events,
            task_id: null,
            list_id: j.list_id ?? null,
            folder_id: j.folder_id ?? null,
            space_id: j.space_id ?? null,
            health: { status: 'active', fail_count: 0 },
            secret,
          },
        },
      });
    }
    return answer({ status: 404, json: { err: `Route not found: ${call.method} ${path}`, ECODE: 'APP_001' } });
  }

  const origin = await listen(server);

  return {
    url: `${origin}${API_PREFIX}`,
    origin,
    token,
    user,
    calls,
    tasks,
    comments,
    addComment,
    delay(ms) {
      delayMs = ms;
    },
    hang() {
      let release!: () => void;
      hung = new Promise<void>((r) => (release = r));
      return () => {
        hung = undefined;
        release();
      };
    },
    webhooks,
    addFile(name, data, o = {}) {
      const id = randomUUID();
      files.set(id, { data, private: o.private ?? false });
      return `${origin}/attachments/${id}/${encodeURIComponent(name)}`;
    },
    rateLimitNext(resetEpochSeconds, times = 1) {
      for (let i = 0; i < times; i++) rateLimits.push(resetEpochSeconds);
    },
    failNext(status, times = 1, match) {
      for (let i = 0; i < times; i++) failures.push({ status, ...(match ? { match } : {}) });
    },
    clearFailures() {
      failures.length = 0;
    },
    find(method, path) {
      return calls.filter((c) => c.method === method && (typeof path === 'string' ? c.path === path : path.test(c.path)));
    },
    close: () => closeServer(server),
  };
}
