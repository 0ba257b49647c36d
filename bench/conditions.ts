/**
 * The conditions a bench ran under, printed with its figures so runs on a quiet and a loaded
 * machine are never compared blindly: backend, load average at start and end, CPUs, memory,
 * runtime, Node version, commit. Call `startConditions()` before measuring and `.end()` after.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';

const r2 = (x: number) => Math.round(x * 100) / 100;

function commit(): string | undefined {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return undefined;
  }
}

export interface Conditions {
  backend: Record<string, string | undefined>;
  runtime?: string;
  cpus: number;
  cpu_model?: string;
  mem_gib: number;
  loadavg_start: number[];
  loadavg_end?: number[];
  node: string;
  platform: string;
  commit?: string;
  started_at: string;
  duration_s?: number;
}

export function startConditions(o: { backend: Record<string, string | undefined>; runtime?: string }): { value: Conditions; end(): Conditions } {
  const t0 = performance.now();
  const value: Conditions = {
    backend: o.backend,
    runtime: o.runtime,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    mem_gib: r2(os.totalmem() / 2 ** 30),
    loadavg_start: os.loadavg().map(r2),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    commit: commit(),
    started_at: new Date().toISOString(),
  };
  return {
    value,
    end() {
      value.loadavg_end = os.loadavg().map(r2);
      value.duration_s = Math.round((performance.now() - t0) / 100) / 10;
      return value;
    },
  };
}
