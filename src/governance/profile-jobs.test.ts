import { describe, expect, it } from 'vitest';
import { compilePolicy, policyFromProfile } from './policy.js';
import { validateProfile } from './profile.js';
import { RUN_JOB_TOOL, cronProblem } from './profile-jobs.js';

function manifest(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    id: 'ops',
    name: 'Ops',
    agent: { command: ['node', 'agent.mjs'] },
    risk: 'L2',
    bindings: [
      { platform: 'local', channels: ['*'] },
      { platform: 'slack', team: 'T01', channels: ['C01'] },
      { platform: 'clickup', team: '9', space: '77', trigger: '@ops' },
    ],
    egress: { allow: ['api.github.com:443', 'pypi.org:443'] },
    ...extra,
  };
}

const issues = (m: Record<string, unknown>) => validateProfile(m, 'ops.yaml').issues.map((i) => `${i.path}: ${i.message}`);

describe('jobs in a manifest', () => {
  it('defaults to off, with safe defaults when on', () => {
    const off = validateProfile(manifest(), 'ops.yaml');
    expect(off.profile?.jobs.enabled).toBe(false);
    const on = validateProfile(manifest({ jobs: { enabled: true } }), 'ops.yaml').profile!;
    expect(on.jobs).toMatchObject({ enabled: true, maxConcurrent: 2, timeoutSeconds: 60, maxTimeoutSeconds: 600, egress: { allow: [] }, limits: { cpus: 1, memoryMiB: 512, pids: 256 } });
  });

  it("refuses job egress beyond the profile's own list", () => {
    expect(issues(manifest({ jobs: { enabled: true, egress: { allow: ['pypi.org:443', 'evil.example:443'] } } }))).toEqual([
      "jobs.egress.allow[1]: evil.example:443 is not in the profile's egress.allow; a job may reach only a subset of what its agent may",
    ]);
  });

  it('caps job limits by the risk tier, and keeps pids where a runsc sandbox can start', () => {
    expect(issues(manifest({ jobs: { enabled: true, limits: { memoryMiB: 8192 } } }))).toEqual(['jobs.limits.memoryMiB: memoryMiB 8192 is more than risk L2 allows (at most 4096)']);
    expect(issues(manifest({ jobs: { enabled: true, limits: { pids: 64 } } }))).toEqual(["jobs.limits.pids: must be at least 128: the sandbox runtime's own threads count against it"]);
  });

  it('reserves the built-in server name and lets tool rules name its tool', () => {
    const bad = manifest({ tools: { servers: [{ name: 'agentvm', url: 'https://x.example/mcp' }] } });
    expect(issues(bad)).toContain('tools.servers[0].name: "agentvm" is the gateway\'s built-in tool server; pick another name');
    expect(issues(manifest({ jobs: { enabled: true }, tools: { approval: [RUN_JOB_TOOL] } }))).toEqual([]);
    // Without jobs the tool names an undeclared server.
    expect(issues(manifest({ tools: { approval: [RUN_JOB_TOOL] } }))[0]).toMatch(/names server "agentvm", which is not declared/);
  });

  it('puts agentvm.run_job in the tool policy only when jobs are enabled, and deny still wins', () => {
    const on = validateProfile(manifest({ jobs: { enabled: true } }), 'ops.yaml').profile!;
    expect([...compilePolicy(policyFromProfile(on)).tools.keys()]).toEqual(['agentvm__run_job']);
    const off = validateProfile(manifest(), 'ops.yaml').profile!;
    expect([...compilePolicy(policyFromProfile(off)).tools.keys()]).toEqual([]);
    const denied = validateProfile(manifest({ jobs: { enabled: true }, tools: { deny: [RUN_JOB_TOOL] } }), 'ops.yaml').profile!;
    expect([...compilePolicy(policyFromProfile(denied)).tools.keys()]).toEqual([]);
    const l4 = validateProfile(manifest({ risk: 'L4', runtime: 'kata', jobs: { enabled: true } }), 'ops.yaml').profile!;
    expect(compilePolicy(policyFromProfile(l4)).lookup('agentvm__run_job')?.needsApproval).toBe(true);
  });
});

describe('schedules in a manifest', () => {
  const schedule = (post: Record<string, unknown>, extra: Record<string, unknown> = {}) => manifest({ schedules: [{ name: 'daily', cron: '0 9 * * 1-5', timezone: 'Europe/Paris', prompt: 'standup', post, ...extra }] });

  it('accepts a post a binding covers, with defaults', () => {
    const p = validateProfile(schedule({ platform: 'slack', team: 'T01', channel: 'C01' }), 'ops.yaml').profile!;
    expect(p.schedules[0]).toMatchObject({ overlap: 'skip', catchUp: 'none', timezone: 'Europe/Paris' });
    expect(issues(schedule({ platform: 'local', channel: 'reports' }))).toEqual([]);
    expect(issues(schedule({ platform: 'clickup', team: '9', space: '77', thread: 'abc1' }))).toEqual([]);
  });

  it('a schedule posting to a channel no binding allows is an invalid manifest', () => {
    expect(issues(schedule({ platform: 'slack', team: 'T01', channel: 'C99' }))).toEqual([
      'schedules[0].post: no binding of this profile covers slack T01/C99; a schedule posts only where its profile is bound',
    ]);
    expect(issues(schedule({ platform: 'discord', guild: '1', channel: '2' }))[0]).toMatch(/no binding of this profile covers discord/);
    expect(issues(schedule({ platform: 'clickup', team: '9', space: '78', thread: 't' }))[0]).toMatch(/no binding/);
  });

  it('names missing and foreign post fields', () => {
    expect(issues(schedule({ platform: 'slack', team: 'T01' }))).toEqual(['schedules[0].post.channel: required to post on slack']);
    expect(issues(schedule({ platform: 'local', channel: 'x', guild: '1' }))).toEqual(['schedules[0].post.guild: does not apply to local']);
    expect(issues(schedule({ platform: 'clickup', team: '9', space: '77' }))).toEqual(['schedules[0].post.thread: required to post on clickup']);
  });

  it('checks cron, time zone, names and modes', () => {
    expect(issues(schedule({ platform: 'local', channel: 'x' }, { cron: '61 * * * *' }))[0]).toMatch(/^schedules\[0\]\.cron: is not a valid cron pattern/);
    expect(issues(schedule({ platform: 'local', channel: 'x' }, { cron: '* * * *' }))[0]).toMatch(/must have 5 fields/);
    expect(issues(schedule({ platform: 'local', channel: 'x' }, { timezone: 'Mars/Olympus' }))).toEqual(['schedules[0].timezone: must be an IANA time zone, e.g. Europe/Paris']);
    expect(issues(schedule({ platform: 'local', channel: 'x' }, { overlap: 'pile' }))[0]).toMatch(/^schedules\[0\]\.overlap: must be one of allow, skip, queue/);
    const twice = manifest({ schedules: ['a', 'a'].map((name) => ({ name, cron: '* * * * *', prompt: 'p', post: { platform: 'local', channel: 'x' } })) });
    expect(issues(twice)).toEqual(['schedules[1].name: duplicate schedule name "a"']);
    expect(cronProblem('*/1 * * * * *', 'UTC')).toBeUndefined();
  });
});
