/**
 * Lifecycle tiers, measured on the real engine. Prints one JSON object: the run's conditions and
 * one entry per section, each with a baseline measured in the same run.
 *
 *   snapshot  A workspace of --files files totalling --mb MB. For each store (local directory;
 *             S3 through s3rver in this process): driver.snapshot (baseline: the engine's own
 *             archive of /workspace drained to /dev/null), and a wake whose volume is gone
 *             (verify + restore + start; baseline: a first wake with nothing to restore).
 *   pause     driver.pause, driver.ensure on the paused sandbox (unpause), and that plus a
 *             command answering (baseline: raw dockerode pause/unpause of the same container),
 *             each transition a little apart, as a paused agent is before a message wakes it.
 *   memory    The reference agent awake and idle, then paused: the engine's memory stats and the
 *             RSS of the sandbox's host processes (from its memory cgroup), against a bare
 *             `sleep` sandbox under the same runtime.
 *
 * Sections are plain async functions in SECTIONS: a new tier (per-tier wake latencies) is one
 * more entry using the same helpers.
 *
 *   npm run bench:lifecycle -- [--sections snapshot,pause,memory] [--files 10000] [--mb 100] [--iterations 3] [--runtime runsc]
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { createDockerDriver } from '../src/sandbox/docker/index.js';
import { SETTLE_MS } from '../src/sandbox/docker/pause.js';
import { createLocalSnapshotStore } from '../src/sandbox/snapshots/local.js';
import { createS3SnapshotStore } from '../src/sandbox/snapshots/s3.js';
import type { SnapshotStore } from '../src/sandbox/snapshots/types.js';
import type { RuntimeSetting, SandboxDriver, SandboxSpec } from '../src/sandbox/types.js';
import { startFakeS3 } from '../test/fakes/s3.js';
import { summary } from './stats.js';

const { values } = parseArgs({
  options: {
    sections: { type: 'string', default: 'snapshot,pause,memory' },
    files: { type: 'string', default: '10000' },
    mb: { type: 'string', default: '100' },
    iterations: { type: 'string', default: '3' },
    runtime: { type: 'string', default: 'runsc' },
  },
});
const iterations = Number(values.iterations);
const config = loadConfig({ ...process.env, AGENTVM_RUNTIME: values.runtime, AGENTVM_LOG_LEVEL: 'silent' });
const docker = new Docker({ socketPath: 'socketPath' in config.docker ? config.docker.socketPath : '/var/run/docker.sock' });
const tag = randomBytes(3).toString('hex');
const cleanups: Array<() => Promise<unknown>> = [];

// ---- helpers a section may use ----------------------------------------------------------------

function makeDriver(snapshots: SnapshotStore): SandboxDriver {
  const d = createDockerDriver({ docker: config.docker, runtime: config.runtime, allowRunc: config.allowRunc, outbox: config.outbox, snapshots, logger: createLogger('silent'), stopTimeoutSeconds: 1 });
  return d;
}

function spec(label: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { agentId: `bench-${label}-${tag}`, image: config.image, runtime: values.runtime as RuntimeSetting, limits: { cpus: 1, memoryMiB: 512, pids: 256 }, ...extra };
}

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [performance.now() - t0, r];
}

async function tempStore(): Promise<SnapshotStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-bench-snap-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return createLocalSnapshotStore({ dir, keep: 2 });
}

async function loseWorkspace(agentId: string): Promise<void> {
  await docker.getContainer(`agentvm-${agentId}`).remove({ force: true });
  await docker.getVolume(`agentvm-${agentId}-workspace`).remove();
}

/** Fills /workspace with `files` random files in 100 folders, `bytes` in all, through the engine. */
async function fillWorkspace(driver: SandboxDriver, agentId: string, files: number, bytes: number): Promise<void> {
  const per = Math.floor(bytes / files);
  const dirs = 100;
  for (let d = 0; d < dirs; d++) {
    const batch = Array.from({ length: Math.ceil(files / dirs) }, (_, i) => ({ name: `f${i}.bin`, data: randomBytes(per) }));
    await driver.writeFiles(agentId, `data/d${d}`, batch);
  }
}

