/**
 * Validates files leaving a sandbox. Input is a tar stream of the outbox directory as the
 * engine archived it (never produced by code inside the sandbox, but its contents are the
 * agent's, so every entry is treated as hostile). Output is a stream of files and refusals:
 * nothing is dropped without a report.
 */
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { OutboxEntry, OutboxLimits, OutboxRefusalReason } from './types.js';

// Control characters would let a file name forge log lines or chat markup.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Returns the name relative to the outbox, or a reason it is unsafe. */
export function outboxRelativeName(entryName: string, rootName: string): { name: string } | { unsafe: string } {
  const trimmed = entryName.replace(/\/+$/, '');
  if (trimmed === rootName) return { name: '' };
  if (!trimmed.startsWith(`${rootName}/`)) return { unsafe: `entry ${JSON.stringify(entryName)} is outside the outbox` };
  const rel = trimmed.slice(rootName.length + 1);
  if (rel.length === 0 || rel.length > 1024) return { unsafe: 'empty or overlong name' };
  if (CONTROL.test(rel)) return { unsafe: 'name contains control characters' };
  if (rel.startsWith('/')) return { unsafe: 'absolute path' };
  const parts = rel.split('/');
  if (parts.some((p) => p === '..' || p === '.' || p === '' || p.length > 255)) {
    return { unsafe: 'path with "..", ".", or empty segments' };
  }
  return { name: rel };
}

function refusal(name: string, reason: OutboxRefusalReason, detail: string): OutboxEntry {
  return { kind: 'refused', name, reason, detail };
}

/** Reads `stream` (a tar whose top entry is `rootName`) and yields validated outbox entries. */
export async function* readOutboxTar(
  stream: Readable,
  rootName: string,
  limits: OutboxLimits,
  /** Told of every entry below the root, yielded or not (directories too). */
  onEntry?: () => void,
): AsyncGenerator<OutboxEntry> {
  const extract = tar.extract();
  stream.on('error', (err) => extract.destroy(err));
  stream.pipe(extract);

  let total = 0;
  let count = 0;
  let sawRoot = false;
  for await (const entry of extract) {
    const h = entry.header;
    const rel = outboxRelativeName(h.name, rootName);
    const shown = 'name' in rel ? rel.name || rootName : h.name.startsWith(`${rootName}/`) ? h.name.slice(rootName.length + 1) : h.name;
    const isRoot = 'name' in rel && rel.name === '';
    let verdict: OutboxEntry | undefined;
    let keep = false;
    if (!('name' in rel && rel.name === '')) onEntry?.();

    if ('unsafe' in rel) {
      verdict = refusal(shown, 'unsafe_name', rel.unsafe);
    } else if (rel.name === '') {
      // The outbox itself must be a real directory: a symlinked outbox points somewhere else.
      sawRoot = true;
      if (h.type !== 'directory') {
        verdict = refusal(rootName, h.type === 'symlink' ? 'symlink' : 'not_regular_file',
          h.type === 'symlink' ? `the outbox itself is a symlink to ${h.linkname ?? '?'}` : `the outbox is a ${h.type}, not a directory`);
      }
    } else if (!sawRoot) {
      verdict = refusal(shown, 'unsafe_name', 'entry arrived before the outbox directory');
    } else if (h.type === 'directory') {
      // Directories carry no data; the files inside them are reported one by one.
    } else if (h.type === 'symlink') {
      verdict = refusal(shown, 'symlink', `symlink to ${h.linkname ?? '?'} (only regular files leave the sandbox)`);
    } else if (h.type === 'link') {
      verdict = refusal(shown, 'hardlink', `hard link to ${h.linkname ?? '?'} (only regular files leave the sandbox)`);
    } else if (h.type !== 'file' && h.type !== 'contiguous-file') {
      verdict = refusal(shown, 'not_regular_file', `${h.type ?? 'unknown'} entries are not files`);
    } else {
      const size = h.size ?? 0;
      if (count + 1 > limits.maxFiles) {
        verdict = refusal(shown, 'too_many_files', `more than ${limits.maxFiles} files in the outbox`);
      } else if (size > limits.maxFileBytes) {
        verdict = refusal(shown, 'too_large', `${size} bytes is over the ${limits.maxFileBytes}-byte limit per file`);
      } else if (total + size > limits.maxTotalBytes) {
        verdict = refusal(shown, 'total_too_large', `would bring the outbox to ${total + size} bytes, over the ${limits.maxTotalBytes}-byte total`);
      } else {
        keep = true;
        count += 1;
        total += size;
      }
    }

    if (keep) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      const data = Buffer.concat(chunks);
      yield { kind: 'file', name: 'name' in rel ? rel.name : h.name, size: data.length, data };
    } else {
      entry.resume();
      await new Promise<void>((resolve, reject) => {
        entry.on('end', resolve);
        entry.on('error', reject);
      });
      if (verdict) {
        yield verdict;
        // A refused outbox directory itself ends the stream: nothing inside it is trusted.
        if (isRoot) return;
      }
    }
  }
}
