/**
 * The `agent-vm` binary as a user runs it (compiled: `npm test` builds first). Errors are one
 * clear line and a non-zero exit; nothing is half-done after a refusal.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { approvalStore } from '../src/governance/approval-store.js';
import { createApprovalBroker, type PendingApproval } from '../src/governance/approvals.js';
import { openStore } from '../src/store/index.js';
import { agentId, tempDir } from './helpers/env.js';
import { createTestDatabase } from './helpers/pg.js';

const BIN = fileURLToPath(new URL('../bin/agent-vm.js', import.meta.url));
const dataDir = tempDir('cli');

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, AGENTVM_DATA_DIR: dataDir, AGENTVM_RUNTIME: 'runsc', ...env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

afterAll(() => fs.rm(dataDir, { recursive: true, force: true }));

describe('agent-vm CLI', () => {
  it('wakes, lists, sleeps and destroys an agent on the embedded database', () => {
    const a = agentId('cli');
    try {
      const wake = cli(['agents', 'wake', a, '--memory', '192']);
      expect(wake.stderr).toBe('');
      expect(wake.code).toBe(0);
      expect(wake.stdout).toMatch(new RegExp(`^${a}: created on runsc \\(runsc\\) in \\d+ ms`));
      const ls = cli(['agents', 'ls']);
      expect(ls.stdout).toMatch(new RegExp(`${a}\\trunning\\trunsc\\trunning\\t\\d+ ms`));
      const ex = cli(['agents', 'exec', a, '--', 'sh', '-c', 'id -u; exit 4']);
      expect(ex.stdout).toBe('1000\n');
      expect(ex.code).toBe(4);
      expect(cli(['agents', 'sleep', a]).stdout).toBe(`${a}: sleeping\n`);
      expect(cli(['agents', 'ls']).stdout).toMatch(new RegExp(`${a}\\tstopped\\trunsc\\tsleeping`));
    } finally {
      const d = cli(['agents', 'destroy', a]);
      expect(d.stdout).toContain(`${a}: destroyed (1 container, 1 volume`);
    }
  });

  it('refuses runc without the opt-in and names the setting', () => {
    const r = cli(['agents', 'ls'], { AGENTVM_RUNTIME: 'runc' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/AGENTVM_RUNTIME: runc .*AGENTVM_ALLOW_RUNC=1/);
    const w = cli(['agents', 'wake', agentId('runc'), '--runtime', 'runc']);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/^agent-vm: error: runtime runc .* refused; set AGENTVM_ALLOW_RUNC=1/);
  });

  it('names a bad setting and exits non-zero before touching anything', () => {
    const r = cli(['agents', 'ls'], { AGENTVM_RUNTIME: 'firecracker', AGENTVM_PORT: 'http' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('AGENTVM_RUNTIME');
    expect(r.stderr).toContain('AGENTVM_PORT');
    const bad = cli(['agents', 'wake', 'Not_Valid!']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid sandbox spec: agentId/);
  });

  it('runs migrations on demand', () => {
    const r = cli(['db', 'migrate']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('migrations applied (pglite)\n');
  });

  it('lists and answers a pending approval from another process (Postgres)', async () => {
    const tdb = await createTestDatabase();
    const store = await openStore({ databaseUrl: tdb.url, dataDir });
    try {
      await store.migrate();
      const seen: PendingApproval[] = [];
      const unit = createApprovalBroker({ store: approvalStore(store.db), timeoutMs: 60_000, pollMs: 50, onRequest: (r) => seen.push(r) });
      const decided = unit.request({ profile: 'helper', sessionKey: 's', tool: 'gh.create_issue', argsHash: 'h' });
      while (seen.length === 0) await new Promise((r) => setTimeout(r, 10));
      const id = seen[0]!.id;
      const env = { DATABASE_URL: tdb.url };
      const ls = cli(['approvals', 'ls'], env);
      expect(ls.code).toBe(0);
      expect(ls.stdout).toMatch(new RegExp(`^${id}\\thelper\\tgh\\.create_issue\\t\\d+ s\\t\\(operator only\\)$`, 'm'));
      const yes = cli(['approvals', 'approve', id], env);
      expect(yes).toMatchObject({ code: 0, stdout: `${id}: approved\n` });
      expect(await decided).toEqual({ decision: 'approved', by: 'local:api' });
      const again = cli(['approvals', 'deny', id], env);
      expect(again.code).not.toBe(0);
      expect(again.stderr).toMatch(/no pending approval .* see agent-vm approvals ls/);
      expect(cli(['approvals', 'ls'], env).stdout).toBe('no pending approvals\n');
    } finally {
      await store.close();
      await tdb.drop();
    }
  });
});
