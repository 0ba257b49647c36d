/**
 * `agent-vm agents snapshots|restore|destroy` as an operator runs them (the compiled CLI on the
 * embedded database, the local snapshot store under AGENTVM_DATA_DIR): every generation listed
 * with its verified state, dry runs that change nothing, and audited changes with --apply.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { agentId, tempDir } from './helpers/env.js';

const BIN = fileURLToPath(new URL('../bin/agent-vm.js', import.meta.url));
const dataDir = tempDir('cli-snap');

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, AGENTVM_DATA_DIR: dataDir, AGENTVM_RUNTIME: 'runsc' },
    timeout: 90_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

afterAll(() => fs.rm(dataDir, { recursive: true, force: true }));

describe('agent-vm agents snapshots / restore', () => {
  it('lists verified generations, restores one (dry run first), deletes them, and destroy keeps a final one', async () => {
    const a = agentId('clisnap');
    const write = (v: string) => expect(cli(['agents', 'exec', a, '--', 'sh', '-c', `echo ${v} > /workspace/s`]).code).toBe(0);
    const read = () => cli(['agents', 'exec', a, '--', 'cat', '/workspace/s']).stdout;
    try {
      expect(cli(['agents', 'wake', a]).code).toBe(0);
      expect(cli(['agents', 'snapshots', a]).stdout).toBe(`${a}: no snapshots in ${path.join(dataDir, 'snapshots')}\n`);
      write('v1');
      expect(cli(['agents', 'snapshot', a]).stdout).toMatch(new RegExp(`^${a}: snapshot generation 1 .*0000000001\\.tar \\(\\d+ bytes, 1 files, sha256 [0-9a-f]{12}\\)\\n$`));
      write('v2');
      expect(cli(['agents', 'snapshot', a]).code).toBe(0);
      // A flipped byte in generation 2, as a failing disk would leave it.
      const g2 = path.join(dataDir, 'snapshots', a, '0000000002.tar');
      const bytes = await fs.readFile(g2);
      bytes[600] = bytes[600]! ^ 0xff;
      await fs.writeFile(g2, bytes);

      const ls = cli(['agents', 'snapshots', a]);
      const lines = ls.stdout.trim().split('\n');
      expect(lines[0]).toBe('GEN\tCREATED\tSIZE\tFILES\tSHA256\tWHY\tSESSIONS\tCHECK');
      expect(lines[1]).toMatch(/^2\t\S+\t\d+ B\t1\t[0-9a-f]{12}\toperator\t0\tchecksum mismatch/);
      expect(lines[2]).toMatch(/^1\t\S+\t\d+ B\t1\t[0-9a-f]{12}\toperator\t0\tok$/);
      expect(lines[3]).toBe(`1 of 2 good; the newest 5 are kept in ${path.join(dataDir, 'snapshots')}`);
      expect(JSON.parse(cli(['agents', 'snapshots', a, '--json']).stdout).generations.map((g: { status: string }) => g.status.split(':')[0])).toEqual(['checksum mismatch', 'ok']);

      const dry = cli(['agents', 'restore', a]);
      expect(dry.code).toBe(0);
      expect(dry.stdout).toMatch(/^would skip generation 2: checksum mismatch/);
      expect(dry.stdout).toContain(`would stop ${a}'s sandbox (running)`);
      expect(dry.stdout).toMatch(/would replace .* with generation 1 \(.*, 1 files, sha256 [0-9a-f]{12}, verified\)/);
      expect(read()).toBe('v2\n'); // nothing changed

      const bad = cli(['agents', 'restore', a, '--generation', '2', '--apply']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(new RegExp(`^agent-vm: error: agent ${a}: cannot restore: none of its 1 snapshot generation .*generation 2: checksum mismatch`));
      expect(read()).toBe('v2\n');

      const applied = cli(['agents', 'restore', a, '--apply']);
      expect(applied.stderr).toBe('');
      expect(applied.stdout).toMatch(/skipped generation 2: checksum mismatch/);
      expect(applied.stdout).toMatch(/saved the replaced workspace as generation 3 /);
      expect(applied.stdout).toContain(`${a}: workspace restored from generation 1`);
      expect(cli(['agents', 'wake', a]).code).toBe(0);
      expect(read()).toBe('v1\n');
      const audit = cli(['audit', 'tail', '-n', '20']).stdout;
      expect(audit).toMatch(new RegExp(`snapshot\\.restore\\terror\\t.*${a}`));
      expect(audit).toMatch(new RegExp(`snapshot\\.restore\\tok\\t.*${a}`));

      const del = cli(['agents', 'snapshots', a, '--delete', '--generation', '2']);
      expect(del.stdout).toContain(`would delete snapshot generation 2 of ${a}`);
      expect(cli(['agents', 'snapshots', a, '--delete', '--generation', '2', '--apply']).stdout).toBe(`${a}: deleted 1 snapshot generation(s) from ${path.join(dataDir, 'snapshots')}\n`);
      expect(cli(['agents', 'snapshots', a]).stdout).toMatch(/2 of 2 good/);
    } finally {
      const d = cli(['agents', 'destroy', a]);
      expect(d.stdout).toMatch(new RegExp(`^${a}: destroyed \\(1 container, 1 volume, 0 network\\); final snapshot generation 4 kept in `));
    }
    expect(cli(['agents', 'snapshots', a]).stdout).toMatch(/3 of 3 good/);
    expect(cli(['agents', 'snapshots', a, '--delete', '--apply']).stdout).toBe(`${a}: deleted 3 snapshot generation(s) from ${path.join(dataDir, 'snapshots')}\n`);
    expect(cli(['agents', 'destroy', a, '--no-snapshot']).stdout).toBe(`${a}: destroyed (0 container, 0 volume, 0 network); no final snapshot\n`);
  }, 240_000);
});
