import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { outboxRelativeName, readOutboxTar } from './outbox.js';
import type { OutboxEntry } from './types.js';

type Item = { name: string; type?: 'file' | 'directory' | 'symlink' | 'link' | 'fifo'; data?: string; linkname?: string };

function tarOf(items: Item[]): Readable {
  const pack = tar.pack();
  for (const it of items) {
    const type = it.type ?? 'file';
    if (type === 'file') pack.entry({ name: it.name, type }, it.data ?? '');
    else pack.entry({ name: it.name, type, linkname: it.linkname, size: 0 });
  }
  pack.finalize();
  return pack as unknown as Readable;
}

async function all(items: Item[], limits = { maxFileBytes: 100, maxTotalBytes: 150, maxFiles: 5 }) {
  const out: OutboxEntry[] = [];
  for await (const e of readOutboxTar(tarOf(items), 'outbox', limits)) out.push(e);
  return out;
}

describe('outbox validation', () => {
  it('passes regular files, including nested ones', async () => {
    const out = await all([
      { name: 'outbox/', type: 'directory' },
      { name: 'outbox/a.txt', data: 'hello' },
      { name: 'outbox/sub/', type: 'directory' },
      { name: 'outbox/sub/b.csv', data: 'x,y' },
    ]);
    expect(out).toEqual([
      { kind: 'file', name: 'a.txt', size: 5, data: Buffer.from('hello') },
      { kind: 'file', name: 'sub/b.csv', size: 3, data: Buffer.from('x,y') },
    ]);
  });

  it('refuses symlinks, hard links, ../ names, fifos, and oversize files, and reports each', async () => {
    const out = await all([
      { name: 'outbox/', type: 'directory' },
      { name: 'outbox/passwd', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'outbox/hard', type: 'link', linkname: 'etc/shadow' },
      { name: 'outbox/../../etc/passwd', data: 'root:x:0:0' },
      { name: 'outbox/pipe', type: 'fifo' },
      { name: 'outbox/big.bin', data: 'x'.repeat(101) },
      { name: 'outbox/ok.txt', data: 'fine' },
    ]);
    const reasons = out.map((e) => (e.kind === 'refused' ? `${e.name}:${e.reason}` : `${e.name}:ok`));
    expect(reasons).toEqual([
      'passwd:symlink',
      'hard:hardlink',
      '../../etc/passwd:unsafe_name',
      'pipe:not_regular_file',
      'big.bin:too_large',
      'ok.txt:ok',
    ]);
    const sym = out[0];
    expect(sym?.kind === 'refused' && sym.detail).toContain('/etc/passwd');
  });

  it('enforces the total and count caps without dropping silently', async () => {
    const out = await all([
      { name: 'outbox/', type: 'directory' },
      { name: 'outbox/1', data: 'x'.repeat(80) },
      { name: 'outbox/2', data: 'x'.repeat(80) },
      { name: 'outbox/3', data: 'x' },
      { name: 'outbox/4', data: 'x' },
      { name: 'outbox/5', data: 'x' },
      { name: 'outbox/6', data: 'x' },
      { name: 'outbox/7', data: 'x' },
    ]);
    expect(out.map((e) => (e.kind === 'refused' ? e.reason : 'ok'))).toEqual([
      'ok', 'total_too_large', 'ok', 'ok', 'ok', 'ok', 'too_many_files',
    ]);
  });

  it('refuses everything when the outbox itself is a symlink', async () => {
    const out = await all([{ name: 'outbox', type: 'symlink', linkname: '/etc' }]);
    expect(out).toEqual([{ kind: 'refused', name: 'outbox', reason: 'symlink', detail: 'the outbox itself is a symlink to /etc' }]);
  });

  it('rejects names outside the root and with control characters', () => {
    expect(outboxRelativeName('etc/passwd', 'outbox')).toHaveProperty('unsafe');
    expect(outboxRelativeName('outbox/a\nb', 'outbox')).toHaveProperty('unsafe');
    expect(outboxRelativeName('outbox/./a', 'outbox')).toHaveProperty('unsafe');
    expect(outboxRelativeName('outbox/x/../../y', 'outbox')).toHaveProperty('unsafe');
    expect(outboxRelativeName('outbox/report.pdf', 'outbox')).toEqual({ name: 'report.pdf' });
  });
});

describe('a refused entry named like the outbox', () => {
  it('does not end the stream: files after it are still reported', async () => {
    const out = await all([
      { name: 'outbox/', type: 'directory' },
      { name: 'outbox/outbox', type: 'symlink', linkname: '/etc' },
      { name: 'outbox/after.txt', data: 'later' },
    ]);
    expect(out.map((e) => `${e.name}:${e.kind}`)).toEqual(['outbox:refused', 'after.txt:file']);
  });
});