/** The engine's memory stats and the host RSS of the sandbox's processes (memory cgroup v1 or v2). */
async function memoryOf(containerId: string): Promise<Record<string, number | null>> {
  const s = (await docker.getContainer(containerId).stats({ stream: false })) as { memory_stats: { usage?: number; stats?: Record<string, number> } };
  const st = s.memory_stats.stats ?? {};
  const mib = (n: number | undefined) => (n === undefined ? null : Math.round((n / 1048576) * 10) / 10);
  let hostRss: number | undefined;
  for (const file of [`/sys/fs/cgroup/memory/docker/${containerId}/cgroup.procs`, `/sys/fs/cgroup/system.slice/docker-${containerId}.scope/cgroup.procs`]) {
    const procs = await fs.readFile(file, 'utf8').catch(() => undefined);
    if (procs === undefined) continue;
    hostRss = 0;
    for (const pid of procs.split('\n').filter(Boolean)) {
      const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      hostRss += Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    }
    break;
  }
  return {
    engine_usage_mib: mib(s.memory_stats.usage),
    engine_rss_mib: mib(st.total_rss ?? st.rss ?? st.anon),
    engine_cache_mib: mib(st.total_cache ?? st.cache ?? st.file),
    host_processes_rss_mib: mib(hostRss),
  };
}

// ---- sections ---------------------------------------------------------------------------------

