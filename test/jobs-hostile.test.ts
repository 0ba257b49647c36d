/**
 * Tier-2 jobs against the real Docker engine under runsc: hostile jobs are contained, torn down
 * (nothing labelled for them left on the engine) and reported; and the built-in MCP tool
 * `agentvm__run_job` is listed and runs a job through the proxy like any tool.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/governance/audit.js';
import { createMcpProxy } from '../src/governance/mcp-proxy.js';
import { validateProfile, type Profile } from '../src/governance/profile.js';
import { createSecretResolver } from '../src/governance/secrets.js';
import { createJobRunner, jobSandboxId, type JobResult, type JobRunner } from '../src/jobs/index.js';
import { createLogger } from '../src/log.js';
import { conversationPaths } from '../src/sandbox/layout.js';
import type { SandboxDriver } from '../src/sandbox/types.js';
import { openStore, type Store } from '../src/store/index.js';
import { mcpClient } from './fakes/mcp-upstream.js';
import { TEST_IMAGE } from './helpers/env.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { makeDriver, sh } from './helpers/sandbox.js';

const run = promisify(execFile);
const logger = createLogger('silent');
let tdb: TestDatabase;
let store: Store;
let driver: SandboxDriver;
let runner: JobRunner;
let profile: Profile;
const jobIds: string[] = [];

beforeAll(async () => {
  tdb = await createTestDatabase();
  store = await openStore({ databaseUrl: tdb.url, dataDir: os.tmpdir() });
  await store.migrate();
  driver = makeDriver();
  const id = `jh-${randomBytes(3).toString('hex')}`;
  const v = validateProfile({
    version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L1', runtime: 'runsc', image: TEST_IMAGE,
    bindings: [{ platform: 'local', channels: ['*'] }],
    jobs: { enabled: true, limits: { cpus: 1, memoryMiB: 128, pids: 128 }, maxConcurrent: 2 },
  }, `${id}.yaml`);
  if (!v.profile) throw new Error(JSON.stringify(v.issues));
  profile = v.profile;
  runner = createJobRunner({
    jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger,
    config: { image: TEST_IMAGE, runtime: 'runsc', outbox: { maxFileBytes: 1024 * 1024, maxTotalBytes: 8 * 1024 * 1024, maxFiles: 50 } },
    profiles: () => new Map([[profile.id, profile]]),
  });
  // The caller: the profile's own (idle) sandbox, where inputs come from and results go.
  await driver.ensure({ agentId: profile.id, image: TEST_IMAGE, runtime: 'runsc', limits: { cpus: 1, memoryMiB: 256, pids: 128 } });
}, 120_000);

afterAll(async () => {
  await runner?.close();
  await driver?.destroy(profile.id).catch(() => undefined);
  await driver?.close();
  await store?.close();
  await tdb?.drop();
});

async function job(args: Record<string, unknown>, conversation?: string): Promise<JobResult> {
  const r = await runner.run({ profile: profile.id, requestedBy: 'cli:test', ...(conversation ? { conversation } : {}), args });
  jobIds.push(r.id);
  return r;
}

/** Nothing labelled for the job's sandbox is left on the engine: containers, volumes, networks. */
async function leftovers(id: string): Promise<string> {
  const label = `label=agent-vm.agent=${jobSandboxId(id)}`;
  const outs = await Promise.all([
    run('docker', ['ps', '-aq', '--filter', label]),
    run('docker', ['volume', 'ls', '-q', '--filter', label]),
    run('docker', ['network', 'ls', '-q', '--filter', label]),
  ]);
  return outs.map((o) => o.stdout.trim()).join('');
}

async function contained(r: JobResult): Promise<void> {
  expect(r.teardown.verified).toBe(true);
  expect(await leftovers(r.id)).toBe('');
  expect(await store.jobs.get(r.id)).toMatchObject({ teardown: 'verified' });
}

