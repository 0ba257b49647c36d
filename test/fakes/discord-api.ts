/**
 * A local stand-in for the Discord REST API v10 (and a minimal gateway), enough for the Discord
 * adapter: it checks `Authorization: Bot <token>` where Discord requires it, answers in the
 * documented shapes, parses multipart bodies (`files[n]` + `payload_json`), sends the documented
 * 429 headers, and records every call for assertions.
 *
 * REST, under `/api` with or without a `/v<N>` prefix (@discordjs/rest adds `/v10`):
 *   GET /gateway/bot · PATCH /webhooks/{app}/{token}/messages/@original · POST /webhooks/{app}/{token}
 *   PATCH /webhooks/{app}/{token}/messages/{id} (only messages that token created)
 *   POST /channels/{id}/messages · PATCH /channels/{id}/messages/{id} (messages of that channel, bot token)
 *   POST /channels/{id}/typing · POST /channels/{id}/messages/{id}/threads
 *   PUT /applications/{id}/commands · PUT /applications/{id}/guilds/{id}/commands
 *   GET /users/@me · GET /channels/{id}/messages (newest first; before/after/limit) · GET /channels/{id}/messages/{id}
 *   PUT|DELETE /channels/{id}/messages/{id}/reactions/{emoji}/@me
 *   GET /channels/{id} (the guilds' channels and the threads started through the API)
 * Starting a thread in a channel whose type is not text (0) or announcement (5) answers 400 / 50024.
 * Messages are kept, so edits of unknown ones answer 404 / 10008; content over 2,000 characters
 * answers 400 / 50035 and a file over 10 MiB 413 / 40005, as Discord does for bots. Message components (action rows
 * of buttons) are checked against the documented limits (400 / 50035 Invalid Form Body).
 * Downloads: GET /attachments/... (standing in for the CDN; no auth).
 * Gateway (ws, JSON, no compression) at /gateway: HELLO → IDENTIFY → READY + GUILD_CREATE, heartbeats
 * acknowledged, and `dispatch()` for MESSAGE_CREATE and friends.
 */
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { closeServer, describeCalls, headersOf, listen, readBody, type RecordedCall as HttpCall } from './http.js';

export interface RecordedFile {
  /** Multipart field name, e.g. `files[0]`. */
  name: string;
  filename: string;
  data: Buffer;
}

/**
 * A call; `path` is without `/api` and `/v<N>` (`/webhooks/1/tok/messages/@original`), and `json`
 * of a multipart body is its parsed `payload_json`.
 */
export interface RecordedCall extends HttpCall<RecordedFile> {
  /** The JSON the fake answered with (e.g. the created message, with its id). */
  response?: unknown;
  /** The query string, for GETs. */
  query?: URLSearchParams;
}

export interface FailSpec {
  status: number;
  times?: number;
  /** For 429: seconds, sent as `Retry-After` and `retry_after`. */
  retryAfter?: number;
  /** Discord's JSON error code. */
  code?: number;
  /** Only calls whose `METHOD path` matches. */
  match?: RegExp;
}

export interface FakeGuild {
  id: string;
  /** Type 11 entries are threads (`parent_id` required); `ownedByBot` makes the fake's bot their owner. */
  channels: Array<{ id: string; name: string; type?: number; parent_id?: string; ownedByBot?: boolean }>;
}

export interface FakeGateway {
  url: string;
  botUser: { id: string; username: string };
  guilds: FakeGuild[];
  /** IDENTIFY payloads received. */
  identifies: Array<Record<string, unknown>>;
  /** Resolves once a client has identified and received READY. */
  ready(): Promise<void>;
  /** Sends a dispatch (op 0) to every connected client. */
  dispatch(t: string, d: unknown): void;
}

