/**
 * Idle gateway memory: the RSS of `agent-vm up` (the compiled CLI, bin/agent-vm.js; run
 * `npm run build` first) with the example profile, no message sent, sampled once a second for
 * `--settle` seconds after /healthz answers. Floor in the same run: an idle bare `node` process.
 * A fresh data directory each run, so a first start (database created) is what is measured;
 * `--restart` measures a second start on the same directory as well. Prints JSON.
 *
 *   node --import tsx bench/idle-rss.ts [--settle 15] [--port 42100] [--database-url postgres://...] [--redis-url redis://...] [--restart]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startConditions } from './conditions.js';

const { values } = parseArgs({
  options: {
    settle: { type: 'string', default: '15' },
    port: { type: 'string', default: '42100' },
    'database-url': { type: 'string' },
    'redis-url': { type: 'string' },
    restart: { type: 'boolean', default: false },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TARGET_MB = 250;
const settle = Number(values.settle);
const port = Number(values.port);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rssMiB(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: Math.round(kb('VmRSS') / 1024), hwm: Math.round(kb('VmHWM') / 1024) };
}

async function sample(child: ChildProcess, ready: () => Promise<boolean>): Promise<{ startup_ms: number; rss_mib: number[]; peak_mib: number }> {
  const t0 = performance.now();
  let exited = false;
  child.once('exit', () => (exited = true));
  while (!(await ready())) {
    if (exited) throw new Error('the process exited before it was ready');
    if (performance.now() - t0 > 180_000) throw new Error('not ready in 180 s');
    await sleep(200);
  }
  const startup = performance.now() - t0;
  const rss: number[] = [];
  let hwm = 0;
  for (let i = 0; i < settle; i++) {
    await sleep(1000);
    const m = await rssMiB(child.pid!);
    rss.push(m.rss);
    hwm = m.hwm;
  }
  return { startup_ms: Math.round(startup), rss_mib: rss, peak_mib: hwm };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await done;
  clearTimeout(t);
}

async function gatewayRun(env: NodeJS.ProcessEnv): Promise<Awaited<ReturnType<typeof sample>>> {
  const child = spawn(process.execPath, [path.join(root, 'bin/agent-vm.js'), 'up'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  try {
    return await sample(child, async () => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      } catch {
        return false;
      }
    });
  } catch (err) {
    throw new Error(`${String(err)}; stderr: ${stderr}`);
  } finally {
    await stop(child);
  }
}

async function main(): Promise<void> {
  const compiled = path.join(root, 'dist/cli.js');
  const built = await stat(compiled).catch(() => undefined);
  if (!built) throw new Error('dist/cli.js is missing: run `npm run build` first');
  const backend = { database: values['database-url'] ? 'postgres' : 'pglite', queue: values['redis-url'] ? 'redis' : 'memory' };
  const conditions = startConditions({ backend });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'agentvm-bench-rss-'));
  try {
    const profiles = path.join(tmp, 'profiles');
    await mkdir(profiles);
    await copyFile(path.join(root, 'profiles/example.yaml'), path.join(profiles, 'example.yaml'));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      AGENTVM_DATA_DIR: path.join(tmp, 'data'),
      AGENTVM_PROFILES_DIR: profiles,
      AGENTVM_HOST: '127.0.0.1',
      AGENTVM_PORT: String(port),
      AGENTVM_LOG_LEVEL: 'warn',
    };
    delete env.DATABASE_URL;
    delete env.REDIS_URL;
    if (values['database-url']) env.DATABASE_URL = values['database-url'];
    if (values['redis-url']) env.REDIS_URL = values['redis-url'];

    const floorChild = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    let floor;
    try {
      floor = await sample(floorChild, async () => true);
    } finally {
      await stop(floorChild);
    }
    const first = await gatewayRun(env);
    const second = values.restart ? await gatewayRun(env) : undefined;
    const last = (xs: number[]) => xs.at(-1)!;
    const result = {
      bench: 'idle-rss',
      what: '`agent-vm up` (bin/agent-vm.js, compiled) with profiles/example.yaml, idle: VmRSS sampled each second after /healthz answers',
      settle_s: settle,
      floor_bare_node_mib: last(floor.rss_mib),
      first_start: { ...first, idle_rss_mib: last(first.rss_mib) },
      ...(second ? { restart: { ...second, idle_rss_mib: last(second.rss_mib) } } : {}),
      target: { idle_rss_mib: TARGET_MB, on: 'first_start.idle_rss_mib (and restart when measured)' },
      pass: last(first.rss_mib) <= TARGET_MB && (!second || last(second.rss_mib) <= TARGET_MB),
      dist_built_at: built.mtime.toISOString(),
      conditions: conditions.end(),
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/idle-rss failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
