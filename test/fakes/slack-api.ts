/**
 * A local stand-in for the Slack Web API (https://docs.slack.dev/reference/methods), enough for the
 * adapter: auth.test, chat.postMessage, chat.update, chat.postEphemeral, assistant.threads.setStatus, the three-step
 * file upload, bot-token file downloads, Socket Mode (apps.connections.open + a WebSocket), the
 * streaming methods for AI apps (chat.startStream / appendStream / stopStream: markdown_text or
 * `markdown_text` chunks, recipient required outside DMs, appends only while streaming),
 * reactions.add / reactions.remove, and conversations.replies (threads seeded with `addThreadMessage`,
 * oldest/latest bounds, pagination). `delay` slows methods down (to show an ack never waits for them).
 * Every call is recorded. Bodies are parsed the way Slack does: JSON, form-encoded (with JSON in
 * array/object fields) or multipart.
 *
 * Like Slack, errors are HTTP 200 with `{ok:false, error}`; only rate limits use 429 + Retry-After.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { closeServer, headersOf, listen, readBody } from './http.js';

export interface FakeSlackCall {
  method: string;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

export interface FakeMessage {
  channel: string;
  ts: string;
  thread_ts?: string;
  text: string;
  /** Block Kit blocks, when the message has any (chat.update replaces them). */
  blocks?: unknown[];
  /** Earlier texts, oldest first, when chat.update changed it. */
  history: string[];
  /** Streamed with chat.startStream: true while the stream is open. */
  streaming?: boolean;
  /** Every markdown piece a stream received, in order (start, appends, stop). */
  pieces?: string[];
  /** Who wrote it, for messages seeded into threads (the bot's own otherwise). */
  user?: string;
  files?: Array<{ name: string }>;
}

export interface FakeReaction {
  channel: string;
  ts: string;
  name: string;
}

/** A message only one user sees (chat.postEphemeral). */
export interface FakeEphemeral {
  channel: string;
  user: string;
  text: string;
  thread_ts?: string;
}

export interface FakeUpload {
  id: string;
  filename: string;
  length: number;
  data?: Buffer;
  title?: string;
  channel_id?: string;
  thread_ts?: string;
  completed: boolean;
}

export type FakeFailure = { status: 429; retryAfter: number } | { error: string; needed?: string };

export interface FakeSlack {
  /** Web API base, ending with `/api/`. */
  url: string;
  origin: string;
  botToken: string;
  appToken: string;
  botUserId: string;
  teamId: string;
  calls: FakeSlackCall[];
  messages: FakeMessage[];
  ephemerals: FakeEphemeral[];
  uploads: FakeUpload[];
  /** Every GET of a file: the path and the Authorization header it carried. */
  downloads: Array<{ path: string; authorization?: string }>;
  /** 'ok', or the `error` assistant.threads.setStatus answers (e.g. 'not_allowed_token_type'). */
  assistantStatus: string;
  /** 'ok', or the `error` chat.startStream answers (e.g. 'not_allowed_token_type'). */
  streaming: string;
  /** 'ok', or the `error` reactions.add/remove answer (e.g. 'missing_scope'). */
  reactionsAllowed: string;
  reactions: FakeReaction[];
  /** Answers `method` (every API method for '*') only after `ms`. */
  delay(method: string, ms: number): void;
  /** Answers no API call until the returned function is called (a Slack that hangs). */
  hang(): () => void;
  /** A message someone else wrote, visible to conversations.replies. Returns its ts. */
  addThreadMessage(m: { channel: string; threadTs?: string; ts?: string; user?: string; botId?: string; text: string; files?: string[] }): string;
  callsTo(method: string): FakeSlackCall[];
  /**
   * The next call of `method` fails (`upload`: the POST of a file's bytes to its pre-signed URL).
   * `a|b`: the next call of either (whichever the adapter uses first, e.g. a post or a stream).
   */
  failNext(method: string, failure: FakeFailure): void;
  /** Serves `data` to holders of the bot token; returns the file's `url_private_download`. */
  addFile(name: string, data: Buffer | string, opts?: { mimetype?: string; omitLength?: boolean }): string;
  /** A file URL on the fake that redirects to `location`. */
  addRedirect(location: string): string;
  /**
   * Sends an envelope over Socket Mode (`events_api` unless `type` says otherwise, e.g.
   * `interactive` for a button press); resolves when the client acks it (or not, after `timeoutMs`).
   */
  deliverSocket(payload: unknown, opts?: { retryAttempt?: number; timeoutMs?: number; type?: 'events_api' | 'interactive' }): Promise<{ acked: boolean }>;
  socketConnected(): boolean;
  close(): Promise<void>;
}

