/**
 * What `agent-vm send` and `agent-vm transcript` print when agents choose hostile names: the CLI
 * runs as its own process (from source, through tsx), `send --server` against the real local
 * adapter on the real HTTP server, `transcript` against an embedded database. A held-back name
 * `x\nfile: invoice.pdf (2048 bytes)` must stay one escaped line, never a forged `file:` line.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalAdapter } from '../src/adapters/local/index.js';
import type { TurnOutcome } from '../src/adapters/types.js';
import { createLogger } from '../src/log.js';
import { createApp } from '../src/server.js';
import { openStore } from '../src/store/index.js';
import { RecordingIntake } from './contracts/channel-adapter.js';
import { tempDir } from './helpers/env.js';
import { serveApp } from './helpers/upload.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TOKEN = 'cli-output-token-0123456789';
const FORGED = 'x\nfile: invoice.pdf (2048 bytes)';
const dirs: string[] = [];

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Runs the CLI from source in a child process with only the given environment. */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `const { main } = await import(${JSON.stringify(path.join(ROOT, 'src/cli.ts'))}); process.exitCode = await main(process.argv.slice(1));`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', AGENTVM_RUNTIME: 'runsc', AGENTVM_LOG_LEVEL: 'silent', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('agent-vm CLI output', () => {
  it('send --server prints agent-chosen names escaped, one line each, and writes files by their outbox-relative names', async () => {
    const reply: TurnOutcome = {
      kind: 'reply',
      text: 'Done.\n\u001b[2Kreport attached\rX',
      files: [
        { name: 'report.txt', data: Buffer.from('quarterly') },
        { name: 'charts/data.csv', data: Buffer.from('a,b\n') },
        { name: '../escape.txt', data: Buffer.from('nope') },
      ],
      heldBack: [{ name: FORGED, reason: 'name contains control characters' }],
    };
    const watcher = {
      async *watch(): AsyncIterable<TurnOutcome> {
        yield { kind: 'progress', text: 'step\nfile: fake.pdf (1 bytes)' };
        yield reply;
      },
    };
    const adapter = createLocalAdapter({ intake: new RecordingIntake(), watcher, apiToken: TOKEN, logger: createLogger('silent') });
    const app = createApp({ logger: createLogger('silent'), checks: [], registry: new Registry() });
    app.route('/', adapter.routes!);
    const served = await serveApp(app);
    const out = tempDir('cli-out');
    dirs.push(out);
    try {
      const r = await cli(['send', 'p', 'hello', '--server', served.url, '--out', out, '--id', 'e1'], { AGENTVM_API_TOKEN: TOKEN, AGENTVM_DATA_DIR: tempDir('cli-data') });
      expect(r.code, r.stderr).toBe(0);
      const err = r.stderr.trimEnd().split('\n');
      expect(err).toEqual([
        '… step\\nfile: fake.pdf (1 bytes)',
        `file: ${path.join(out, 'report.txt')} (9 bytes)`,
        `file: ${path.join(out, 'charts/data.csv')} (4 bytes)`,
        'held back: x\\nfile: invoice.pdf (2048 bytes): name contains control characters',
        'held back: ../escape.txt: not written: the name would leave --out',
        expect.stringMatching(/^conversation: local:p:[0-9a-f-]{36}$/),
      ]);
      // The reply keeps its lines, but no terminal escape or carriage return reaches the terminal.
      expect(r.stdout).toBe('Done.\n\\u001b[2Kreport attached\\rX\n');
      expect(await readFile(path.join(out, 'charts/data.csv'), 'utf8')).toBe('a,b\n');
      await expect(readFile(path.join(out, '..', 'escape.txt'))).rejects.toThrow();
    } finally {
      await served.close();
      await adapter.close?.();
    }
  });

  it('transcript prints entries escaped, continuation lines indented, held-back names on one line', async () => {
    const dataDir = tempDir('cli-transcript');
    dirs.push(dataDir);
    const store = await openStore({ dataDir });
    try {
      await store.migrate();
      const base = { conversation: 'local:p:demo', profile: 'p', eventId: 'local:e1' };
      await store.gateway.addTranscript({ ...base, kind: 'prompt', text: 'make the report' });
      await store.gateway.addTranscript({ ...base, kind: 'reply', text: 'Here.\n2030-01-01T00:00:00.000Z  reply     forged entry', meta: { heldBack: [{ name: FORGED, reason: 'unsafe_name' }] } });
      await store.gateway.addTranscript({ ...base, kind: 'file', text: 'evil\u202etxt.exe', meta: { size: 3 } });
    } finally {
      await store.close();
    }
    const r = await cli(['transcript', 'local:p:demo'], { AGENTVM_DATA_DIR: dataDir });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const indent = ' '.repeat(36);
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^\S+Z {2}prompt {4}make the report$/);
    expect(lines[1]).toMatch(/^\S+Z {2}reply {5}Here\.$/);
    expect(lines[2]).toBe(`${indent}2030-01-01T00:00:00.000Z  reply     forged entry`);
    expect(lines[3]).toBe(`${indent}held back: x\\nfile: invoice.pdf (2048 bytes): unsafe_name`);
    expect(lines[4]).toMatch(/^\S+Z {2}file {6}evil\\u202etxt\.exe \(3 bytes\)$/);
  });
});
