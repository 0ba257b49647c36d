/**
 * Token usage from the providers' answers, read on the side while the bytes stream through
 * unchanged: a JSON body (kept up to a cap, parsed at the end) or a server-sent event stream
 * (parsed event by event; only events that can carry usage are JSON-parsed).
 *
 *   anthropic  message_start.message.usage, then message_delta.usage (cumulative; last wins);
 *              JSON: usage. Cache reads/writes are outside input_tokens and counted on top.
 *   openai     Responses: response.completed|incomplete|failed .response.usage; Chat Completions:
 *              the chunk whose `usage` is set (the relay asks for it, see index.ts); JSON: usage.
 *   gemini     usageMetadata of the last chunk that has one (cumulative); JSON: usageMetadata.
 *              Thinking tokens are outside candidatesTokenCount and counted as output.
 *
 * Deliberately left out: estimating usage the provider did not report (a stream cut before its
 * usage event reports what arrived, possibly nothing; the caller says so in an event).
 */
import { StringDecoder } from 'node:string_decoder';
import type { ModelProvider, ModelUsage } from './types.js';

/** Largest JSON body or single SSE event kept for parsing; bigger ones are passed on unread. */
export const MAX_PARSED_BYTES = 8 * 1024 * 1024;

export interface UsageMeter {
  push(chunk: Buffer): void;
  /** The usage seen, or undefined when the answer carried none (or it was too big to read). */
  end(): ModelUsage | undefined;
}

type Counts = { input?: number; output?: number; cacheRead?: number; cacheWrite?: number; thoughts?: number; toolPrompt?: number };

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : undefined);
const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/** Copies into `into` every count `u` reports (later reports overwrite earlier ones: they are cumulative). */
function merge(into: Counts, from: Counts): void {
  for (const [k, v] of Object.entries(from) as Array<[keyof Counts, number | undefined]>) if (v !== undefined) into[k] = v;
}

function anthropicCounts(u: Record<string, unknown>): Counts {
  return {
    input: num(u.input_tokens),
    output: num(u.output_tokens),
    cacheRead: num(u.cache_read_input_tokens),
    cacheWrite: num(u.cache_creation_input_tokens),
  };
}

function openaiCounts(u: Record<string, unknown>): Counts {
  // Responses: input_tokens/output_tokens; Chat Completions: prompt_tokens/completion_tokens.
  const details = obj(u.input_tokens_details) ?? obj(u.prompt_tokens_details);
  return {
    input: num(u.input_tokens) ?? num(u.prompt_tokens),
    output: num(u.output_tokens) ?? num(u.completion_tokens),
    cacheRead: num(details?.cached_tokens),
  };
}

function geminiCounts(u: Record<string, unknown>): Counts {
  return {
    input: num(u.promptTokenCount),
    output: num(u.candidatesTokenCount),
    thoughts: num(u.thoughtsTokenCount),
    toolPrompt: num(u.toolUsePromptTokenCount),
    cacheRead: num(u.cachedContentTokenCount),
  };
}

/** The usage counts one parsed JSON value (a whole body or one event) carries, if any. */
export function countsOf(provider: ModelProvider, v: unknown): Counts | undefined {
  // Gemini's streamGenerateContent without alt=sse answers a JSON array of chunks: the last counts.
  if (Array.isArray(v)) {
    for (let i = v.length - 1; i >= 0; i--) {
      const c = countsOf(provider, v[i]);
      if (c) return c;
    }
    return undefined;
  }
  const o = obj(v);
  if (!o) return undefined;
  if (provider === 'anthropic') {
    const u = obj(o.usage) ?? obj(obj(o.message)?.usage);
    return u ? anthropicCounts(u) : undefined;
  }
  if (provider === 'openai') {
    const u = obj(o.usage) ?? obj(obj(o.response)?.usage);
    return u ? openaiCounts(u) : undefined;
  }
  const u = obj(o.usageMetadata);
  return u ? geminiCounts(u) : undefined;
}

export function toUsage(provider: ModelProvider, c: Counts): ModelUsage | undefined {
  if (c.input === undefined && c.output === undefined) return undefined;
  const inputTokens = (c.input ?? 0) + (c.toolPrompt ?? 0);
  const outputTokens = (c.output ?? 0) + (c.thoughts ?? 0);
  const cacheReadTokens = c.cacheRead ?? 0;
  const cacheWriteTokens = c.cacheWrite ?? 0;
  // Only Anthropic reports cache tokens outside the input count.
  const totalTokens = inputTokens + outputTokens + (provider === 'anthropic' ? cacheReadTokens + cacheWriteTokens : 0);
  return { inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens, totalTokens };
}

/** A meter for one answer: `sse` for text/event-stream, `json` otherwise. */
export function createUsageMeter(provider: ModelProvider, kind: 'sse' | 'json'): UsageMeter {
  return kind === 'sse' ? sseMeter(provider) : jsonMeter(provider);
}

function jsonMeter(provider: ModelProvider): UsageMeter {
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  return {
    push(chunk) {
      if (overflow) return;
      size += chunk.length;
      if (size > MAX_PARSED_BYTES) {
        overflow = true;
        chunks.length = 0;
        return;
      }
      chunks.push(chunk);
    },
    end() {
      if (overflow || size === 0) return undefined;
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks, size).toString('utf8'));
      } catch {
        return undefined;
      }
      const c = countsOf(provider, parsed);
      return c ? toUsage(provider, c) : undefined;
    },
  };
}

/** The marker an event must contain to be worth parsing (every usage-bearing event has it). */
const MARKER = 'usage';

function sseMeter(provider: ModelProvider): UsageMeter {
  const decoder = new StringDecoder('utf8');
  const counts: Counts = {};
  let seen = false;
  let carry = '';
  // Data lines of the event being read; `dataSize` bounds it, `skip` drops an oversized one.
  let data: string[] = [];
  let dataSize = 0;
  let skip = false;

  const dispatch = () => {
    if (!skip && data.length > 0) {
      const text = data.length === 1 ? data[0]! : data.join('\n');
      if (text.includes(MARKER)) {
        try {
          const c = countsOf(provider, JSON.parse(text));
          if (c) {
            merge(counts, c);
            seen = true;
          }
        } catch {
          // `[DONE]`, a comment, or something that is not ours to judge: passed on, not counted.
        }
      }
    }
    data = [];
    dataSize = 0;
    skip = false;
  };

  const line = (l: string) => {
    if (l === '') return dispatch();
    if (skip || !l.startsWith('data:')) return;
    const value = l.charCodeAt(5) === 0x20 ? l.slice(6) : l.slice(5);
    dataSize += value.length;
    if (dataSize > MAX_PARSED_BYTES) {
      skip = true;
      data = [];
      return;
    }
    data.push(value);
  };

  const feed = (text: string) => {
    let buf = carry + text;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const ch = buf.charCodeAt(i);
      if (ch !== 10 && ch !== 13) continue;
      // A CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (ch === 13 && i === buf.length - 1) break;
      line(buf.slice(start, i));
      if (ch === 13 && buf.charCodeAt(i + 1) === 10) i++;
      start = i + 1;
    }
    buf = buf.slice(start);
    // A line longer than the cap (no newline yet) is dropped rather than held.
    if (buf.length > MAX_PARSED_BYTES) {
      skip = true;
      data = [];
      buf = '';
    }
    carry = buf;
  };

  return {
    push(chunk) {
      feed(decoder.write(chunk));
    },
    end() {
      feed(decoder.end());
      if (carry !== '') line(carry);
      carry = '';
      dispatch();
      return seen ? toUsage(provider, counts) : undefined;
    },
  };
}
