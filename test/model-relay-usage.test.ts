/**
 * The relay's usage meter on the streams the fakes produce, cut at every possible byte boundary
 * (TCP may split anywhere: inside a line, between CR and LF, inside a UTF-8 character).
 */
import { describe, expect, it } from 'vitest';
import { createUsageMeter, MAX_PARSED_BYTES } from '../src/governance/model-relay/usage.js';
import type { ModelProvider } from '../src/governance/model-relay/index.js';
import { streamEvents } from './fakes/providers/anthropic.js';
import { geminiChunks } from './fakes/providers/gemini.js';
import { chatChunks, responsesEvents } from './fakes/providers/openai.js';
import type { SseEvent } from './fakes/providers/common.js';

const sse = (events: SseEvent[], eol = '\n') =>
  events.map((e) => `${e.event === undefined ? '' : `event: ${e.event}${eol}`}data: ${typeof e.data === 'string' ? e.data : JSON.stringify(e.data)}${eol}${eol}`).join('');

function meterAllSplits(provider: ModelProvider, text: string) {
  const bytes = Buffer.from(text);
  const seen = new Set<string>();
  for (let cut = 0; cut <= bytes.length; cut += Math.max(1, Math.floor(bytes.length / 400))) {
    const m = createUsageMeter(provider, 'sse');
    m.push(bytes.subarray(0, cut));
    m.push(bytes.subarray(cut));
    seen.add(JSON.stringify(m.end() ?? null));
  }
  // Byte by byte, too.
  const m = createUsageMeter(provider, 'sse');
  for (let i = 0; i < bytes.length; i++) m.push(bytes.subarray(i, i + 1));
  seen.add(JSON.stringify(m.end() ?? null));
  return [...seen].map((s) => JSON.parse(s) as unknown);
}

const usage = { input: 120, output: 33, cacheRead: 7, cacheWrite: 5, reasoning: 4 };

describe('usage meter', () => {
  it('Anthropic: message_start + message_delta, whatever the chunking (UTF-8 text included)', () => {
    const text = sse(streamEvents('m', { text: 'héllo wörld — ünïcode ✓ text', toolCall: { name: 't', args: { a: 'ß' } }, usage }, usage));
    expect(meterAllSplits('anthropic', text)).toEqual([{ inputTokens: 120, outputTokens: 33, cacheReadTokens: 7, cacheWriteTokens: 5, totalTokens: 165 }]);
  });

  it('OpenAI Responses (response.completed) and Chat Completions (usage chunk)', () => {
    const expected = [{ inputTokens: 120, outputTokens: 33, cacheReadTokens: 7, cacheWriteTokens: 0, totalTokens: 153 }];
    expect(meterAllSplits('openai', sse(responsesEvents('m', { text: 'a b c', usage }, usage)))).toEqual(expected);
    expect(meterAllSplits('openai', sse(chatChunks('m', { text: 'a b c', usage }, usage, true)))).toEqual(expected);
    // Without the usage chunk there is nothing to count, and the meter says so.
    expect(meterAllSplits('openai', sse(chatChunks('m', { text: 'a b c', usage }, usage, false)))).toEqual([null]);
  });

  it('Gemini: the last usageMetadata over CRLF-separated events; thinking counts as output', () => {
    const text = sse(geminiChunks('m', { text: 'one two three four five six seven', usage }, usage).map((data) => ({ data })), '\r\n');
    expect(meterAllSplits('gemini', text)).toEqual([{ inputTokens: 120, outputTokens: 37, cacheReadTokens: 7, cacheWriteTokens: 0, totalTokens: 157 }]);
    const json = createUsageMeter('gemini', 'json');
    json.push(Buffer.from(JSON.stringify(geminiChunks('m', { text: 'x', usage }, usage))));
    expect(json.end()?.totalTokens).toBe(157);
  });

  it('an oversized event is passed over without being held; later usage still counts', () => {
    const m = createUsageMeter('anthropic', 'sse');
    const big = `data: {"type":"content_block_delta","usage":"${'x'.repeat(64 * 1024)}`;
    for (let sent = 0; sent <= MAX_PARSED_BYTES; sent += 64 * 1024) m.push(Buffer.from(sent === 0 ? big : 'x'.repeat(64 * 1024)));
    m.push(Buffer.from('"}\n\n'));
    m.push(Buffer.from(sse([{ event: 'message_delta', data: { type: 'message_delta', usage: { input_tokens: 1, output_tokens: 2 } } }])));
    expect(m.end()).toMatchObject({ inputTokens: 1, outputTokens: 2 });
  });
});