const JSON_FIELDS = new Set(['files', 'blocks', 'attachments', 'loading_messages', 'metadata', 'chunks']);

async function parseBody(raw: Buffer, contentType: string): Promise<Record<string, unknown>> {
  if (raw.length === 0) return {};
  if (contentType.includes('application/json')) return JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
  let entries: Array<[string, unknown]>;
  if (contentType.includes('multipart/form-data')) {
    const form = await new Response(raw, { headers: { 'content-type': contentType } }).formData();
    entries = [...form.entries()].map(([k, v]) => [k, typeof v === 'string' ? v : v]);
  } else {
    entries = [...new URLSearchParams(raw.toString('utf8')).entries()];
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) {
    out[k] = typeof v === 'string' && JSON_FIELDS.has(k) && /^[[{]/.test(v) ? JSON.parse(v) : v;
  }
  return out;
}

export async function startFakeSlack(opts: { botToken?: string; appToken?: string } = {}): Promise<FakeSlack> {
  const botToken = opts.botToken ?? 'xoxb-fake-bot-token';
  const appToken = opts.appToken ?? 'xapp-fake-app-token';
  const botUserId = 'UBOT0001';
  const teamId = 'T0FAKE';
  const failures = new Map<string, FakeFailure[]>();
  const delays = new Map<string, number>();
  let hung: Promise<void> | undefined;
  const files = new Map<string, { data: Buffer; mimetype: string; omitLength: boolean } | { redirect: string }>();
  let seq = 0;
  const nextTs = () => `1700000000.${String(++seq).padStart(6, '0')}`;
  const sockets = new Set<WebSocket>();
  const pendingAcks = new Map<string, () => void>();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (!req.url?.startsWith('/link/')) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.on('close', () => sockets.delete(ws));
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data)) as { envelope_id?: string };
        if (msg.envelope_id) pendingAcks.get(msg.envelope_id)?.();
      });
      ws.send(JSON.stringify({ type: 'hello', num_connections: 1, connection_info: { app_id: 'AFAKE' } }));
    });
  });
  const origin = await listen(server);

  const fake: FakeSlack = {
    url: `${origin}/api/`,
    origin,
    botToken,
    appToken,
    botUserId,
    teamId,
    calls: [],
    messages: [],
    ephemerals: [],
    uploads: [],
    downloads: [],
    assistantStatus: 'ok',
    streaming: 'ok',
    reactionsAllowed: 'ok',
    reactions: [],
    delay(method, ms) {
      delays.set(method, ms);
    },
    hang() {
      let release!: () => void;
      hung = new Promise<void>((r) => (release = r));
      return () => {
        hung = undefined;
        release();
      };
    },
    addThreadMessage(m) {
      const ts = m.ts ?? nextTs();
      fake.messages.push({
        channel: m.channel, ts, ...(m.threadTs ? { thread_ts: m.threadTs } : {}), text: m.text, history: [],
        user: m.user ?? (m.botId ? undefined : 'UHUMAN1'), ...(m.botId ? { botId: m.botId } : {}),
        ...(m.files ? { files: m.files.map((name) => ({ name })) } : {}),
      } as FakeMessage);
      return ts;
    },
    callsTo: (method) => fake.calls.filter((c) => c.method === method),
    failNext(method, failure) {
      failures.set(method, [...(failures.get(method) ?? []), failure]);
    },
    addFile(name, data, o = {}) {
      const id = `F${String(++seq).padStart(8, '0')}`;
      files.set(id, { data: Buffer.from(data), mimetype: o.mimetype ?? 'application/octet-stream', omitLength: o.omitLength ?? false });
      return `${origin}/files-pri/${teamId}-${id}/download/${encodeURIComponent(name)}`;
    },
    addRedirect(location) {
      const id = `F${String(++seq).padStart(8, '0')}`;
      files.set(id, { redirect: location });
      return `${origin}/files-pri/${teamId}-${id}/download/redirect`;
    },
    deliverSocket(payload, o = {}) {
      const [ws] = [...sockets];
      if (!ws) return Promise.reject(new Error('no Socket Mode client connected'));
      const envelopeId = randomUUID();
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          pendingAcks.delete(envelopeId);
          resolve({ acked: false });
        }, o.timeoutMs ?? 3000);
        pendingAcks.set(envelopeId, () => {
          clearTimeout(timer);
          pendingAcks.delete(envelopeId);
          resolve({ acked: true });
        });
        ws.send(JSON.stringify({
          envelope_id: envelopeId,
          type: o.type ?? 'events_api',
          accepts_response_payload: false,
          retry_attempt: o.retryAttempt ?? 0,
          retry_reason: o.retryAttempt ? 'timeout' : '',
          payload,
        }));
      });
    },
    socketConnected: () => sockets.size > 0,
    async close() {
      for (const ws of sockets) ws.terminate();
      wss.close();
      await closeServer(server);
    },
  };

  function bearer(req: http.IncomingMessage, body: Record<string, unknown>): string | undefined {
    const h = req.headers.authorization;
    if (h?.startsWith('Bearer ')) return h.slice('Bearer '.length);
    return typeof body.token === 'string' ? body.token : undefined;
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', origin);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(JSON.stringify(body));
    };

    if (req.method === 'GET' && url.pathname.startsWith('/files-pri/')) {
      const authorization = req.headers.authorization;
      fake.downloads.push({ path: url.pathname, ...(authorization ? { authorization } : {}) });
      const id = /^\/files-pri\/[^-/]+-([^/]+)\//.exec(url.pathname)?.[1] ?? '';
      const f = files.get(id);
      if (f && 'redirect' in f) {
        res.writeHead(302, { location: f.redirect });
        return void res.end();
      }
      if (authorization !== `Bearer ${botToken}`) {
        // What Slack does for a missing or wrong token: its sign-in page, with status 200.
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return void res.end('<!DOCTYPE html><html><body>Sign in to Slack</body></html>');
      }
      if (!f) return void send(404, { ok: false, error: 'file_not_found' });
      if (f.omitLength) {
        // Chunked, so a reader only learns the size by streaming it.
        res.writeHead(200, { 'content-type': f.mimetype });
        for (let i = 0; i < f.data.length; i += 1024) res.write(f.data.subarray(i, i + 1024));
        return void res.end();
      }
      res.writeHead(200, { 'content-type': f.mimetype, 'content-length': String(f.data.length) });
      return void res.end(f.data);
    }

    if (req.method === 'POST' && url.pathname.startsWith('/upload/v1/')) {
      const id = url.pathname.slice('/upload/v1/'.length);
      const upload = fake.uploads.find((u) => u.id === id);
      const raw = await readBody(req);
      if (!upload) return void send(404, { ok: false, error: 'invalid_upload' });
      // `failNext('upload', …)`: the pre-signed upload URL refuses the bytes (a transient error as 503, any other as 403).
      const refused = failures.get('upload')?.shift();
      if (failures.get('upload')?.length === 0) failures.delete('upload');
      if (refused) return void send('status' in refused ? 429 : refused.error === 'internal_error' ? 503 : 403, { ok: false, error: 'status' in refused ? 'ratelimited' : refused.error });
      let data = raw;
      const ct = req.headers['content-type'] ?? '';
      if (ct.includes('multipart/form-data')) {
        const form = await new Response(raw, { headers: { 'content-type': ct } }).formData();
        const file = [...form.values()].find((v) => typeof v !== 'string');
        data = file && typeof file !== 'string' ? Buffer.from(await file.arrayBuffer()) : Buffer.alloc(0);
      }
      upload.data = data;
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end(`OK - ${data.length}`);
    }

    if (req.method !== 'POST' || !url.pathname.startsWith('/api/')) return void send(404, { ok: false, error: 'unknown_method' });
    const method = url.pathname.slice('/api/'.length);
    const body = await parseBody(await readBody(req), req.headers['content-type'] ?? '');
    fake.calls.push({ method, body, headers: headersOf(req) });
    const wait = delays.get(method) ?? delays.get('*');
    if (wait) await new Promise((r) => setTimeout(r, wait));
    if (hung) await hung;

    const key = failures.has(method) ? method : [...failures.keys()].find((k) => k.split('|').includes(method));
    const queued = key === undefined ? undefined : failures.get(key);
    const failure = queued?.shift();
    if (key !== undefined && queued?.length === 0) failures.delete(key);
    if (failure) {
      if ('status' in failure) return void send(failure.status, { ok: false, error: 'ratelimited' }, { 'retry-after': String(failure.retryAfter) });
      return void send(200, { ok: false, error: failure.error, ...(failure.needed ? { needed: failure.needed, provided: 'chat:write' } : {}) });
    }

    const token = bearer(req, body);
    const wanted = method === 'apps.connections.open' ? appToken : botToken;
    if (!token) return void send(200, { ok: false, error: 'not_authed' });
    if (token !== wanted) return void send(200, { ok: false, error: token === botToken || token === appToken ? 'not_allowed_token_type' : 'invalid_auth' });

    const str = (k: string) => (typeof body[k] === 'string' || typeof body[k] === 'number' ? String(body[k]) : undefined);
    switch (method) {
      case 'auth.test':
        return void send(200, { ok: true, url: 'https://fake.slack.com/', team: 'Fake', user: 'agent', team_id: teamId, user_id: botUserId, bot_id: 'BFAKE' });
      case 'apps.connections.open':
        return void send(200, { ok: true, url: `${origin.replace(/^http/, 'ws')}/link/?ticket=${randomUUID()}` });
      case 'chat.postMessage': {
        const channel = str('channel');
        const text = str('text');
        if (!channel) return void send(200, { ok: false, error: 'channel_not_found' });
        if (!text) return void send(200, { ok: false, error: 'no_text' });
        if (text.length > 40_000) return void send(200, { ok: false, error: 'msg_too_long' });
        const ts = nextTs();
        const threadTs = str('thread_ts');
        const blocks = Array.isArray(body.blocks) ? (body.blocks as unknown[]) : undefined;
        fake.messages.push({ channel, ts, ...(threadTs ? { thread_ts: threadTs } : {}), text, ...(blocks ? { blocks } : {}), history: [] });
        return void send(200, { ok: true, channel, ts, message: { type: 'message', text, user: botUserId, ts, ...(threadTs ? { thread_ts: threadTs } : {}) } });
      }
      case 'chat.update': {
        const m = fake.messages.find((x) => x.channel === str('channel') && x.ts === str('ts'));
        const text = str('text');
        if (!m) return void send(200, { ok: false, error: 'message_not_found' });
        if (!text) return void send(200, { ok: false, error: 'no_text' });
        m.history.push(m.text);
        m.text = text;
        if (body.blocks !== undefined) {
          if (Array.isArray(body.blocks)) m.blocks = body.blocks as unknown[];
          else delete m.blocks;
        }
        return void send(200, { ok: true, channel: m.channel, ts: m.ts, text });
      }
      case 'chat.postEphemeral': {
        const channel = str('channel');
        const user = str('user');
        const text = str('text');
        if (!channel) return void send(200, { ok: false, error: 'channel_not_found' });
        if (!user) return void send(200, { ok: false, error: 'user_not_in_channel' });
        if (!text) return void send(200, { ok: false, error: 'no_text' });
        const threadTs = str('thread_ts');
        fake.ephemerals.push({ channel, user, text, ...(threadTs ? { thread_ts: threadTs } : {}) });
        return void send(200, { ok: true, message_ts: nextTs() });
      }
      case 'assistant.threads.setStatus':
        if (fake.assistantStatus !== 'ok') return void send(200, { ok: false, error: fake.assistantStatus });
        if (!str('channel_id') || !str('thread_ts') || body.status === undefined) return void send(200, { ok: false, error: 'invalid_arguments' });
        return void send(200, { ok: true });
      case 'chat.startStream': {
        if (fake.streaming !== 'ok') return void send(200, { ok: false, error: fake.streaming });
        const channel = str('channel');
        if (!channel) return void send(200, { ok: false, error: 'channel_not_found' });
        // Outside DMs Slack needs to know who the streamed answer is for.
        if (!channel.startsWith('D') && (!str('recipient_user_id') || !str('recipient_team_id'))) return void send(200, { ok: false, error: 'invalid_arguments' });
        const text = streamText(body);
        if (text === undefined) return void send(200, { ok: false, error: 'invalid_chunks' });
        if (text.length > 12_000) return void send(200, { ok: false, error: 'msg_too_long' });
        const ts = nextTs();
        const threadTs = str('thread_ts');
        fake.messages.push({ channel, ts, ...(threadTs ? { thread_ts: threadTs } : {}), text, history: [], streaming: true, pieces: [text] });
        return void send(200, { ok: true, channel, ts });
      }
      case 'chat.appendStream':
      case 'chat.stopStream': {
        const m = fake.messages.find((x) => x.channel === str('channel') && x.ts === str('ts'));
        if (!m) return void send(200, { ok: false, error: 'message_not_found' });
        if (!m.streaming) return void send(200, { ok: false, error: 'message_not_in_streaming_state' });
        const text = streamText(body);
        if (method === 'chat.appendStream' && !text) return void send(200, { ok: false, error: 'invalid_chunks' });
        if (text && m.text.length + text.length > 40_000) return void send(200, { ok: false, error: 'msg_too_long' });
        if (text) {
          m.text += text;
          m.pieces!.push(text);
        }
        if (method === 'chat.stopStream') {
          m.streaming = false;
          if (Array.isArray(body.blocks)) m.blocks = body.blocks as unknown[];
        }
        return void send(200, { ok: true, channel: m.channel, ts: m.ts });
      }
      case 'reactions.add':
      case 'reactions.remove': {
        if (fake.reactionsAllowed !== 'ok') return void send(200, { ok: false, error: fake.reactionsAllowed, ...(fake.reactionsAllowed === 'missing_scope' ? { needed: 'reactions:write' } : {}) });
        const r = { channel: str('channel') ?? '', ts: str('timestamp') ?? '', name: str('name') ?? '' };
        const at = fake.reactions.findIndex((x) => x.channel === r.channel && x.ts === r.ts && x.name === r.name);
        if (method === 'reactions.add') {
          if (at >= 0) return void send(200, { ok: false, error: 'already_reacted' });
          fake.reactions.push(r);
        } else {
          if (at < 0) return void send(200, { ok: false, error: 'no_reaction' });
          fake.reactions.splice(at, 1);
        }
        return void send(200, { ok: true });
      }
      case 'conversations.replies': {
        const channel = str('channel');
        const root = str('ts');
        if (!channel || !root) return void send(200, { ok: false, error: 'invalid_arguments' });
        const oldest = Number(str('oldest') ?? 0);
        const latest = Number(str('latest') ?? Number.MAX_SAFE_INTEGER);
        const inclusive = str('inclusive') === 'true' || str('inclusive') === '1';
        const limit = Math.min(Number(str('limit') ?? 1000) || 1000, 1000);
        const start = Number(str('cursor') ?? 0) || 0;
        const all = fake.messages
          .filter((m) => m.channel === channel && (m.ts === root || m.thread_ts === root))
          .filter((m) => (inclusive ? Number(m.ts) >= oldest && Number(m.ts) <= latest : Number(m.ts) > oldest && Number(m.ts) < latest))
          .sort((a, b) => Number(a.ts) - Number(b.ts));
        const page = all.slice(start, start + limit);
        const more = start + limit < all.length;
        return void send(200, {
          ok: true,
          has_more: more,
          messages: page.map((m) => ({
            type: 'message', ts: m.ts, ...(m.thread_ts ? { thread_ts: m.thread_ts } : {}), text: m.text,
            ...((m as { botId?: string }).botId ? { bot_id: (m as { botId?: string }).botId, bot_profile: { name: 'other bot' } } : { user: m.user ?? botUserId }),
            ...(m.files ? { files: m.files } : {}),
          })),
          response_metadata: { next_cursor: more ? String(start + limit) : '' },
        });
      }
      case 'files.getUploadURLExternal': {
        const filename = str('filename');
        const length = Number(str('length'));
        if (!filename || !Number.isInteger(length) || length < 0) return void send(200, { ok: false, error: 'invalid_arguments' });
        const id = `F${String(++seq).padStart(8, '0')}`;
        fake.uploads.push({ id, filename, length, completed: false });
        return void send(200, { ok: true, upload_url: `${origin}/upload/v1/${id}`, file_id: id });
      }
      case 'files.completeUploadExternal': {
        const list = Array.isArray(body.files) ? (body.files as Array<{ id?: string; title?: string }>) : [];
        if (list.length === 0) return void send(200, { ok: false, error: 'invalid_arguments' });
        const done = [];
        for (const f of list) {
          const u = fake.uploads.find((x) => x.id === f.id);
          if (!u) return void send(200, { ok: false, error: 'file_not_found' });
          if (!u.data || u.data.length !== u.length) return void send(200, { ok: false, error: 'file_upload_size_mismatch' });
          done.push(u);
        }
        for (const u of done) {
          u.completed = true;
          const title = list.find((f) => f.id === u.id)?.title;
          if (title) u.title = title;
          const channel = str('channel_id');
          const threadTs = str('thread_ts');
          if (channel) u.channel_id = channel;
          if (threadTs) u.thread_ts = threadTs;
        }
        return void send(200, { ok: true, files: done.map((u) => ({ id: u.id, title: u.title ?? u.filename, name: u.filename })) });
      }
      default:
        return void send(200, { ok: false, error: 'unknown_method' });
    }
  }

  return fake;
}

/** The markdown a streaming call carries: `markdown_text`, or the text of its `markdown_text` chunks. */
function streamText(body: Record<string, unknown>): string | undefined {
  if (typeof body.markdown_text === 'string') return body.markdown_text;
  if (body.chunks === undefined) return '';
  if (!Array.isArray(body.chunks)) return undefined;
  let out = '';
  for (const c of body.chunks as Array<{ type?: unknown; text?: unknown }>) {
    if (c?.type !== 'markdown_text' || typeof c.text !== 'string') return undefined;
    out += c.text;
  }
  return out;
}
