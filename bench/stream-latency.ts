/**
 * Streaming latency: time from the agent's first chunk of an answer to the first visible text of
 * it on the platform (the request carrying it arriving at the local fake of Slack's or Discord's
 * API), through the real adapters. The gateway's pacing is reproduced (src/gateway/converse.ts,
 * streamPartial: the first partial at once, then at most every 250 ms, the whole text each time):
 * the agent writes `--chunks` chunks `--chunk-ms` apart, and the answer ends with the reply.
 * Baseline, same run: the same first text posted directly with the same SDK client
 * (`chat.postMessage` / editing the interaction's original), i.e. one plain API call.
 *
 *   node --import tsx bench/stream-latency.ts -- [--answers 100] [--chunks 12] [--chunk-ms 40] [--concurrency 4]
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { createDiscordAdapter } from '../src/adapters/discord/index.js';
import { encodeReplyTo as discordReplyTo } from '../src/adapters/discord/parse.js';
import { createSlackAdapter, encodeReplyTo } from '../src/adapters/slack/index.js';
import type { ChannelAdapter, OutboundMessage } from '../src/adapters/types.js';
import { createLogger } from '../src/log.js';
import { startFakeDiscord } from '../test/fakes/discord-api.js';
import { startFakeSlack } from '../test/fakes/slack-api.js';
import { PUBLIC_KEY_HEX } from '../test/helpers/discord.js';
import { summary } from './stats.js';

const PARTIAL_EVERY_MS = 250;
const logger = createLogger('silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Times when requests carrying `marker` reached the fake (the first one counts). */
function arrivals(calls: unknown[], text: (call: unknown) => string | undefined): Map<string, number> {
  const seen = new Map<string, number>();
  const push = calls.push.bind(calls);
  calls.push = (...items: unknown[]) => {
    const at = performance.now();
    for (const c of items) {
      const t = text(c);
      const m = t ? /\bA(\d+)Z\b/.exec(t) : null;
      if (m && !seen.has(m[1]!)) seen.set(m[1]!, at);
    }
    return push(...items);
  };
  return seen;
}

/** One answer as the gateway streams it: partials paced like streamPartial, then the reply. */
async function answer(adapter: ChannelAdapter, base: Omit<Extract<OutboundMessage, { kind: 'partial' }>, 'kind' | 'text'>, n: number, o: { chunks: number; chunkMs: number }): Promise<number> {
  let text = '';
  let last = 0;
  let timer: NodeJS.Timeout | undefined;
  let sending = Promise.resolve();
  const send = () => {
    timer = undefined;
    last = performance.now();
    const snapshot = text;
    sending = sending.then(() => adapter.send({ kind: 'partial', ...base, text: snapshot })).catch(() => undefined);
  };
  const firstChunkAt = performance.now();
  for (let i = 0; i < o.chunks; i++) {
    text += i === 0 ? `A${n}Z here is ` : `word${i} `;
    if (!timer) timer = setTimeout(send, Math.max(0, last + PARTIAL_EVERY_MS - performance.now()));
    await sleep(o.chunkMs);
  }
  clearTimeout(timer);
  await sending;
  await adapter.send({ kind: 'reply', ...base, text: `${text}done.`, files: [], heldBack: [] });
  return firstChunkAt;
}

async function pool<T>(n: number, concurrency: number, one: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < n; i = next++) out[i] = await one(i);
  }));
  return out;
}

async function slackRun(o: { answers: number; chunks: number; chunkMs: number; concurrency: number }) {
  const fake = await startFakeSlack();
  const seen = arrivals(fake.calls, (c) => {
    const b = (c as { body: Record<string, unknown> }).body;
    const chunks = Array.isArray(b.chunks) ? (b.chunks as Array<{ text?: string }>).map((x) => x.text ?? '').join('') : '';
    return [b.text, b.markdown_text, chunks].filter((x) => typeof x === 'string').join(' ');
  });
  const adapter = createSlackAdapter({ signingSecret: 's', botToken: fake.botToken, apiUrl: fake.url, intake: { accept: async () => ({ status: 'accepted', profile: 'p' }) }, logger, botUserId: fake.botUserId });
  const stream = await pool(o.answers, o.concurrency, async (i) => {
    const ts = `1700000000.${String(i + 1).padStart(6, '0')}`;
    const started = await answer(adapter, { conversation: `slack:${fake.teamId}:C1:${ts}`, replyTo: encodeReplyTo(ts, 'UHUMAN1'), eventId: `slack:Ev${i}` }, i, o);
    return seen.get(String(i))! - started;
  });
  // Baseline: the same first text in one plain chat.postMessage through the same SDK.
  const { WebClient } = await import('@slack/web-api');
  const client = new WebClient(fake.botToken, { slackApiUrl: fake.url });
  const base = await pool(o.answers, o.concurrency, async (i) => {
    const n = o.answers + i;
    const t = performance.now();
    await client.chat.postMessage({ channel: 'C1', thread_ts: '1700000000.000001', text: `A${n}Z here is ` });
    return seen.get(String(n))! - t;
  });
  await adapter.close();
  await fake.close();
  return { path: 'chat.startStream (ChatStreamer), then appendStream, stopStream by the reply', firstVisibleMs: summary(stream), baselinePostMessageMs: summary(base) };
}

async function discordRun(o: { answers: number; chunks: number; chunkMs: number; concurrency: number }) {
  const fake = await startFakeDiscord();
  const seen = arrivals(fake.calls, (c) => (c as { json?: { content?: string } }).json?.content);
  const adapter = createDiscordAdapter({ publicKey: PUBLIC_KEY_HEX, applicationId: fake.applicationId, botToken: fake.botToken, apiUrl: fake.url, intake: { accept: async () => ({ status: 'accepted', profile: 'p' }) }, logger });
  const stream = await pool(o.answers, o.concurrency, async (i) => {
    const channel = String(900000000000000100n + BigInt(i));
    const replyTo = discordReplyTo({ kind: 'interaction', applicationId: fake.applicationId, token: `tok-bench-${i}`, issuedAt: Date.now(), channel });
    const started = await answer(adapter, { conversation: `discord:1:${channel}`, replyTo, eventId: `discord:${i}` }, i, o);
    return seen.get(String(i))! - started;
  });
  await adapter.close();
  await fake.close();
  return { path: 'PATCH the deferred original as the text grows (5 writes per 5 s per channel), follow-ups past 2,000 characters', firstVisibleMs: summary(stream) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((a) => a !== '--'),
    options: { answers: { type: 'string', default: '100' }, chunks: { type: 'string', default: '12' }, 'chunk-ms': { type: 'string', default: '40' }, concurrency: { type: 'string', default: '4' } },
  });
  const o = { answers: Number(values.answers), chunks: Number(values.chunks), chunkMs: Number(values['chunk-ms']), concurrency: Number(values.concurrency) };
  const slack = await slackRun(o);
  const discord = await discordRun(o);
  const result = {
    bench: 'stream-latency',
    what: "time from the agent's first chunk of an answer to the first request carrying its text arriving at the platform's fake API",
    conditions: { ...o, pacing: 'first partial at once, then every 250 ms (as streamPartial)', fakes: 'in this process, on loopback', cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), node: process.version },
    slack,
    discord,
    target: { p95FirstVisibleMs: 300 },
    meetsTarget: slack.firstVisibleMs.p95 < 300 && discord.firstVisibleMs.p95 < 300,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