const SECTIONS: Record<string, () => Promise<unknown>> = {
  async snapshot() {
    const files = Number(values.files);
    const bytes = Number(values.mb) * 1_000_000;
    const s3 = await startFakeS3('agentvm-bench');
    cleanups.push(() => s3.close());
    const stores: Record<string, SnapshotStore> = {
      local: await tempStore(),
      s3: createS3SnapshotStore({ url: `s3://${s3.bucket}/bench-${tag}`, endpoint: s3.endpoint, credentials: s3.credentials, keep: 2 }),
    };
    const out: Record<string, unknown> = {};
    for (const [name, store] of Object.entries(stores)) {
      const driver = makeDriver(store);
      const sp = spec(`snap-${name}`);
      cleanups.push(() => driver.destroy(sp.agentId, { finalSnapshot: false }).then(() => store.remove(sp.agentId)));
      await driver.ensure(sp);
      await fillWorkspace(driver, sp.agentId, files, bytes);
      const snap: number[] = [];
      const engineArchive: number[] = [];
      const restoreWake: number[] = [];
      const firstWake: number[] = [];
      let size = 0;
      for (let i = 0; i < iterations; i++) {
        const [dt, s] = await timed(() => driver.snapshot(sp.agentId, { reason: 'bench' }));
        snap.push(dt);
        size = s.bytes;
        const [bt] = await timed(async () => {
          const a = (await docker.getContainer(`agentvm-${sp.agentId}`).getArchive({ path: '/workspace' })) as NodeJS.ReadableStream;
          await pipeline(a, createWriteStream('/dev/null'));
        });
        engineArchive.push(bt);
        await driver.sleep(sp.agentId);
        await loseWorkspace(sp.agentId);
        const [rt, h] = await timed(() => driver.ensure(sp));
        if (!h.restored) throw new Error('the workspace was not restored');
        restoreWake.push(rt);
        const fresh = spec(`first-${name}-${i}`);
        const [ft] = await timed(() => driver.ensure(fresh));
        firstWake.push(ft);
        await driver.destroy(fresh.agentId, { finalSnapshot: false });
      }
      const check = await driver.exec(sp.agentId, ['sh', '-c', 'find /workspace/data -type f | wc -l'], { timeoutMs: 60_000 });
      out[name] = {
        store: store.location.replace(/^\/tmp\/[^/]+/, '<tmp>'),
        archive_bytes: size,
        files_after_restore: Number(check.stdout.trim()),
        snapshot_ms: summary(snap),
        baseline_engine_archive_to_devnull_ms: summary(engineArchive),
        wake_with_restore_ms: summary(restoreWake),
        baseline_first_wake_ms: summary(firstWake),
      };
      await store.close();
    }
    return { files, bytes, ...out };
  },

  async pause() {
    const driver = makeDriver(await tempStore());
    const sp = spec('pause', { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'], stdin: true });
    cleanups.push(() => driver.destroy(sp.agentId, { finalSnapshot: false }));
    const h = await driver.ensure(sp);
    const raw = docker.getContainer(h.containerId);
    const ours = { pause: [] as number[], unpause_to_command: [] as number[], unpause: [] as number[] };
    const bare = { pause: [] as number[], unpause: [] as number[] };
    for (let i = 0; i < iterations * 5 + 2; i++) {
      const count = i >= 2;
      // A paused agent stays paused for a while before a message wakes it: past the driver's
      // settle time (pause.ts), which a back-to-back unpause would otherwise include.
      const rest = () => new Promise((r) => setTimeout(r, SETTLE_MS + 50));
      await rest();
      const [p] = await timed(() => driver.pause(sp.agentId));
      await rest();
      const [u, hh] = await timed(() => driver.ensure(sp));
      if (hh.action !== 'unpaused') throw new Error(`ensure on a paused sandbox did ${hh.action}`);
      await rest();
      await driver.pause(sp.agentId);
      await rest();
      const [uc] = await timed(async () => {
        await driver.ensure(sp);
        await driver.exec(sp.agentId, ['true'], { timeoutMs: 10_000 });
      });
      await rest();
      const [bp] = await timed(() => raw.pause());
      await rest();
      const [bu] = await timed(() => raw.unpause());
      if (!count) continue;
      ours.pause.push(p);
      ours.unpause.push(u);
      ours.unpause_to_command.push(uc);
      bare.pause.push(bp);
      bare.unpause.push(bu);
    }
    return {
      runtime: h.runtime,
      driver_pause_ms: summary(ours.pause),
      driver_ensure_unpause_ms: summary(ours.unpause),
      driver_ensure_unpause_then_command_ms: summary(ours.unpause_to_command),
      baseline_dockerode_pause_ms: summary(bare.pause),
      baseline_dockerode_unpause_ms: summary(bare.unpause),
    };
  },

  async memory() {
    const driver = makeDriver(await tempStore());
    const agent = spec('mem-ref', { command: ['node', '/opt/agent-vm/agents/reference/agent.mjs'], stdin: true });
    const idle = spec('mem-idle');
    cleanups.push(() => driver.destroy(agent.agentId, { finalSnapshot: false }), () => driver.destroy(idle.agentId, { finalSnapshot: false }));
    const h = await driver.ensure(agent);
    const b = await driver.ensure(idle);
    const settle = () => new Promise((r) => setTimeout(r, 3000));
    await settle();
    const awake = await memoryOf(h.containerId);
    const baseline = await memoryOf(b.containerId);
    await driver.pause(agent.agentId);
    await settle();
    const paused = await memoryOf(h.containerId);
    await driver.ensure(agent);
    return { reference_agent_awake_idle: awake, reference_agent_paused: paused, baseline_sleep_sandbox_awake: baseline, memory_limit_mib: agent.limits.memoryMiB };
  },
};

async function main(): Promise<void> {
  const chosen = values.sections.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = chosen.filter((s) => !(s in SECTIONS));
  if (unknown.length > 0) throw new Error(`unknown section(s) ${unknown.join(', ')}; known: ${Object.keys(SECTIONS).join(', ')}`);
  const results: Record<string, unknown> = {};
  const started = Date.now();
  try {
    for (const s of chosen) results[s] = await SECTIONS[s]!();
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }
  const info = await docker.info();
  const result = {
    bench: 'lifecycle',
    conditions: {
      runtime: values.runtime, iterations, engine: `Docker ${info.ServerVersion}`, storage_driver: info.Driver, cgroup: info.CgroupVersion ?? null,
      host: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, mem_gib: Math.round(os.totalmem() / 2 ** 30), load_avg_1m: os.loadavg()[0], node: process.version },
      seconds: Math.round((Date.now() - started) / 1000),
    },
    ...results,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench/lifecycle failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