export interface FakeDiscord {
  /** REST base, like https://discord.com/api. */
  url: string;
  origin: string;
  botToken: string;
  applicationId: string;
  calls: RecordedCall[];
  gateway: FakeGateway;
  failNext(spec: FailSpec): void;
  clearFailures(): void;
  /** Webhook calls with this interaction token answer 401 / 50027, as after 15 minutes. */
  expireToken(token: string): void;
  /** Messages created through this interaction token are in `channelId` (Discord knows it from the interaction). */
  registerInteraction(token: string, channelId: string): void;
  /** The current state of a message the fake created, by id. */
  message(id: string): StoredMessage | undefined;
  /** Every message the fake holds (created through the API or seeded), in creation order. */
  allMessages(): StoredMessage[];
  /** A message someone wrote in a channel (visible to GET /channels/{id}/messages); returns its id. */
  addMessage(channelId: string, m: { author?: { id: string; username: string; bot?: boolean }; content: string; files?: string[]; replyTo?: string }): string;
  /** The bot's reactions, as `channel/message/emoji`. */
  reactions: Set<string>;
  /** 'ok', or the error code reactions answer (e.g. 50013 Missing Permissions). */
  reactionsAllowed: 'ok' | number;
  /** Answers no REST call until the returned function is called (a Discord that hangs). */
  hang(): () => void;
  /** Serves `data` under /attachments/ and returns its URL. */
  addFile(name: string, data: Buffer): string;
  /** Successful calls whose method and path match. */
  find(method: string, path: string | RegExp): RecordedCall[];
  waitFor(method: string, path: string | RegExp, count?: number, timeoutMs?: number): Promise<RecordedCall[]>;
  close(): Promise<void>;
}

export interface StoredMessage {
  id: string;
  channel_id: string;
  content: string;
  components: unknown[];
  /** The interaction token that created it, for webhook messages. */
  token?: string;
  /** Earlier contents, oldest first, when it was edited. */
  history: string[];
  author?: { id: string; username: string; bot?: boolean };
  files?: string[];
  reference?: string;
}

/** Why `components` breaks Discord's rules for buttons in action rows, or null when it does not. */
function componentsError(components: unknown): string | null {
  if (components === undefined) return null;
  if (!Array.isArray(components) || components.length > 5) return 'components: at most 5 action rows';
  const ids = new Set<string>();
  for (const row of components as Array<{ type?: unknown; components?: unknown }>) {
    if (row?.type !== 1 || !Array.isArray(row.components) || row.components.length < 1 || row.components.length > 5) {
      return 'components: an action row (type 1) holds 1 to 5 components';
    }
    for (const b of row.components as Array<Record<string, unknown>>) {
      if (b?.type !== 2) return 'components: this fake knows buttons (type 2) only';
      if (![1, 2, 3, 4, 5].includes(b.style as number)) return 'components: invalid button style';
      if (b.style === 5) {
        if (typeof b.url !== 'string' || b.custom_id !== undefined) return 'components: a link button has a url and no custom_id';
      } else {
        const id = b.custom_id;
        if (typeof id !== 'string' || id.length < 1 || id.length > 100) return 'components: custom_id must be 1 to 100 characters';
        if (ids.has(id)) return 'components: custom_id must be unique in a message';
        ids.add(id);
      }
      if (b.label === undefined && b.emoji === undefined) return 'components: a button needs a label or an emoji';
      if (b.label !== undefined && (typeof b.label !== 'string' || b.label.length > 80)) return 'components: label must be at most 80 characters';
    }
  }
  return null;
}

let nextId = 1_300_000_000_000_000_000n;
function snowflake(): string {
  nextId += 1n;
  return nextId.toString();
}

async function parseBody(req: http.IncomingMessage, raw: Buffer): Promise<{ json?: unknown; files: RecordedFile[] }> {
  const type = req.headers['content-type'] ?? '';
  if (raw.length === 0) return { files: [] };
  if (type.startsWith('multipart/form-data')) {
    const form = await new Request('http://fake.local/', { method: 'POST', headers: { 'content-type': type }, body: raw }).formData();
    const files: RecordedFile[] = [];
    let json: unknown;
    for (const [name, value] of form.entries()) {
      if (typeof value === 'string') {
        if (name === 'payload_json') json = JSON.parse(value);
      } else {
        files.push({ name, filename: value.name, data: Buffer.from(await value.arrayBuffer()) });
      }
    }
    return { json, files };
  }
  if (type.startsWith('application/json')) return { json: JSON.parse(raw.toString('utf8')), files: [] };
  return { files: [] };
}

