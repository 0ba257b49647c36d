import { describe, expect, it } from 'vitest';
import tar from 'tar-stream';
import { inboxFileNames, packFiles, safeFileName } from './inbox.js';

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
  packFiles(dir, files).archive.pipe(extract);
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
    expect(e.map((x) => x.name)).toEqual(['inbox/', 'inbox/ev1/', 'inbox/ev1/passwd', 'inbox/ev1/path.txt', 'inbox/ev1/file-3', 'inbox/ev1/bashrc', 'inbox/ev1/na_me_.txt', 'inbox/ev1/passwd-2']);
    expect(e.every((x) => x.uid === 1000)).toBe(true);
  });

  it('refuses a target folder that climbs out of the workspace', () => {
    expect(() => packFiles('../x', [])).toThrow(/invalid inbox folder/);
    expect(() => packFiles('inbox/../../x', [])).toThrow(/invalid inbox folder/);
    expect(() => packFiles('/abs', [])).toThrow(/invalid inbox folder/);
  });

  it('keeps ordinary names, in any script', () => {
    expect(safeFileName('Quarterly report (v2).pdf', 'f')).toBe('Quarterly report (v2).pdf');
    expect(safeFileName('Rapport été 2025.pdf', 'f')).toBe('Rapport été 2025.pdf');
    expect(safeFileName('報告.txt', 'f')).toBe('報告.txt');
  });

  it('turns invisible, reordering and control characters into _ (hostile)', () => {
    expect(safeFileName('invoice\u202efdp.exe', 'f')).toBe('invoice_fdp.exe');
    expect(safeFileName('a\u200bb\u0007c.txt', 'f')).toBe('a_b_c.txt');
    expect(safeFileName('x\nfile: invoice.pdf', 'f')).toBe('x_file_ invoice.pdf');
    expect(safeFileName('..\\win\\a.txt', 'f')).toBe('a.txt');
    expect(safeFileName('...', 'f')).toBe('f');
  });

  it('keeps long names within 200 bytes, extension included, without splitting a character', () => {
    const n = safeFileName(`${'é'.repeat(300)}.pdf`, 'f');
    expect(Buffer.byteLength(n)).toBeLessThanOrEqual(200);
    expect(n.endsWith('é.pdf')).toBe(true);
    const huge = safeFileName('a'.repeat(2_000_000), 'f');
    expect(huge).toBe('a'.repeat(200));
  });

  it('returns the names it wrote: duplicates renamed, ignoring case, in order', async () => {
    const files = ['image.png', 'image.png', 'IMAGE.PNG', 'image-2.png', 'sub/image.png', ''].map((name) => ({ name, data: Buffer.from(name) }));
    expect(inboxFileNames(files)).toEqual(['image.png', 'image-2.png', 'IMAGE-3.PNG', 'image-2-2.png', 'image-4.png', 'file-6']);
    const packed = packFiles('inbox/e', files);
    expect(packed.names).toEqual(inboxFileNames(files));
    const e = await entries('inbox/e', files);
    expect(e.filter((x) => x.type === 'file').map((x) => x.name)).toEqual(packed.names.map((n) => `inbox/e/${n}`));
    const long = inboxFileNames([{ name: `${'x'.repeat(300)}.png` }, { name: `${'x'.repeat(300)}.png` }]);
    expect(long[0]).not.toBe(long[1]);
    expect(long.every((n) => Buffer.byteLength(n) <= 200 && n.endsWith('.png'))).toBe(true);
  });
});
