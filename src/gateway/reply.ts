/**
 * The agent's answer as it streams in (ACP `agent_message_chunk`), held in bounded memory: up to
 * `maxBytes` as the reply text, the rest kept only as a file (up to `maxFileBytes`), and anything
 * beyond that counted and dropped. A 32 MiB answer costs at most `maxBytes + maxFileBytes` here,
 * and the person gets the head of it as text plus the whole (or as much as a file may hold) as
 * a file, with a note saying so.
 */
import { sha256, type StoredFile } from '../store/gateway.js';

export const FULL_REPLY_FILE = 'reply-full.md';

export interface ReplyLimits {
  /** Largest reply text sent as a message (UTF-8 bytes). */
  maxBytes: number;
  /** Largest file the full text may become. */
  maxFileBytes: number;
}

export interface BoundedReply {
  push(chunk: string): void;
  /** The reply text so far (what fits the message limit). */
  preview(): string;
  /** Total UTF-8 bytes the agent sent. */
  readonly bytes: number;
  finish(): { text: string; file?: StoredFile; note?: string };
}

export function createBoundedReply(limits: ReplyLimits): BoundedReply {
  const head: string[] = [];
  let headBytes = 0;
  const whole: Buffer[] = [];
  let wholeBytes = 0;
  let total = 0;
  let overflowed = false;

  return {
    get bytes() {
      return total;
    },
    preview() {
      return head.join('');
    },
    push(chunk) {
      if (chunk.length === 0) return;
      const buf = Buffer.from(chunk, 'utf8');
      total += buf.length;
      // Everything goes to the file copy while it has room, so the file is the whole answer.
      if (wholeBytes < limits.maxFileBytes) {
        const room = limits.maxFileBytes - wholeBytes;
        const part = buf.length <= room ? buf : buf.subarray(0, room);
        whole.push(part);
        wholeBytes += part.length;
      }
      if (!overflowed) {
        if (headBytes + buf.length <= limits.maxBytes) {
          head.push(chunk);
          headBytes += buf.length;
        } else {
          overflowed = true;
        }
      }
    },
    finish() {
      if (!overflowed) return { text: head.join('') };
      const data = Buffer.concat(whole);
      // The text part: what fit, cut back to the last line break so it does not end mid-sentence.
      let text = head.join('');
      const cut = text.lastIndexOf('\n');
      if (cut > text.length / 2) text = text.slice(0, cut);
      const complete = total <= limits.maxFileBytes;
      const note = complete
        ? `(The answer is ${total} bytes, longer than the ${limits.maxBytes}-byte limit for a message; the rest is in ${FULL_REPLY_FILE}, which holds all of it.)`
        : `(The answer is ${total} bytes; the first ${limits.maxBytes} are above and the first ${limits.maxFileBytes} are in ${FULL_REPLY_FILE}; the last ${total - limits.maxFileBytes} bytes were dropped.)`;
      return { text, file: { name: FULL_REPLY_FILE, size: data.length, sha256: sha256(data), data }, note };
    },
  };
}
