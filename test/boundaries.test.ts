/**
 * The module seams of DESIGN.md ("Seams") as tests: which folders may import which, where
 * dockerode and process.env may appear, and how long a source file may grow.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAX_LINES = 500;

interface SourceFile {
  /** Repo-relative, '/'-separated, e.g. `src/sandbox/docker/engine.ts`. */
  file: string;
  text: string;
  /** The text with every comment removed. */
  code: string;
  isTest: boolean;
}

interface Import {
  from: string;
  specifier: string;
  /** Repo-relative path for relative specifiers (`.js` mapped to `.ts`), else the bare specifier. */
  target: string;
  relative: boolean;
}

/** Source text without comments. Uses the TypeScript printer so strings, templates and regex literals survive intact. */
function stripComments(text: string): string {
  const sf = ts.createSourceFile('x.ts', text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  return ts.createPrinter({ removeComments: true }).printFile(sf);
}

const IMPORT_PATTERNS: RegExp[] = [
  // import x from '...', import type { a,\n b } from '...', export * from '...', export { a } from '...'
  /\b(?:import|export)\s+(?:type\s+)?[^;'"`]*?\bfrom\s*['"]([^'"]+)['"]/g,
  // import '...'
  /\bimport\s*['"]([^'"]+)['"]/g,
  // import('...')
  /\bimport\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
  // require('...') (createRequire)
  /\brequire\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
];

function importSpecifiers(code: string): string[] {
  const out: string[] = [];
  for (const re of IMPORT_PATTERNS) {
    for (const m of code.matchAll(re)) out.push(m[1]!);
  }
  return out;
}

function resolve(from: string, specifier: string): Import {
  if (!specifier.startsWith('.')) return { from, specifier, target: specifier, relative: false };
  let target = path.posix.normalize(path.posix.join(path.posix.dirname(from), specifier));
  target = target.replace(/\.(m|c)?js$/, '.$1ts');
  return { from, specifier, target, relative: true };
}

function walk(dir: string): SourceFile[] {
  const abs = path.join(ROOT, dir);
  if (!fs.existsSync(abs)) return [];
  return (fs.readdirSync(abs, { recursive: true }) as string[])
    .map((rel) => rel.split(path.sep).join('/'))
    .filter((rel) => rel.endsWith('.ts') && fs.statSync(path.join(abs, rel)).isFile())
    .sort()
    .map((rel) => {
      const file = `${dir}/${rel}`;
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
      return { file, text, code: stripComments(text), isTest: file.endsWith('.test.ts') };
    });
}

const files = walk('src');
const imports: Import[] = files.flatMap((f) => importSpecifiers(f.code).map((s) => resolve(f.file, s)));

function within(p: string, dir: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

function show(i: Import): string {
  return i.relative ? `${i.from} imports '${i.specifier}' (${i.target})` : `${i.from} imports '${i.specifier}'`;
}

/** The adapter folder a path belongs to (`src/adapters/slack/x.ts` → `slack`), or undefined for shared files. */
function adapterOf(p: string): string | undefined {
  const m = /^src\/adapters\/([^/]+)\/./.exec(p);
  return m?.[1];
}

describe('boundary helpers', () => {
  it('finds the source files', () => {
    expect(files.length).toBeGreaterThan(0);
    expect(files.map((f) => f.file)).toContain('src/config.ts');
  });

  it('parses every import form and ignores comments', () => {
    const code = stripComments(`/** import a from 'in-doc-comment' */
import x from './x.js'; // import b from 'in-line-comment'
import type {
  A,
  B as C,
} from "../y.js";
import * as ns from 'pkg-ns';
import 'side-effect';
export * from './all.js';
export { z } from './z.js';
export type { T } from './t.js';
const u = 'http://not-a-comment';
/* import c from 'in-block-comment' */
const d = await import('./lazy.js');
`);
    expect(importSpecifiers(code).sort()).toEqual(
      ['./x.js', '../y.js', 'pkg-ns', 'side-effect', './all.js', './z.js', './t.js', './lazy.js'].sort(),
    );
    expect(code).toContain('http://not-a-comment');
  });

  it('resolves relative specifiers to repo paths', () => {
    expect(resolve('src/adapters/slack/index.ts', '../../gateway/router.js').target).toBe('src/gateway/router.ts');
    expect(resolve('src/sandbox/docker/exec.ts', './engine.js').target).toBe('src/sandbox/docker/engine.ts');
    expect(resolve('src/a.ts', 'dockerode').relative).toBe(false);
  });
});

describe('seams', () => {
  it('adapters import neither the gateway, the sandbox, nor another adapter', () => {
    const bad = imports
      .filter((i) => within(i.from, 'src/adapters') && i.relative)
      .filter((i) => {
        if (within(i.target, 'src/gateway') || within(i.target, 'src/sandbox')) return true;
        const other = adapterOf(i.target);
        return other !== undefined && other !== adapterOf(i.from);
      })
      .map(show);
    expect(bad, `adapter imports across the seam:\n${bad.join('\n')}`).toEqual([]);
  });

  it('only src/sandbox/docker/engine.ts imports dockerode', () => {
    const bad = imports
      .filter((i) => !i.relative && /^dockerode(\/|$)/.test(i.specifier) && i.from !== 'src/sandbox/docker/engine.ts')
      .map(show);
    expect(bad, `dockerode imported outside the engine:\n${bad.join('\n')}`).toEqual([]);
  });

  it('the Docker driver reaches the engine as ./engine.js', () => {
    const bad = imports
      .filter((i) => within(i.from, 'src/sandbox/docker') && i.target === 'src/sandbox/docker/engine.ts')
      .filter((i) => path.posix.dirname(i.from) === 'src/sandbox/docker' && i.specifier !== './engine.js')
      .map(show);
    expect(bad, `engine imported by an unexpected path:\n${bad.join('\n')}`).toEqual([]);
  });

  it('the sandbox imports neither the gateway, the adapters, nor governance', () => {
    const bad = imports
      .filter((i) => within(i.from, 'src/sandbox') && i.relative)
      .filter((i) => ['src/gateway', 'src/adapters', 'src/governance'].some((d) => within(i.target, d)))
      .map(show);
    expect(bad, `sandbox imports across the seam:\n${bad.join('\n')}`).toEqual([]);
  });

  it('SQL stays in src/store: only it imports drizzle-orm, and nothing outside it reads the schema', () => {
    const bad = imports
      .filter((i) => !within(i.from, 'src/store'))
      .filter((i) => (!i.relative && /^drizzle-orm(\/|$)/.test(i.specifier)) || i.target === 'src/store/schema.ts')
      .map(show);
    expect(bad, `SQL outside src/store (add a repository method there instead):\n${bad.join('\n')}`).toEqual([]);
  });

  it('process.env is read only in src/config.ts', () => {
    const patterns = [/\bprocess\s*\.\s*env\b/, /\bprocess\s*\[\s*['"`]env['"`]\s*\]/, /\{[^}]*\benv\b[^}]*\}\s*=\s*process\b/];
    const bad = files
      .filter((f) => !f.isTest && f.file !== 'src/config.ts')
      .filter((f) => patterns.some((re) => re.test(f.code)))
      .map((f) => f.file);
    expect(bad, `process.env read outside src/config.ts:\n${bad.join('\n')}`).toEqual([]);
  });

  it(`no source file exceeds ${MAX_LINES} lines`, () => {
    const bad = files
      .filter((f) => !f.isTest)
      .map((f) => ({ file: f.file, lines: f.text.replace(/\n$/, '').split('\n').length }))
      .filter((f) => f.lines > MAX_LINES)
      .map((f) => `${f.file}: ${f.lines} lines`);
    expect(bad, `files over ${MAX_LINES} lines:\n${bad.join('\n')}`).toEqual([]);
  });
});
