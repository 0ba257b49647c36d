/**
 * Attachment downloads for a turn. Discord CDN URLs carry their own signature, so no token is
 * sent (a bot token must never leave for a URL taken from a message). Only http(s); sizes are
 * checked before and during the download, so a lying `size` cannot fill memory.
 *
 * Deliberately left out: a host allow-list; the URLs come from signed interactions or the
 * authenticated gateway, and `DISCORD_API_URL` deployments may serve them from elsewhere.
 */
import { readBodyCapped } from '../http.js';
import { describeError } from '../../errors.js';
import type { HeldBackFile, InboundAttachment, InboundEvent, OutboundFile, TurnContext } from '../types.js';

const DOWNLOAD_TIMEOUT_MS = 30_000;

async function download(url: URL, maxBytes: number): Promise<Buffer | string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS), redirect: 'follow' });
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => undefined);
    return `download failed (HTTP ${res.status})`;
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body.cancel().catch(() => undefined);
    return `too large (${declared} bytes, limit ${maxBytes})`;
  }
  const data = await readBodyCapped(res, maxBytes);
  return data === 'too_large' ? `too large (over ${maxBytes} bytes)` : data;
}

async function fetchOne(a: InboundAttachment, maxFileBytes: number): Promise<OutboundFile | HeldBackFile> {
  let url: URL;
  try {
    url = new URL(a.ref);
  } catch {
    return { name: a.name, reason: 'not a URL' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { name: a.name, reason: 'not an http(s) URL' };
  if (a.size !== undefined && a.size > maxFileBytes) return { name: a.name, reason: `too large (${a.size} bytes, limit ${maxFileBytes})` };
  try {
    const data = await download(url, maxFileBytes);
    // The name as Discord gave it: the sandbox's inbox makes it safe and unique, once, for every platform.
    return typeof data === 'string' ? { name: a.name, reason: data } : { name: a.name, data };
  } catch (err) {
    return { name: a.name, reason: `download failed (${describeError(err)})` };
  }
}

export async function fetchAttachments(event: InboundEvent, limits: { maxFileBytes: number; maxFiles: number }): Promise<TurnContext> {
  const attachments = event.attachments ?? [];
  const wanted = attachments.slice(0, Math.max(limits.maxFiles, 0));
  const skipped: HeldBackFile[] = attachments
    .slice(wanted.length)
    .map((a) => ({ name: a.name, reason: `too many files (limit ${limits.maxFiles})` }));
  const results = await Promise.all(wanted.map((a) => fetchOne(a, limits.maxFileBytes)));
  const files: OutboundFile[] = [];
  for (const r of results) {
    if ('data' in r) files.push(r);
    else skipped.push(r);
  }
  return { files, skipped };
}
