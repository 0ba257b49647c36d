/**
 * Turning one reply into Discord messages: text split at the 2,000-character limit on line
 * boundaries (code fences closed and reopened across a split), files batched within the
 * per-message limits, and every file that cannot go named in the text.
 *
 * Deliberately left out: embeds and components; replies are plain text plus attachments.
 */
import path from 'node:path';
import { printable } from '../../text.js';
import type { HeldBackFile, OutboundFile } from '../types.js';

export const MESSAGE_LIMIT = 2000;
export const MAX_FILES_PER_MESSAGE = 10;
/** Discord's default request cap for non-boosted guilds (the whole multipart body). */
export const DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024;
/** Discord's per-file limit for bots (uploads past it are refused with 40005). */
export const DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024;

const FENCE = /^\s*(```+)(.*)$/;

/** Hard-splits one over-long line, preferring the last space before the limit. */
function splitLine(line: string, limit: number): string[] {
  const out: string[] = [];
  let rest = line;
  while (rest.length > limit) {
    let cut = rest.lastIndexOf(' ', limit);
    if (cut < limit / 2) cut = limit;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut).replace(/^ /, '');
  }
  out.push(rest);
  return out;
}

/**
 * Splits text into chunks of at most `limit` characters, on line boundaries where possible.
 * A chunk that ends inside a ``` block gets a closing fence, and the next reopens it.
 */
export function splitMessage(text: string, limit: number = MESSAGE_LIMIT): string[] {
  if (text.length <= limit) return [text];
  // Room for a closing "\n```" and a reopening fence line.
  const reserve = 40;
  const budget = Math.max(limit - reserve, 1);
  const lines = text.split('\n').flatMap((l) => (l.length > budget ? splitLine(l, budget) : [l]));
  const chunks: string[] = [];
  let current: string[] = [];
  let size = 0;
  let openFence: string | null = null;
  let fenceAtChunkStart: string | null = null;

  const flush = () => {
    let body = current.join('\n');
    if (fenceAtChunkStart) body = `${fenceAtChunkStart}\n${body}`;
    if (openFence) body = `${body}\n\`\`\``;
    if (body.trim().length > 0) chunks.push(body);
    fenceAtChunkStart = openFence;
    current = [];
    size = fenceAtChunkStart ? fenceAtChunkStart.length + 1 : 0;
  };

  for (const line of lines) {
    if (current.length > 0 && size + 1 + line.length > budget) flush();
    current.push(line);
    size += (current.length > 1 ? 1 : 0) + line.length;
    const fence = FENCE.exec(line);
    if (fence) openFence = openFence ? null : `${fence[1]}${fence[2]!.trim()}`.slice(0, 30);
  }
  if (current.length > 0) {
    openFence = null;
    flush();
  }
  return chunks.length > 0 ? chunks : [''];
}

/**
 * A file name safe for a multipart filename and for Discord: no path, no control characters, and
 * no invisible or reordering ones (shown as escapes, so `invoice\u202efdp.exe` cannot pose as a PDF).
 */
export function uploadName(name: string, index: number): string {
  const base = printable(path.posix.basename(name.replace(/\\/g, '/')), 1000);
  const cleaned = base.replace(/[\u0000-\u001f\u007f"<>:|?*]/g, '_').slice(-100);
  return cleaned && cleaned !== '.' && cleaned !== '..' ? cleaned : `file-${index + 1}`;
}

function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export interface AttachmentPlan {
  /** Each batch goes on one message. */
  batches: OutboundFile[][];
  /** Files that will not be sent, with the reason, for the text. */
  notSent: HeldBackFile[];
}

/**
 * Batches files at most 10 to a message and at most `maxUploadBytes` per request (minus room
 * for the multipart envelope and the text); a file over `maxFileBytes` or that can never fit is
 * named instead, with its size.
 */
export function planAttachments(files: OutboundFile[], heldBack: HeldBackFile[], maxUploadBytes: number, maxFileBytes: number = DEFAULT_MAX_FILE_BYTES): AttachmentPlan {
  const envelope = Math.min(16 * 1024, Math.floor(maxUploadBytes / 16));
  const budget = maxUploadBytes - envelope;
  const batches: OutboundFile[][] = [];
  const notSent: HeldBackFile[] = [];
  let batch: OutboundFile[] = [];
  let batchBytes = 0;
  files.forEach((f, i) => {
    const file = { name: uploadName(f.name, i), data: f.data };
    if (f.data.length > maxFileBytes) {
      notSent.push({ name: f.name, reason: `${formatBytes(f.data.length)}, over Discord's ${formatBytes(maxFileBytes)} limit per file` });
      return;
    }
    if (f.data.length > budget) {
      notSent.push({ name: f.name, reason: `${formatBytes(f.data.length)}, over Discord's ${formatBytes(maxUploadBytes)} upload limit` });
      return;
    }
    if (batch.length >= MAX_FILES_PER_MESSAGE || batchBytes + f.data.length > budget) {
      batches.push(batch);
      batch = [];
      batchBytes = 0;
    }
    batch.push(file);
    batchBytes += f.data.length;
  });
  if (batch.length > 0) batches.push(batch);
  return { batches, notSent: [...notSent, ...heldBack] };
}

/** Names every file that was not attached, so nothing disappears silently. */
export function notSentText(notSent: HeldBackFile[]): string {
  if (notSent.length === 0) return '';
  // Names and reasons come from the agent's outbox: one escaped line each, never a forged one.
  const lines = notSent.map((f) => `- \`${printable(f.name).replace(/`/g, "'")}\`: ${printable(f.reason, 300).replace(/`/g, "'")}`);
  return `**Not attached (${notSent.length}):**\n${lines.join('\n')}`;
}

export function progressText(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  const full = line ? `Thinking… ${line}` : 'Thinking…';
  return full.length > MESSAGE_LIMIT ? `${full.slice(0, MESSAGE_LIMIT - 1)}…` : full;
}
