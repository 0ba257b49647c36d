/**
 * Tier-2 job overhead: how long from asking for a job (`JobRunner.run`) until its command is
 * running, against a bare `docker run` of the same command in the same image on the same runtime
 * with the same hardening; and how long the verified teardown takes. A/B interleaved (alternating
 * which goes first) in one process, so machine noise hits both alike. Prints JSON.
 *
 *   node --import tsx bench/jobs.ts [--iterations 20] [--warmup 2]
 *
 * "Command running" is the moment the command itself reads the clock (`date +%s%N` inside the
 * sandbox; gVisor's clock is the host's), compared with the host clock just before the request.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { createDriver } from '../src/context.js';
import { createAuditLog } from '../src/governance/audit.js';
import { validateProfile } from '../src/governance/profile.js';
import { createJobRunner } from '../src/jobs/index.js';
import { createLogger } from '../src/log.js';
import { openStore } from '../src/store/index.js';
import { summary } from './stats.js';

const run = promisify(execFile);
const { values } = parseArgs({ options: { iterations: { type: 'string', default: '20' }, warmup: { type: 'string', default: '2' } } });
const iterations = Number(values.iterations);
const warmup = Number(values.warmup);

const config = loadConfig({ ...process.env, AGENTVM_LOG_LEVEL: 'silent', AGENTVM_RUNTIME: process.env.AGENTVM_RUNTIME ?? 'runsc' });
const runtime = config.runtime === 'auto' ? 'runsc' : config.runtime;
const logger = createLogger('silent');
const dataDir = path.join(os.tmpdir(), `agentvm-bench-jobs-${randomBytes(4).toString('hex')}`);
const store = await openStore({ dataDir });
await store.migrate();
const driver = createDriver({ ...config, dataDir }, logger);
const id = `bench-jobs-${randomBytes(3).toString('hex')}`;
const limits = { cpus: 1, memoryMiB: 512, pids: 256 };
const v = validateProfile({ version: 1, id, name: id, agent: { command: ['true'] }, risk: 'L1', runtime, bindings: [{ platform: 'local', channels: ['*'] }], jobs: { enabled: true, limits } }, `${id}.yaml`);
if (!v.profile) throw new Error(JSON.stringify(v.issues));
const profile = v.profile;
const runner = createJobRunner({
  jobs: store.jobs, driver, audit: createAuditLog(store.audit), logger,
  config: { image: config.image, runtime: config.runtime, outbox: config.outbox },
  profiles: () => new Map([[id, profile]]),
});

const nowMs = () => performance.timeOrigin + performance.now();
const CMD = ['date', '+%s%N'];
const startedAt = (stdout: string) => Number(BigInt(stdout.trim()) / 1000n) / 1000;

async function job() {
  const t0 = nowMs();
  const r = await runner.run({ profile: id, requestedBy: 'cli:bench', args: { command: CMD } });
  const total = nowMs() - t0;
  if (r.status !== 'succeeded') throw new Error(`job ${r.id} ${r.status}: ${r.error ?? r.stderr}`);
  return { start: startedAt(r.stdout) - t0, total, teardown: r.teardown.durationMs };
}

async function bare() {
  const args = [
    'run', '--rm', '--runtime', runtime, '--network', 'none', '--read-only', '--tmpfs', '/tmp:rw,nosuid,nodev,size=64m',
    '--user', '1000:1000', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges:true', '--init',
    '--memory', `${limits.memoryMiB}m`, '--memory-swap', `${limits.memoryMiB}m`, '--cpus', String(limits.cpus), '--pids-limit', String(limits.pids),
    config.image, ...CMD,
  ];
  const t0 = nowMs();
  const { stdout } = await run('docker', args);
  return { start: startedAt(stdout) - t0, total: nowMs() - t0 };
}

const samples = { job: { start: [] as number[], total: [] as number[], teardown: [] as number[] }, bare: { start: [] as number[], total: [] as number[] } };
try {
  for (let i = 0; i < warmup; i++) {
    await job();
    await bare();
  }
  for (let i = 0; i < iterations; i++) {
    const order = i % 2 === 0 ? (['job', 'bare'] as const) : (['bare', 'job'] as const);
    for (const which of order) {
      if (which === 'job') {
        const r = await job();
        samples.job.start.push(r.start);
        samples.job.total.push(r.total);
        samples.job.teardown.push(r.teardown);
      } else {
        const r = await bare();
        samples.bare.start.push(r.start);
        samples.bare.total.push(r.total);
      }
    }
  }
  const dockerVersion = (await run('docker', ['version', '--format', '{{.Server.Version}}'])).stdout.trim();
  const added = samples.job.start.map((s, i) => s - samples.bare.start[i]!);
  console.log(JSON.stringify({
    bench: 'jobs',
    what: 'start: from just before JobRunner.run (job row, queue, one-shot sandbox create+start, job dir, exec) / just before spawning `docker run --rm` (same image, runtime, limits, hardening) until the command reads the clock inside the sandbox. total: until the result is back (job: after verified teardown; bare: after --rm). teardown: the job\'s verified teardown (destroy + engine check).',
    conditions: { iterations, warmup, runtime, image: config.image, docker: dockerVersion, host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), node: process.version }, store: 'pglite', queue: 'memory' },
    ms: {
      job_start: summary(samples.job.start),
      bare_docker_run_start: summary(samples.bare.start),
      added_start: summary(added),
      job_teardown_verified: summary(samples.job.teardown),
      job_total: summary(samples.job.total),
      bare_docker_run_total: summary(samples.bare.total),
    },
  }, null, 2));
} finally {
  await runner.close();
  await driver.close();
  await store.close();
}
