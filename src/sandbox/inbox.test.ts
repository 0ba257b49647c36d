import { describe, expect, it } from 'vitest';
import tar from 'tar-stream';
import { packFiles, safeFileName } from './inbox.js';

async function entries(dir: string, files: Array<{ name: string; data: Buffer }>) {
  const out: Array<{ name: string; type: string; uid: number }> = [];
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (h, stream, next) => {
      out.push({ name: h.name, type: h.type ?? '', uid: h.uid ?? -1 });
      stream.resume();
      stream.on('end', next);
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  packFiles(dir, files).pipe(extract);
  await done;
  return out;
}

describe('inbox packing', () => {
  it('flattens hostile names so nothing lands outside the inbox folder', async () => {
    const e = await entries('inbox/ev1', [
      { name: '../../etc/passwd', data: Buffer.from('x') },
      { name: '/abs/path.txt', data: Buffer.from('x') },
      { name: '..', data: Buffer.from('x') },
      { name: '.bashrc', data: Buffer.from('x') },
      { name: 'na\u0000me\n.txt', data: Buffer.from('x') },
      { name: 'passwd', data: Buffer.from('dup') },
    ]);
    expect(e.map((x) => x.name)).toEqual(['inbox/', 'inbox/ev1/', 'inbox/ev1/passwd', 'inbox/ev1/path.txt', 'inbox/ev1/file-3', 'inbox/ev1/bashrc', 'inbox/ev1/na_me_.txt', 'inbox/ev1/6-passwd']);
    expect(e.every((x) => x.uid === 1000)).toBe(true);
  });

  it('refuses a target folder that climbs out of the workspace', () => {
    expect(() => packFiles('../x', [])).toThrow(/invalid inbox folder/);
    expect(() => packFiles('inbox/../../x', [])).toThrow(/invalid inbox folder/);
    expect(() => packFiles('/abs', [])).toThrow(/invalid inbox folder/);
  });

  it('keeps ordinary names', () => {
    expect(safeFileName('Quarterly report (v2).pdf', 'f')).toBe('Quarterly report _v2_.pdf');
  });
});
