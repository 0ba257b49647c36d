/**
 * `agent-vm jobs run|ls` and `agent-vm schedules ls` on the embedded database and the real engine
 * (the CLI from source, as `npm run build` would compile it).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeProfiles } from './helpers/gateway.js';
import { TEST_IMAGE, tempDir } from './helpers/env.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dataDir = tempDir('jobs-cli');
const profilesDir = tempDir('jobs-cli-profiles');
const id = `jcli-${Date.now().toString(36)}`;

function cli(args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', "const { main } = await import('./src/cli.ts'); process.exitCode = await main(process.argv.slice(1));", ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, AGENTVM_DATA_DIR: dataDir, AGENTVM_PROFILES_DIR: profilesDir, AGENTVM_RUNTIME: 'runsc', AGENTVM_IMAGE: TEST_IMAGE },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  await writeProfiles(profilesDir, [
    {
      version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L1', runtime: 'runsc',
      bindings: [{ platform: 'local', channels: ['*'] }],
      jobs: { enabled: true, limits: { cpus: 1, memoryMiB: 128, pids: 128 } },
      schedules: [{ name: 'weekly', cron: '30 8 * * 1', timezone: 'Europe/Paris', prompt: 'report', post: { platform: 'local', channel: 'reports' } }],
    },
  ]);
});

afterAll(async () => {
  cli(['agents', 'destroy', id]);
  await fs.rm(dataDir, { recursive: true, force: true });
  await fs.rm(profilesDir, { recursive: true, force: true });
});

describe('agent-vm jobs', () => {
  it("runs a job, exits with its exit code, and puts its results in the agent's workspace", () => {
    expect(cli(['agents', 'wake', id]).code).toBe(0);
    const r = cli(['jobs', 'run', id, '--out', 'out.txt', '--timeout', '30', '--', 'sh', '-c', 'echo result > out.txt; echo printed; exit 3']);
    expect(r.stdout).toBe('printed\n');
    expect(r.code).toBe(3);
    const job = /^job ([0-9a-f]{16}): failed \(exit 3\) on runsc/m.exec(r.stderr)?.[1];
    expect(job, r.stderr).toBeDefined();
    expect(r.stderr).toContain(`result: /workspace/jobs/${job}/out.txt`);
    expect(r.stderr).toContain('teardown: verified');
    const cat = cli(['agents', 'exec', id, '--', 'cat', `/workspace/jobs/${job}/out.txt`]);
    expect(cat.stdout).toBe('result\n');
    const ls = cli(['jobs', 'ls', '--profile', id]);
    expect(ls.stdout).toMatch(new RegExp(`^${job}\\t${id}\\tfailed\\t3\\tcli:[^\\t]+\\t0/7\\tverified\\t`, 'm'));
  });

  it('refuses a bad request with a usage error, and a profile without jobs', () => {
    const bad = cli(['jobs', 'run', id, '--in', '../etc', '--', 'true']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^agent-vm: error: input "..\/etc" must be a relative path/);
    expect(cli(['jobs', 'run', 'nope', '--', 'true']).stderr).toMatch(/no valid profile "nope"/);
  });
});

describe('agent-vm schedules ls', () => {
  it('shows each schedule with its next run', () => {
    const r = cli(['schedules', 'ls']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${id}\\tweekly\\t30 8 \\* \\* 1\\tEurope/Paris\\tlocal reports\\t\\d{4}-\\d\\d-\\d\\dT0[67]:30:00.000Z\\t-\\t-\\t-$`, 'm'));
  });
});
