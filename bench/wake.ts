/**
 * Wake latency: `driver.ensure` on a stopped agent until a command inside answers, against
 * the baseline of a bare dockerode `container.start` + the same command on an identically
 * configured container. Both run in this one process, on the same runtime, interleaved, so
 * machine noise hits both alike. Prints JSON.
 *
 *   npm run bench:wake -- [--iterations 30] [--runtime runsc]
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { createDockerDriver } from '../src/sandbox/docker/index.js';
import type { RuntimeSetting, SandboxSpec } from '../src/sandbox/types.js';
import { startConditions } from './conditions.js';
import { summary } from './stats.js';

const { values } = parseArgs({
  options: { iterations: { type: 'string', default: '30' }, runtime: { type: 'string', default: 'runsc' } },
});
const iterations = Number(values.iterations);
const config = loadConfig({ ...process.env, AGENTVM_RUNTIME: values.runtime, AGENTVM_LOG_LEVEL: 'silent' });
const docker = new Docker({ socketPath: 'socketPath' in config.docker ? config.docker.socketPath : '/var/run/docker.sock' });
const driver = createDockerDriver({
  docker: config.docker, runtime: config.runtime, allowRunc: config.allowRunc, outbox: config.outbox,
  snapshotDir: path.join(os.tmpdir(), 'agentvm-bench-snap'), logger: createLogger('silent'), stopTimeoutSeconds: 1,
});
const COMMAND = ['true'];
const tag = randomBytes(3).toString('hex');
const agentId = `bench-wake-${tag}`;
const spec: SandboxSpec = { agentId, image: config.image, runtime: values.runtime as RuntimeSetting, limits: { cpus: 1, memoryMiB: 256, pids: 128 } };

async function bareExec(container: Docker.Container): Promise<void> {
  // The same exec options the driver uses, minus its in-sandbox `timeout` wrapper.
  const exec = await container.exec({
    Cmd: COMMAND, AttachStdin: false, AttachStdout: true, AttachStderr: true, Tty: false, User: '1000:1000', WorkingDir: '/workspace', Env: [],
  });
  const stream = await exec.start({ hijack: true, stdin: false, Tty: false });
  await new Promise<void>((resolve) => {
    stream.on('end', resolve);
    stream.on('close', resolve);
    stream.resume();
  });
  const info = await exec.inspect();
  if (info.ExitCode !== 0) throw new Error(`baseline command exited ${info.ExitCode}`);
}

async function main(): Promise<void> {
  const conditions = startConditions({ backend: { database: 'none (driver only)' }, runtime: values.runtime });
  const first = await driver.ensure(spec);
  // The baseline container is a twin of the agent's: same image, runtime, hardening and limits.
  const twin = await docker.getContainer(first.containerId).inspect();
  const baseline = await docker.createContainer({
    name: `agentvm-bench-baseline-${tag}`,
    Image: twin.Image,
    Cmd: twin.Config.Cmd,
    User: twin.Config.User,
    WorkingDir: twin.Config.WorkingDir,
    NetworkDisabled: (twin.Config as { NetworkDisabled?: boolean }).NetworkDisabled,
    HostConfig: { ...twin.HostConfig, Mounts: [], Binds: [] },
    Labels: { 'agent-vm.bench': tag },
  });
  const ours: number[] = [];
  const bare: number[] = [];
  const phases = { ours_wake: [] as number[], ours_command: [] as number[], bare_start: [] as number[], bare_command: [] as number[] };
  try {
    await driver.sleep(agentId);
    for (let i = 0; i < iterations + 2; i++) {
      // Alternate which goes first so neither always runs on a warmer machine.
      const order = i % 2 === 0 ? ['ours', 'bare'] : ['bare', 'ours'];
      for (const which of order) {
        if (which === 'ours') {
          const t0 = performance.now();
          await driver.ensure(spec);
          const tw = performance.now();
          const r = await driver.exec(agentId, COMMAND, { timeoutMs: 10_000 });
          if (r.exitCode !== 0) throw new Error(`agent command exited ${r.exitCode}`);
          const dt = performance.now() - t0;
          if (i >= 2) {
            // two warm-up rounds are not counted
            ours.push(dt);
            phases.ours_wake.push(tw - t0);
            phases.ours_command.push(dt - (tw - t0));
          }
          await driver.sleep(agentId);
        } else {
          const t0 = performance.now();
          await baseline.start();
          const ts = performance.now();
          await bareExec(baseline);
          const dt = performance.now() - t0;
          if (i >= 2) {
            bare.push(dt);
            phases.bare_start.push(ts - t0);
            phases.bare_command.push(dt - (ts - t0));
          }
          await baseline.stop({ t: 1 });
        }
      }
    }
  } finally {
    await baseline.remove({ force: true }).catch(() => undefined);
    await driver.destroy(agentId).catch(() => undefined);
  }
  const o = summary(ours);
  const b = summary(bare);
  const result = {
    bench: 'wake',
    runtime: first.runtime,
    iterations,
    command: COMMAND.join(' '),
    ensure_plus_command_ms: o,
    baseline_start_plus_command_ms: b,
    ratio_p50: Math.round((o.p50 / b.p50) * 1000) / 1000,
    ratio_p95: Math.round((o.p95 / b.p95) * 1000) / 1000,
    target_ratio: 1.1,
    pass: o.p50 / b.p50 <= 1.1 && o.p95 / b.p95 <= 1.1,
    phases_p50_ms: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, summary(v).p50])),
    conditions: conditions.end(),
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench/wake failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
