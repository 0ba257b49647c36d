/**
 * The job runner's logic with the fake sandbox driver and embedded PGlite: requests, files in and
 * out, concurrency, cancellation, teardown and its sweeper. Isolation itself (runtimes, limits,
 * network) is the Docker driver's and is proven in test/jobs-hostile.test.ts.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../../src/governance/audit.js';
import { validateProfile, type Profile } from '../../src/governance/profile.js';
import { createJobRunner, jobSandboxId, type JobRunner } from '../../src/jobs/index.js';
import { createLogger } from '../../src/log.js';
import { conversationPaths } from '../../src/sandbox/layout.js';
import { openStore, type Store } from '../../src/store/index.js';
import { seedFromTemplate } from '../helpers/pglite-template.js';
import { makeFakeDriver } from '../helpers/fake.js';
import { tempDir } from '../helpers/env.js';
import type { FakeDriver } from '../../src/sandbox/fake.js';

const logger = createLogger('silent');
let store: Store;
let driver: FakeDriver;
const runners: JobRunner[] = [];

beforeAll(async () => {
  const dataDir = tempDir('jobs-unit');
  seedFromTemplate(dataDir);
  store = await openStore({ dataDir });
  await store.migrate();
  driver = makeFakeDriver();
});
afterAll(async () => {
  await driver.close();
  await store.close();
});
afterEach(async () => {
  for (const r of runners.splice(0)) await r.close();
});

let n = 0;
function profile(jobs: Record<string, unknown> = {}): Profile {
  const id = `jp${++n}-${process.pid}`;
  const r = validateProfile({ version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L1', bindings: [{ platform: 'local', channels: ['*'] }], jobs: { enabled: true, ...jobs } }, `${id}.yaml`);
  if (!r.profile) throw new Error(JSON.stringify(r.issues));
  return r.profile;
}

async function setup(p: Profile, o: { teardownBackoffMs?: number[] } = {}) {
  const audit = createAuditLog(store.audit);
  const runner = createJobRunner({
    jobs: store.jobs, driver, audit, logger,
    config: { image: 'fake', runtime: 'runsc', outbox: { maxFileBytes: 1024 * 1024, maxTotalBytes: 4 * 1024 * 1024, maxFiles: 20 } },
    profiles: () => new Map([[p.id, p]]),
    cancelPollMs: 50,
    teardownBackoffMs: o.teardownBackoffMs ?? [10, 10],
  });
  runners.push(runner);
  // The caller's own sandbox: results come back into it.
  await driver.ensure({ agentId: p.id, image: 'fake', limits: { cpus: 1, memoryMiB: 256, pids: 64 } });
  return { runner, audit, ws: path.join(driver.root, p.id, 'workspace') };
}

describe('a job', () => {
  it('gets copies of its inputs, runs, and its results come back under /workspace/jobs/<id>/; torn down and audited', async () => {
    const p = profile();
    const { runner, ws } = await setup(p);
    const conv = 'local:x:c1';
    const dir = path.join(ws, conversationPaths(conv).dir);
    await fs.mkdir(path.join(dir, 'inbox', 'src'), { recursive: true });
    await fs.writeFile(path.join(dir, 'inbox', 'data.csv'), 'a,b\n1,2\n');
    await fs.writeFile(path.join(dir, 'inbox', 'src', 'tool.sh'), 'echo converted > out/report.txt; mkdir -p out/sub; echo deep > out/sub/x.txt');
    const r = await runner.run({
      profile: p.id, requestedBy: `agent:${conv}`, conversation: conv,
      args: { command: ['sh', '-c', 'mkdir -p out && sh inbox/src/tool.sh && cat inbox/data.csv && echo oops >&2'], inputs: ['inbox/data.csv', 'inbox/src'], outputs: ['out'] },
    });
    expect(r).toMatchObject({ status: 'succeeded', exitCode: 0, stdout: 'a,b\n1,2\n', stderr: 'oops\n', teardown: { verified: true } });
    expect(r.written.sort()).toEqual([`/workspace/jobs/${r.id}/out/report.txt`, `/workspace/jobs/${r.id}/out/sub/x.txt`]);
    expect(await fs.readFile(path.join(ws, 'jobs', r.id, 'out', 'report.txt'), 'utf8')).toBe('converted\n');
    expect(r.bytesIn).toBeGreaterThan(0);
    expect(r.bytesOut).toBe('converted\n'.length + 'deep\n'.length);
    expect((await driver.status(jobSandboxId(r.id))).state).toBe('missing');
    // The caller's files were copies: the job could not change them.
    const row = await store.jobs.get(r.id);
    expect(row).toMatchObject({ status: 'succeeded', teardown: 'verified', requestedBy: `agent:${conv}` });
    const rows = (await store.audit.tail(50)).filter((a) => a.subject === r.id);
    expect(rows.map((a) => `${a.action}:${a.decision}`)).toEqual(['job.request:allow', 'job.teardown:ok', 'job.finish:ok']);
    expect(JSON.stringify(rows)).not.toContain('inbox/src/tool.sh'); // the command is stored as a hash only
    expect(rows[2]!.data).toMatchObject({ commandHash: row!.commandHash, exitCode: 0, teardownVerified: true });
  });

  it('reports a failing command, refuses symlinks and unsafe results, and copies only regular files', async () => {
    const p = profile();
    const { runner, ws } = await setup(p);
    const r = await runner.run({
      profile: p.id, requestedBy: 'cli:test',
      args: { command: ['sh', '-c', 'mkdir -p out && ln -s /etc/passwd out/link && printf ok > out/fine.txt && exit 3'], outputs: ['out', 'missing.txt'] },
    });
    expect(r).toMatchObject({ status: 'failed', exitCode: 3, teardown: { verified: true } });
    expect(r.written).toEqual([`/workspace/jobs/${r.id}/out/fine.txt`]);
    expect(r.refused.map((x) => [x.path, x.reason])).toEqual([['out/link', 'symlink'], ['missing.txt', 'missing']]);
    await expect(fs.lstat(path.join(ws, 'jobs', r.id, 'out', 'link'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses bad requests before anything runs', async () => {
    const p = profile({ maxTimeoutSeconds: 30, timeoutSeconds: 10 });
    const { runner } = await setup(p);
    const run = (args: Record<string, unknown>) => runner.run({ profile: p.id, requestedBy: 'cli:test', args });
    await expect(run({ command: [] })).rejects.toThrow(/command must name a program/);
    await expect(run({ command: ['true'], inputs: ['../etc/passwd'] })).rejects.toThrow(/without "\." or "\.\."/);
    await expect(run({ command: ['true'], inputs: ['/etc/passwd'] })).rejects.toThrow(/outside \/workspace/);
    await expect(run({ command: ['true'], outputs: ['a/../../b'] })).rejects.toThrow(/plain names/);
    await expect(run({ command: ['true'], timeoutSeconds: 31 })).rejects.toThrow(/jobs.maxTimeoutSeconds: 30/);
    await expect(run({ command: ['true'], env: { A: '1' } })).rejects.toThrow(/unknown argument/);
    await expect(run({ command: ['true'], inputs: ['nope/x.txt'] }).then((r) => r.error)).resolves.toMatch(/input nope\/x.txt does not exist/);
    const off = { ...p, jobs: { ...p.jobs, enabled: false } };
    const r2 = createJobRunner({ jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger, config: { image: 'fake', runtime: 'runsc', outbox: { maxFileBytes: 1, maxTotalBytes: 1, maxFiles: 1 } }, profiles: () => new Map([[p.id, off]]) });
    runners.push(r2);
    await expect(r2.run({ profile: p.id, requestedBy: 'cli:test', args: { command: ['true'] } })).rejects.toThrow(/does not enable jobs/);
  });

  it('never runs on runc above L1: an L2 job with the gateway default runc is refused, no sandbox made', async () => {
    const id = `jp${++n}-${process.pid}-l2`;
    const v = validateProfile({ version: 1, id, name: id, agent: { command: ['node', 'a.mjs'] }, risk: 'L2', bindings: [{ platform: 'local', channels: ['*'] }], jobs: { enabled: true } }, `${id}.yaml`);
    if (!v.profile) throw new Error(JSON.stringify(v.issues));
    const p = v.profile;
    await driver.ensure({ agentId: p.id, image: 'fake', limits: { cpus: 1, memoryMiB: 256, pids: 64 } });
    const runner = createJobRunner({ jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger, config: { image: 'fake', runtime: 'runc', outbox: { maxFileBytes: 1024, maxTotalBytes: 1024, maxFiles: 1 } }, profiles: () => new Map([[p.id, p]]) });
    runners.push(runner);
    const before = (await driver.list()).length;
    const r = await runner.run({ profile: p.id, requestedBy: 'cli:test', args: { command: ['true'] } });
    expect(r.status).toBe('error');
    expect(r.error).toMatch(/runc/);
    expect((await driver.list()).length).toBe(before);
  });

  it('runs past its deadline: killed, reported timed out, torn down', async () => {
    const p = profile();
    const { runner } = await setup(p);
    const r = await runner.run({ profile: p.id, requestedBy: 'cli:test', args: { command: ['sh', '-c', 'echo started; sleep 30'], timeoutSeconds: 1 } });
    expect(r).toMatchObject({ status: 'timed_out', timedOut: true, stdout: 'started\n', teardown: { verified: true } });
    expect(r.error).toMatch(/killed at its 1-second deadline/);
  });

  it("is cancelled and torn down when its caller's signal aborts (the turn ended)", async () => {
    const p = profile();
    const { runner } = await setup(p);
    const ac = new AbortController();
    const pending = runner.run({ profile: p.id, requestedBy: 'cli:test', args: { command: ['sh', '-c', 'sleep 5'], timeoutSeconds: 60 } }, ac.signal);
    let row;
    do {
      await new Promise((res) => setTimeout(res, 50));
      [row] = await store.jobs.list({ profile: p.id, limit: 1 });
    } while (row?.status !== 'running');
    ac.abort();
    const r = await pending;
    expect(r).toMatchObject({ status: 'cancelled', teardown: { verified: true } });
    expect(r.error).toMatch(/caller stopped waiting/);
    expect((await driver.status(jobSandboxId(r.id))).state).toBe('missing');
  });

  it('runs at most jobs.maxConcurrent of a profile at once; the rest wait their turn', async () => {
    const p = profile({ maxConcurrent: 1 });
    const { runner } = await setup(p);
    const log = path.join(tempDir('jobs-order'));
    await fs.writeFile(log, '');
    const cmd = (tag: string) => ['sh', '-c', `echo start-${tag} >> ${log}; sleep 0.3; echo end-${tag} >> ${log}`];
    const rs = await Promise.all(['a', 'b', 'c'].map((t) => runner.run({ profile: p.id, requestedBy: 'cli:test', args: { command: cmd(t) } })));
    expect(rs.map((r) => r.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
    const lines = (await fs.readFile(log, 'utf8')).trim().split('\n');
    // Never two starts in a row: each job ended before the next began.
    for (let i = 0; i < lines.length; i += 2) expect([lines[i]!.slice(0, 5), lines[i + 1]!.slice(0, 3)]).toEqual(['start', 'end']);
  });

  it('a teardown that leaves something behind is retried, recorded failed and alarmed; the sweeper finishes it', async () => {
    const p = profile();
    const { runner } = await setup(p, { teardownBackoffMs: [5, 5] });
    const realDestroy = driver.destroy.bind(driver);
    let fail = true;
    driver.destroy = async (id: string) => {
      if (fail && id.startsWith('job_')) throw new Error('engine still lists container 0123456789ab');
      return realDestroy(id);
    };
    try {
      const r = await runner.run({ profile: p.id, requestedBy: 'cli:test', args: { command: ['true'] } });
      expect(r.status).toBe('succeeded');
      expect(r.teardown).toMatchObject({ verified: false, attempts: 3 });
      expect(await store.jobs.get(r.id)).toMatchObject({ teardown: 'failed', teardownAttempts: 3 });
      const alarm = (await store.audit.tail(20)).find((a) => a.subject === r.id && a.action === 'job.teardown');
      expect(alarm).toMatchObject({ decision: 'error', reason: expect.stringMatching(/still lists container/) });
      fail = false;
      // The sweep covers every unverified job in the store (an earlier test's may be among them); this one is verified.
      expect((await runner.sweep()).verified).toBeGreaterThanOrEqual(1);
      expect(await store.jobs.get(r.id)).toMatchObject({ teardown: 'verified' });
      expect((await driver.status(jobSandboxId(r.id))).state).toBe('missing');
    } finally {
      driver.destroy = realDestroy;
    }
  });

  it('answers the built-in tool with a JSON result, and refusals as tool errors', async () => {
    const p = profile();
    const { runner } = await setup(p);
    const ok = await runner.runForAgent(p, { profile: p.id, sessionKey: 'local:x:tool', turnId: 'ev1' }, { command: ['sh', '-c', 'echo hi'] }, new AbortController().signal);
    expect(ok.isError).toBeUndefined();
    expect(JSON.parse((ok.content[0] as { text: string }).text)).toMatchObject({ status: 'succeeded', exitCode: 0, stdout: 'hi\n', teardownVerified: true });
    const bad = await runner.runForAgent(p, { profile: p.id, sessionKey: 'local:x:tool', turnId: 'ev2' }, { command: 'rm -rf /' }, new AbortController().signal);
    expect(bad).toMatchObject({ isError: true, content: [{ text: expect.stringMatching(/^job refused: command must be a list of strings/) }] });
    const [row] = await store.jobs.list({ profile: p.id, limit: 1 });
    expect(row).toMatchObject({ requestedBy: 'agent:local:x:tool', turnId: 'ev1', conversation: 'local:x:tool' });
  });
});