export async function startFakeDiscord(opts: { botToken?: string; applicationId?: string; guilds?: FakeGuild[] } = {}): Promise<FakeDiscord> {
  const botToken = opts.botToken ?? 'fake-bot-token';
  const applicationId = opts.applicationId ?? '1100000000000000001';
  const calls: RecordedCall[] = [];
  const failures: FailSpec[] = [];
  const expired = new Set<string>();
  const interactionChannels = new Map<string, string>();
  const messages = new Map<string, StoredMessage>();
  const files = new Map<string, Buffer>();
  const botUser = { id: '1200000000000000001', username: 'agent-vm' };
  const guilds = opts.guilds ?? [];
  const identifies: Array<Record<string, unknown>> = [];
  const sockets = new Set<WebSocket>();
  let readyResolve!: () => void;
  const readyPromise = new Promise<void>((r) => (readyResolve = r));
  let origin = '';
  let hung: Promise<void> | undefined;
  const originals = new Map<string, string>();
  const threads = new Map<string, { id: string; type: number; guild_id?: string; parent_id: string; name: string }>();

  function message(channelId: string, body: unknown, recorded: RecordedFile[], token?: string) {
    const b = (body ?? {}) as { content?: string; components?: unknown[] };
    const stored: StoredMessage = { id: snowflake(), channel_id: channelId, content: b.content ?? '', components: b.components ?? [], ...(token ? { token } : {}), history: [], files: recorded.map((f) => f.filename) };
    messages.set(stored.id, stored);
    return rendered(stored, recorded);
  }

  function rendered(stored: StoredMessage, recorded: RecordedFile[] = []) {
    return {
      id: stored.id,
      channel_id: stored.channel_id,
      content: stored.content,
      components: stored.components,
      ...(stored.token ? { webhook_id: applicationId, application_id: applicationId } : {}),
      author: stored.author ? { ...stored.author, discriminator: '0', global_name: null } : { ...botUser, discriminator: '0', bot: true },
      attachments: recorded.length > 0
        ? recorded.map((f, i) => ({ id: String(i), filename: f.filename, size: f.data.length, url: `${origin}/attachments/x/${f.filename}` }))
        : (stored.files ?? []).map((f, i) => ({ id: String(i), filename: f, size: 1, url: `${origin}/attachments/x/${f}` })),
      ...(stored.reference ? { message_reference: { message_id: stored.reference, channel_id: stored.channel_id } } : {}),
      timestamp: new Date(Number((BigInt(stored.id) >> 22n) + 1420070400000n)).toISOString(),
      type: 0,
    };
  }

  function guildOfChannel(channelId: string): string | undefined {
    return guilds.find((g) => g.channels.some((c) => c.id === channelId))?.id;
  }

  function edited(stored: StoredMessage, body: unknown, files: RecordedFile[] = []) {
    const b = (body ?? {}) as { content?: string; components?: unknown[] };
    if (files.length > 0) stored.files = [...(stored.files ?? []), ...files.map((f) => f.filename)];
    if (b.content !== undefined && b.content !== stored.content) {
      stored.history.push(stored.content);
      stored.content = b.content;
    }
    if (b.components !== undefined) stored.components = b.components;
    return { status: 200, body: rendered(stored) };
  }

  function route(call: RecordedCall): { status: number; body?: unknown; headers?: Record<string, string> } {
    const bot = call.headers.authorization === `Bot ${botToken}`;
    const unauthorized = { status: 401, body: { message: '401: Unauthorized', code: 0 } };
    const unknownMessage = { status: 404, body: { message: 'Unknown Message', code: 10008 } };
    const key = `${call.method} ${call.path}`;
    let m: RegExpExecArray | null;
    const content = (call.json as { content?: unknown } | undefined)?.content;
    if (typeof content === 'string' && content.length > 2000 && /^(POST|PATCH) \/(webhooks|channels)\//.test(key)) {
      return { status: 400, body: { message: 'Invalid Form Body', code: 50035, errors: { content: { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 2000 or fewer in length.' }] } } } };
    }
    if (call.files.some((f) => f.data.length > 10 * 1024 * 1024)) return { status: 413, body: { message: 'Request entity too large', code: 40005 } };
    if ((m = /^(PUT|DELETE) \/channels\/(\d+)\/messages\/(\d+)\/reactions\/([^/]+)\/@me$/.exec(key))) {
      if (!bot) return unauthorized;
      if (fake.reactionsAllowed !== 'ok') return { status: 403, body: { message: 'Missing Permissions', code: fake.reactionsAllowed } };
      const k = `${m[2]}/${m[3]}/${decodeURIComponent(m[4]!)}`;
      if (m[1] === 'PUT') fake.reactions.add(k);
      else fake.reactions.delete(k);
      return { status: 204 };
    }
    if (key === 'GET /users/@me') return bot ? { status: 200, body: { ...botUser, discriminator: '0', bot: true, avatar: null } } : unauthorized;
    if ((m = /^GET \/channels\/(\d+)\/messages\/(\d+)$/.exec(key))) {
      if (!bot) return unauthorized;
      const stored = messages.get(m[2]!);
      return stored && stored.channel_id === m[1] ? { status: 200, body: rendered(stored) } : unknownMessage;
    }
    if ((m = /^GET \/channels\/(\d+)\/messages$/.exec(key))) {
      if (!bot) return unauthorized;
      const q = call.query ?? new URLSearchParams();
      const before = q.get('before');
      const after = q.get('after');
      const limit = Math.min(Number(q.get('limit') ?? 50) || 50, 100);
      let list = [...messages.values()].filter((x) => x.channel_id === m![1]).sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? 1 : -1));
      if (before) list = list.filter((x) => BigInt(x.id) < BigInt(before));
      if (after) list = list.filter((x) => BigInt(x.id) > BigInt(after)).reverse().slice(0, limit).reverse();
      return { status: 200, body: list.slice(0, limit).map((x) => rendered(x)) };
    }
    const invalid = componentsError((call.json as { components?: unknown } | undefined)?.components);
    if (invalid && /^(POST|PATCH) \/(webhooks|channels)\//.test(key)) {
      return { status: 400, body: { message: 'Invalid Form Body', code: 50035, errors: { components: { _errors: [{ code: 'BASE_TYPE_INVALID', message: invalid }] } } } };
    }
    if ((m = /^PATCH \/webhooks\/(\d+)\/([^/]+)\/messages\/(\d+)$/.exec(key))) {
      if (expired.has(m[2]!)) return { status: 401, body: { message: 'Invalid Webhook Token', code: 50027 } };
      const stored = messages.get(m[3]!);
      if (!stored || stored.token !== m[2]) return unknownMessage;
      return edited(stored, call.json, call.files);
    }
    if ((m = /^PATCH \/channels\/(\d+)\/messages\/(\d+)$/.exec(key))) {
      if (!bot) return unauthorized;
      const stored = messages.get(m[2]!);
      if (!stored || stored.channel_id !== m[1]) return unknownMessage;
      return edited(stored, call.json, call.files);
    }
    if (key === 'GET /gateway/bot') {
      if (!bot) return unauthorized;
      const url = `${origin.replace(/^http/, 'ws')}/gateway`;
      return { status: 200, body: { url, shards: 1, session_start_limit: { total: 1000, remaining: 999, reset_after: 86_400_000, max_concurrency: 1 } } };
    }
    if ((m = /^(PATCH|POST) \/webhooks\/(\d+)\/([^/]+)(\/messages\/@original)?$/.exec(key))) {
      if (expired.has(m[3]!)) return { status: 401, body: { message: 'Invalid Webhook Token', code: 50027 } };
      if (m[1] === 'PATCH' && !m[4]) return { status: 405, body: { message: '405: Method Not Allowed', code: 0 } };
      if (m[1] === 'POST' && m[4]) return { status: 405, body: { message: '405: Method Not Allowed', code: 0 } };
      if (m[4]) {
        // The original response is one message per interaction: created by the first edit, edited after.
        const existing = originals.get(m[3]!);
        const stored = existing ? messages.get(existing) : undefined;
        if (stored) return edited(stored, call.json, call.files);
        const made = message(interactionChannels.get(m[3]!) ?? '0', call.json, call.files);
        originals.set(m[3]!, made.id);
        return { status: 200, body: made };
      }
      return { status: 200, body: message(interactionChannels.get(m[3]!) ?? '0', call.json, call.files, m[3]!) };
    }
    if ((m = /^POST \/channels\/(\d+)\/messages$/.exec(key))) {
      if (!bot) return unauthorized;
      return { status: 200, body: message(m[1]!, call.json, call.files) };
    }
    if ((m = /^POST \/channels\/(\d+)\/typing$/.exec(key))) {
      return bot ? { status: 204 } : unauthorized;
    }
    if ((m = /^GET \/channels\/(\d+)$/.exec(key))) {
      if (!bot) return unauthorized;
      const t = threads.get(m[1]!);
      if (t) return { status: 200, body: t };
      for (const g of guilds) {
        const c = g.channels.find((x) => x.id === m![1]);
        if (c) return { status: 200, body: { id: c.id, type: c.type ?? 0, guild_id: g.id, name: c.name, ...(c.parent_id ? { parent_id: c.parent_id } : {}) } };
      }
      return { status: 404, body: { message: 'Unknown Channel', code: 10003 } };
    }
    if ((m = /^POST \/channels\/(\d+)\/messages\/(\d+)\/threads$/.exec(key))) {
      if (!bot) return unauthorized;
      const parentType = guilds.flatMap((g) => g.channels).find((c) => c.id === m![1])?.type ?? 0;
      if (parentType !== 0 && parentType !== 5) return { status: 400, body: { message: 'Cannot execute action on this channel type', code: 50024 } };
      const body = (call.json ?? {}) as { name?: string; auto_archive_duration?: number };
      const thread = {
        id: m[2]!,
        type: 11,
        guild_id: guildOfChannel(m[1]!),
        parent_id: m[1]!,
        name: body.name ?? 'thread',
        owner_id: botUser.id,
        member_count: 1,
        message_count: 0,
        thread_metadata: { archived: false, auto_archive_duration: body.auto_archive_duration ?? 1440, archive_timestamp: new Date().toISOString(), locked: false },
      };
      threads.set(thread.id, { id: thread.id, type: 11, ...(thread.guild_id ? { guild_id: thread.guild_id } : {}), parent_id: thread.parent_id, name: thread.name });
      return { status: 201, body: thread };
    }
    if ((m = /^PUT \/applications\/(\d+)(?:\/guilds\/(\d+))?\/commands$/.exec(key))) {
      if (!bot) return unauthorized;
      const list = Array.isArray(call.json) ? (call.json as Array<Record<string, unknown>>) : [];
      return {
        status: 200,
        body: list.map((c) => ({ ...c, id: snowflake(), application_id: m![1], ...(m![2] ? { guild_id: m![2] } : {}), version: snowflake() })),
      };
    }
    return { status: 404, body: { message: '404: Not Found', code: 0 } };
  }

  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://fake.local');
      const raw = await readBody(req);
      if (req.method === 'GET' && url.pathname.startsWith('/attachments/')) {
        const data = files.get(url.pathname);
        res.writeHead(data ? 200 : 404, { 'content-type': 'application/octet-stream', 'content-length': String(data?.length ?? 0) });
        res.end(data ?? Buffer.alloc(0));
        return;
      }
      const apiPath = /^\/api(?:\/v\d+)?(\/.*)$/.exec(url.pathname)?.[1];
      const call: RecordedCall = { method: req.method ?? 'GET', path: apiPath ?? url.pathname, headers: headersOf(req), files: [], status: 0, query: url.searchParams };
      if (hung && apiPath) await hung;
      try {
        Object.assign(call, await parseBody(req, raw));
      } catch (err) {
        call.status = 400;
        calls.push(call);
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `bad body: ${String(err)}`, code: 50109 }));
        return;
      }
      calls.push(call);
      const failure = apiPath ? failures.find((f) => !f.match || f.match.test(`${call.method} ${call.path}`)) : undefined;
      if (failure) {
        failure.times = (failure.times ?? 1) - 1;
        if (failure.times <= 0) failures.splice(failures.indexOf(failure), 1);
        call.status = failure.status;
        const h: Record<string, string> = { 'content-type': 'application/json' };
        if (failure.status === 429) {
          const after = failure.retryAfter ?? 0.1;
          Object.assign(h, { 'retry-after': String(after), 'x-ratelimit-scope': 'user' });
          res.writeHead(429, h).end(JSON.stringify({ message: 'You are being rate limited.', retry_after: after, global: false }));
        } else {
          res.writeHead(failure.status, h).end(JSON.stringify({ message: `fake failure ${failure.status}`, code: failure.code ?? 0 }));
        }
        return;
      }
      const out = apiPath ? route(call) : { status: 404, body: { message: '404: Not Found', code: 0 } };
      call.status = out.status;
      if (out.body !== undefined) call.response = out.body;
      if (out.body === undefined) res.writeHead(out.status).end();
      else res.writeHead(out.status, { 'content-type': 'application/json', ...out.headers }).end(JSON.stringify(out.body));
    })().catch((err: unknown) => {
      res.writeHead(500).end(String(err));
    });
  });

  const wss = new WebSocketServer({ server, path: '/gateway' });
  wss.on('connection', (ws) => {
    sockets.add(ws);
    let seq = 0;
    const send = (p: unknown) => ws.send(JSON.stringify(p));
    ws.on('close', () => sockets.delete(ws));
    send({ op: 10, d: { heartbeat_interval: 41_250 }, s: null, t: null });
    ws.on('message', (raw) => {
      const p = JSON.parse(String(raw)) as { op: number; d: Record<string, unknown> };
      if (p.op === 1) send({ op: 11, d: null, s: null, t: null });
      if (p.op === 2) {
        identifies.push(p.d);
        send({
          op: 0,
          t: 'READY',
          s: ++seq,
          d: {
            v: 10,
            user: { ...botUser, discriminator: '0', bot: true, avatar: null, global_name: null },
            guilds: guilds.map((g) => ({ id: g.id, unavailable: true })),
            session_id: 'fake-session',
            resume_gateway_url: `${origin.replace(/^http/, 'ws')}/gateway`,
            shard: [0, 1],
            application: { id: applicationId, flags: 0 },
          },
        });
        for (const g of guilds) {
          send({
            op: 0,
            t: 'GUILD_CREATE',
            s: ++seq,
            d: {
              id: g.id,
              name: `guild ${g.id}`,
              icon: null,
              owner_id: '1',
              roles: [{ id: g.id, name: '@everyone', permissions: '0', position: 0, color: 0, hoist: false, managed: false, mentionable: false }],
              emojis: [],
              stickers: [],
              features: [],
              members: [],
              channels: g.channels.filter((c) => c.type !== 11).map((c, i) => ({ id: c.id, name: c.name, type: c.type ?? 0, position: i, permission_overwrites: [] })),
              threads: g.channels
                .filter((c) => c.type === 11)
                .map((c) => ({ id: c.id, name: c.name, type: 11, parent_id: c.parent_id, owner_id: c.ownedByBot ? botUser.id : '1', guild_id: g.id, thread_metadata: { archived: false, auto_archive_duration: 1440, archive_timestamp: new Date().toISOString(), locked: false } })),
              presences: [],
              voice_states: [],
              member_count: 1,
              large: false,
              unavailable: false,
              joined_at: new Date().toISOString(),
              premium_tier: 0,
              verification_level: 0,
              default_message_notifications: 0,
              explicit_content_filter: 0,
              mfa_level: 0,
              nsfw_level: 0,
              system_channel_flags: 0,
              preferred_locale: 'en-US',
            },
          });
        }
        readyResolve();
      }
    });
  });

  origin = await listen(server);

  const matches = (c: RecordedCall, method: string, path: string | RegExp) =>
    c.method === method && c.status < 300 && (typeof path === 'string' ? c.path === path : path.test(c.path));

  const fake: FakeDiscord = {
    url: `${origin}/api`,
    origin,
    botToken,
    applicationId,
    calls,
    gateway: {
      get url() {
        return `${origin.replace(/^http/, 'ws')}/gateway`;
      },
      botUser,
      guilds,
      identifies,
      ready: () => readyPromise,
      dispatch(t, d) {
        for (const ws of sockets) ws.send(JSON.stringify({ op: 0, t, s: 1000 + Math.floor(Math.random() * 1000), d }));
      },
    },
    failNext(spec) {
      failures.push({ ...spec });
    },
    clearFailures() {
      failures.length = 0;
    },
    expireToken(token) {
      expired.add(token);
    },
    registerInteraction(token, channelId) {
      interactionChannels.set(token, channelId);
    },
    message: (id) => messages.get(id),
    allMessages: () => [...messages.values()],
    addMessage(channelId, m) {
      const id = snowflake();
      messages.set(id, {
        id, channel_id: channelId, content: m.content, components: [], history: [],
        author: m.author ?? { id: '900000000000000004', username: 'alice' }, ...(m.files ? { files: m.files } : {}), ...(m.replyTo ? { reference: m.replyTo } : {}),
      });
      return id;
    },
    reactions: new Set<string>(),
    reactionsAllowed: 'ok',
    hang() {
      let release!: () => void;
      hung = new Promise<void>((r) => (release = r));
      return () => {
        hung = undefined;
        release();
      };
    },
    addFile(name, data) {
      const p = `/attachments/${snowflake()}/${encodeURIComponent(name)}`;
      files.set(p, data);
      return `${origin}${p}`;
    },
    find: (method, path) => calls.filter((c) => matches(c, method, path)),
    async waitFor(method, path, count = 1, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = calls.filter((c) => matches(c, method, path));
        if (found.length >= count) return found;
        if (Date.now() > deadline) throw new Error(`fake discord: no ${count}× ${method} ${String(path)}; saw ${describeCalls(calls)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async close() {
      for (const ws of sockets) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await closeServer(server);
    },
  };
  return fake;
}
