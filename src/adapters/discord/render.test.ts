import { describe, expect, it } from 'vitest';
import { planAttachments, progressText, splitMessage, uploadName } from './render.js';

describe('splitMessage', () => {
  it('keeps short text whole', () => {
    expect(splitMessage('hello')).toEqual(['hello']);
  });

  it('splits on line boundaries within the limit and loses nothing', () => {
    const lines = Array.from({ length: 300 }, (_, i) => `row ${i}: ${'y'.repeat(i % 50)}`);
    const chunks = splitMessage(lines.join('\n'));
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(c.length).toBeLessThanOrEqual(2000);
    expect(chunks.join('\n')).toBe(lines.join('\n'));
  });

  it('hard-splits a single over-long line, preferring spaces', () => {
    const words = Array.from({ length: 1000 }, (_, i) => `w${i}`).join(' ');
    const chunks = splitMessage(words);
    for (const c of chunks) expect(c.length).toBeLessThanOrEqual(2000);
    expect(chunks.join(' ')).toBe(words);
    const noSpaces = 'z'.repeat(4500);
    expect(splitMessage(noSpaces).join('')).toBe(noSpaces);
  });

  it('closes and reopens a code fence across a split', () => {
    const code = Array.from({ length: 150 }, (_, i) => `const v${i} = ${i}; // ${'c'.repeat(10)}`);
    const text = ['Here:', '```ts', ...code, '```', 'Done.'].join('\n');
    const chunks = splitMessage(text);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) {
      expect(c.length).toBeLessThanOrEqual(2000);
      expect((c.match(/^```/gm) ?? []).length % 2).toBe(0);
    }
    expect(chunks[1]!.startsWith('```ts\n')).toBe(true);
  });
});

describe('planAttachments', () => {
  it('batches 10 files per message and names oversized and held-back files', () => {
    const files = Array.from({ length: 12 }, (_, i) => ({ name: `f${i}`, data: Buffer.alloc(10) }));
    files.push({ name: 'big', data: Buffer.alloc(100_000) });
    const plan = planAttachments(files, [{ name: 'held', reason: 'too many' }], 50_000);
    expect(plan.batches.map((b) => b.length)).toEqual([10, 2]);
    expect(plan.notSent.map((f) => f.name)).toEqual(['big', 'held']);
  });

  it('splits batches by total size', () => {
    const files = Array.from({ length: 3 }, (_, i) => ({ name: `f${i}`, data: Buffer.alloc(400) }));
    expect(planAttachments(files, [], 1000).batches.map((b) => b.length)).toEqual([2, 1]);
  });
});

describe('uploadName / progressText', () => {
  it('strips paths and unsafe characters', () => {
    expect(uploadName('../../etc/passwd', 0)).toBe('passwd');
    expect(uploadName('a\\b\\c.txt', 0)).toBe('c.txt');
    expect(uploadName('we"ird<name>.md', 0)).toBe('we_ird_name_.md');
    expect(uploadName('..', 2)).toBe('file-3');
  });

  it('prefixes progress and keeps it to one line within the limit', () => {
    expect(progressText('  reading\nfiles ')).toBe('Thinking… reading files');
    expect(progressText('')).toBe('Thinking…');
    expect(progressText('x'.repeat(3000)).length).toBe(2000);
  });
});