describe('hostile jobs under runsc', () => {
  it('runs in a fresh sandbox on runsc, without network, secrets or the caller\'s files, and copies results back', async () => {
    const conv = 'local:x:hostile';
    const dir = conversationPaths(conv).dir;
    await driver.writeFiles(profile.id, `${dir}/inbox`, [{ name: 'in.txt', data: Buffer.from('input data\n') }]);
    await sh(driver, profile.id, `echo private > /workspace/${dir}/secret-notes.txt; ln -s /etc/passwd /workspace/${dir}/inbox/link`);
    const r = await job({
      command: ['sh', '-c', 'mkdir -p out; cat inbox/in.txt > out/copy.txt; id -u >> out/copy.txt; env | sort > out/env.txt; ls /workspace/job/inbox > out/list.txt 2>&1 || find /workspace/job > out/list.txt; test -e ../conversations && echo SEES-CALLER; true'],
      inputs: ['inbox'], outputs: ['out'],
    }, conv);
    expect(r).toMatchObject({ status: 'succeeded', exitCode: 0, runtime: 'runsc' });
    expect(r.stdout).not.toContain('SEES-CALLER');
    expect(r.inputsRefused).toEqual([expect.objectContaining({ path: 'inbox/link', reason: 'symlink' })]);
    const back = await sh(driver, profile.id, `cat /workspace/jobs/${r.id}/out/copy.txt; cat /workspace/jobs/${r.id}/out/env.txt`);
    expect(back.stdout).toMatch(/^input data\n1000\n/);
    expect(back.stdout).not.toMatch(/SECRET|TOKEN|KEY=/);
    await contained(r);
  });

  it('a fork bomb is stopped by the pids limit and reported', async () => {
    const r = await job({ command: ['sh', '-c', 'f() { f | f & }; f; sleep 30'], timeoutSeconds: 20 });
    expect(['failed', 'timed_out']).toContain(r.status);
    expect(r.status === 'failed' ? r.error : 'timed out').toMatch(/limit|timed out|exit|killed/);
    await contained(r);
  });

  it('a job that fills memory is OOM-killed and reported', async () => {
    const r = await job({ command: ['node', '-e', 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));'], timeoutSeconds: 30 });
    expect(r.status).toBe('failed');
    expect(`${r.error} ${r.exitCode}`).toMatch(/memory|137/);
    await contained(r);
  });

  it('has no network: direct connections and DNS fail', async () => {
    const probe = `
      const net = require('node:net'); const dns = require('node:dns');
      const tryConnect = (host, port) => new Promise((res) => { const s = net.connect({ host, port, timeout: 3000 }); s.on('connect', () => { s.destroy(); res('OPEN ' + host); }); s.on('error', (e) => res('blocked ' + e.code)); s.on('timeout', () => { s.destroy(); res('blocked timeout'); }); });
      (async () => {
        console.log(await tryConnect('1.1.1.1', 443));
        console.log(await tryConnect('172.17.0.1', 2375));
        console.log(await new Promise((res) => dns.lookup('example.com', (e) => res(e ? 'blocked ' + e.code : 'RESOLVED'))));
      })();`;
    const r = await job({ command: ['node', '-e', probe], timeoutSeconds: 30 });
    expect(r.status).toBe('succeeded');
    expect(r.stdout.trim().split('\n')).toHaveLength(3);
    expect(r.stdout).not.toMatch(/OPEN|RESOLVED/);
    await contained(r);
  });

  it('cannot write outside its directory: the root is read-only and the caller\'s workspace is not there', async () => {
    const r = await job({ command: ['sh', '-c', 'for f in /etc/evil /evil /workspace/../evil /opt/evil; do echo x > $f 2>/dev/null && echo WROTE $f; done; echo done'], timeoutSeconds: 20 });
    expect(r.stdout).toBe('done\n');
    const caller = await sh(driver, profile.id, 'find /workspace -name evil');
    expect(caller.stdout).toBe('');
    await contained(r);
  });

  it('symlinks, hard links and fifos planted in its results are refused; regular files come back', async () => {
    const r = await job({ command: ['sh', '-c', 'mkdir -p out/d && echo ok > out/ok.txt && ln -s /etc/passwd out/passwd && ln -s /workspace out/d/ws && ln out/ok.txt out/hard && mkfifo out/pipe'], outputs: ['out'], timeoutSeconds: 20 });
    expect(r.status).toBe('succeeded');
    // ok.txt and hard are one inode: whichever the engine archives first is the file, the other a link.
    const [kept] = r.written;
    const other = kept?.endsWith('/out/ok.txt') ? 'out/hard' : 'out/ok.txt';
    expect(r.written).toHaveLength(1);
    expect([`/workspace/jobs/${r.id}/out/ok.txt`, `/workspace/jobs/${r.id}/out/hard`]).toContain(kept);
    // The fifo never reaches us: the engine leaves pipes out of its archives.
    expect(r.refused.map((x) => `${x.path}:${x.reason}`).sort()).toEqual(['out/d/ws:symlink', `${other}:hardlink`, 'out/passwd:symlink'].sort());
    const listing = await sh(driver, profile.id, `find /workspace/jobs/${r.id} -type l -o -type p`);
    expect(listing.stdout).toBe('');
    await contained(r);
  });

  it('runs past its timeout, with a process that left its group: killed, reported, torn down', async () => {
    const r = await job({ command: ['sh', '-c', 'setsid sh -c "sleep 1000" & echo begun; sleep 1000'], timeoutSeconds: 2 });
    expect(r).toMatchObject({ status: 'timed_out', timedOut: true });
    expect(r.stdout).toContain('begun');
    await contained(r);
  });

  it('every job left an audit trail: who asked, the command hash, exit, bytes, verified teardown', async () => {
    const rows = (await store.audit.tail(200)).filter((a) => a.profile === profile.id && a.action === 'job.finish');
    expect(rows.length).toBeGreaterThanOrEqual(jobIds.length);
    for (const r of rows) expect(r.data).toMatchObject({ requestedBy: 'cli:test', commandHash: expect.stringMatching(/^[0-9a-f]{64}$/), bytesIn: expect.any(Number), bytesOut: expect.any(Number), teardownVerified: true });
  });
});

describe('the built-in tool through the MCP proxy', () => {
  it('lists agentvm__run_job for a profile with jobs and runs a job for the calling conversation', async () => {
    const proxy = await createMcpProxy({ listen: { host: '127.0.0.1', port: 0 }, pins: store.pins, audit: createAuditLog(store.audit), secrets: createSecretResolver({ env: {} }), logger, upstreamTimeoutMs: 1000, jobs: runner });
    try {
      await proxy.register(profile);
      const ep = proxy.sessionEndpoint({ profile: profile.id, sessionKey: 'local:x:mcp', turnId: 'ev-mcp' });
      const client = await mcpClient(ep);
      const tools = await client.listTools();
      expect(tools.tools.map((t) => t.name)).toEqual(['agentvm__run_job']);
      const res = (await client.callTool({ name: 'agentvm__run_job', arguments: { command: ['sh', '-c', 'mkdir out; echo via-mcp | tee out/r.txt'], outputs: ['out'], timeoutSeconds: 30 } })) as { content: Array<{ text: string }>; isError?: boolean };
      const body = JSON.parse(res.content[0]!.text) as { job: string; status: string; stdout: string; results: { files: string[] }; teardownVerified: boolean };
      expect(body).toMatchObject({ status: 'succeeded', stdout: 'via-mcp\n', teardownVerified: true, results: { files: [`/workspace/jobs/${body.job}/out/r.txt`] } });
      expect(await store.jobs.get(body.job)).toMatchObject({ requestedBy: 'agent:local:x:mcp', turnId: 'ev-mcp' });
      await client.close();
      ep.release();
      await proxy.flush();
      const calls = (await store.audit.tail(100)).filter((a) => a.profile === profile.id && a.action === 'tool.call' && a.subject === 'agentvm.run_job');
      expect(calls.map((c) => c.decision)).toEqual(['allow']);
    } finally {
      await proxy.close();
    }
  });
});
