/** The workspace tar in and out (src/sandbox/snapshots/archive.ts): names, counts, restore headers. */
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { checkEntry, fromEngineArchive, restorable, restoredHeader, symlinkTarget, type EntryState } from '../../src/sandbox/snapshots/archive.js';

async function pack(entries: Array<Parameters<ReturnType<typeof tar.pack>['entry']>[0] & { data?: string }>): Promise<Buffer> {
  const p = tar.pack();
  for (const { data, ...h } of entries) p.entry(h, data ?? '');
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function headers(stream: Readable) {
  const out: Array<{ name: string; type: string; linkname?: string | null; uid?: number; mode?: number }> = [];
  const x = tar.extract();
  stream.on('error', (err) => x.destroy(err));
  stream.pipe(x);
  for await (const e of x) {
    out.push({ name: e.header.name, type: e.header.type, linkname: e.header.linkname, uid: e.header.uid, mode: e.header.mode });
    e.resume();
  }
  return out;
}

describe('workspace archives', () => {
  it("rewrites the engine's workspace/… names (hard link targets too) and counts files", async () => {
    const engine = await pack([
      { name: 'workspace/', type: 'directory' },
      { name: 'workspace/a.txt', data: 'a' },
      { name: 'workspace/d/', type: 'directory' },
      { name: 'workspace/d/h', type: 'link', linkname: 'workspace/a.txt' },
      { name: 'workspace/l', type: 'symlink', linkname: 'a.txt' },
    ]);
    const { archive, counts } = fromEngineArchive(Readable.from([engine]));
    const got = await headers(archive);
    expect(got.map((h) => [h.name, h.type, h.linkname ?? null])).toEqual([
      ['a.txt', 'file', null], ['d/', 'directory', null], ['d/h', 'link', 'a.txt'], ['l', 'symlink', 'a.txt'],
    ]);
    expect(await counts).toEqual({ files: 1, entries: 4 });
  });

  it('makes escaping relative symlinks absolute (as they resolve in the sandbox) and leaves the rest as made', () => {
    expect(symlinkTarget('up', '../../../etc')).toBe('/etc');
    expect(symlinkTarget('x', '..')).toBe('/');
    expect(symlinkTarget('q', 'a/../../../..')).toBe('/');
    expect(symlinkTarget('d/y', '../d/x')).toBe('../d/x');
    expect(symlinkTarget('d/y', '..')).toBe('..');
    expect(symlinkTarget('h', '/etc/hostname')).toBe('/etc/hostname');
  });

  it("gives restored entries the sandbox user's ownership and no set-id bits", () => {
    expect(restoredHeader({ name: 'bin/tool', type: 'file', size: 1, mode: 0o6755, uid: 0, gid: 0 })).toMatchObject({ name: 'bin/tool', uid: 1000, gid: 1000, mode: 0o755 });
    expect(restoredHeader({ name: './d', type: 'directory', mode: 0o1777, uid: 0 })).toMatchObject({ name: 'd/', mode: 0o1777, uid: 1000 });
  });

  it('checks every entry against the ones before it', () => {
    const seen: EntryState = new Map();
    const check = (h: Parameters<typeof checkEntry>[0]) => checkEntry(h, seen);
    expect(check({ name: 'a', type: 'file' })).toBeUndefined();
    expect(check({ name: 'dir/', type: 'directory' })).toBeUndefined();
    expect(check({ name: 'dir/b', type: 'file' })).toBeUndefined();
    expect(check({ name: 'hl', type: 'link', linkname: 'a' })).toBeUndefined();
    expect(check({ name: 'sl', type: 'symlink', linkname: '/etc' })).toBeUndefined();
    expect(check({ name: 'sl/x', type: 'file' })).toMatch(/lies under symlink "sl"/);
    expect(check({ name: 'a/x', type: 'file' })).toMatch(/lies under file "a"/);
    expect(check({ name: 'hl2', type: 'link', linkname: 'sl' })).toMatch(/not an earlier file/);
    expect(check({ name: 'a', type: 'file' })).toMatch(/appears twice/);
    expect(check({ name: './', type: 'directory' })).toMatch(/workspace root/);
    expect(check({ name: 'x/../../y', type: 'file' })).toMatch(/"\.\."/);
    expect(check({ name: 'blk', type: 'block-device' })).toMatch(/is a block-device/);
  });

  it('re-packs for the engine, and fails the stream at the first unsafe entry', async () => {
    const good = await headers(restorable(Readable.from([await pack([{ name: 'x', data: 'x', uid: 0, mode: 0o4755 }, { name: 'up', type: 'symlink', linkname: '../..' }])])));
    expect(good).toEqual([
      { name: 'x', type: 'file', linkname: null, uid: 1000, mode: 0o755 },
      { name: 'up', type: 'symlink', linkname: '/', uid: 1000, mode: expect.any(Number) },
    ]);
    const evil = restorable(Readable.from([await pack([{ name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'l/passwd', data: 'root::0:0' }])]));
    await expect(headers(evil)).rejects.toThrow(/unsafe snapshot entry: entry "l\/passwd" lies under symlink "l"/);
  });
});
