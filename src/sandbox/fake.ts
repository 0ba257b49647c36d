/**
 * A fake SandboxDriver for tests: no engine, no isolation at all. Each "sandbox" is a directory
 * on this machine (its workspace "volume") and, when the spec names a command, a child process
 * of this one (its main process, with stdio for ACP). It passes the same contract suite as the
 * Docker driver (test/contracts/sandbox-driver.ts), so turn and unit logic — timeouts, hang-ups,
 * shutdown, outbox, recovery — can be tested in milliseconds without Docker.
 *
 * How it stands in for a sandbox:
 *   - `/workspace` is `<root>/<agent>/workspace`: paths under /workspace in commands and in the
 *     env are rewritten to it, and the agent gets AGENT_WORKSPACE (the reference agent maps its
 *     session cwd with it);
 *   - `programs` maps sandbox paths to host paths (e.g. the image's reference agent to the local
 *     bundle); `node` and `sh` are the host's;
 *   - the outbox is read through the same tar validation as the engine's archive (hard links,
 *     symlinks, sizes, names), so refusals match.
 *
 * Snapshots are real generations in a real SnapshotStore (default: a local store under the root),
 * restored with the same verification as the Docker driver; `pause` stops the main process
 * (SIGSTOP) and `ensure` continues it (SIGCONT).
 *
 * Deliberately left out: every isolation property (users, capabilities, read-only root, network,
 * limits). Those are the Docker driver's and are proven against it only. `close()` ends every
 * child process (a real sandbox outlives the gateway; a fake one must not outlive the test).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { AgentVmError } from '../errors.js';
import { inboxFileNames } from './inbox.js';
import { relativeName, WORKSPACE, workspaceDir } from './layout.js';
import { readOutboxTar } from './outbox.js';
import { assertAgentId, hashOf, validateSpec } from './spec.js';
import type {
  DestroyReport, ExecResult, OutboxEntry, OutboxLimits, RestoredFrom, RuntimeName, SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus, SandboxStdio,
  SnapshotInfo, SnapshotMeta,
} from './types.js';
import { extractInto, packDirectory } from './snapshots/fs-archive.js';
import { createLocalSnapshotStore } from './snapshots/local.js';
import type { SnapshotManifest, SnapshotStore } from './snapshots/types.js';
import { chooseGeneration, type Choice } from './snapshots/verify.js';

export interface FakeDriverOptions {
  /** Where workspaces and snapshots live. Default: a new temp directory. */
  root?: string;
  outbox: OutboxLimits;
  /** Where generations go. Default: a local store in `<root>/.snapshots`. */
  snapshots?: SnapshotStore;
  /** Sandbox path → host command words, e.g. `{'/opt/agent-vm/agents/reference/agent.mjs': ['/abs/agent.mjs']}`. */
  programs?: Record<string, string[]>;
  /** PATH for the processes it runs (the host's `node`, `sh`). Default: this node's directory and the usual ones. */
  path?: string;
}

export interface FakeDriver extends SandboxDriver {
  readonly root: string;
  readonly snapshots: SnapshotStore;
  /** Removes the workspace "volume" behind the driver's back (for restore tests). */
  loseWorkspace(agentId: string): Promise<void>;
  /** Ends the main process as if it crashed with `exitCode`. */
  crash(agentId: string, exitCode?: number): Promise<void>;
}

interface Box {
  id: string;
  spec: SandboxSpec;
  specHash: string;
  state: 'running' | 'paused' | 'stopped';
  exitCode: number | undefined;
  proc?: ChildProcessWithoutNullStreams;
  exited?: Promise<void>;
  /** Where the current attach reads from. */
  out?: PassThrough;
  err?: PassThrough;
  ended?: () => void;
}

export function createFakeDriver(o: FakeDriverOptions): FakeDriver {
  const root = o.root ?? path.join(os.tmpdir(), `agentvm-fake-${randomBytes(4).toString('hex')}`);
  const boxes = new Map<string, Box>();
  const locks = new Map<string, Promise<unknown>>();
  const ws = (agentId: string) => path.join(root, agentId, 'workspace');
  const store = o.snapshots ?? createLocalSnapshotStore({ dir: path.join(root, '.snapshots') });

  function withLock<T>(agentId: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(agentId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    locks.set(agentId, next.catch(() => undefined));
    return next;
  }

  const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

  /** Rewrites sandbox paths to host paths in one word. */
  function hostWord(agentId: string, w: string): string {
    const mapped = o.programs?.[w];
    if (mapped && mapped.length === 1) return mapped[0]!;
    if (w === WORKSPACE || w.startsWith(`${WORKSPACE}/`)) return ws(agentId) + w.slice(WORKSPACE.length);
    return w.split(`${WORKSPACE}/`).join(`${ws(agentId)}/`);
  }

  function hostCommand(agentId: string, command: string[]): string[] {
    return command.flatMap((w) => o.programs?.[w] ?? [hostWord(agentId, w)]);
  }

  function envOf(agentId: string, spec: SandboxSpec, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { PATH: o.path ?? `${path.dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: ws(agentId), AGENT_WORKSPACE: ws(agentId) };
    for (const [k, v] of Object.entries({ ...spec.env, ...extra })) env[k] = hostWord(agentId, v);
    return env;
  }

  function missing(agentId: string): AgentVmError {
    return new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox; wake it first`, { status: 404 });
  }

  function runningBox(agentId: string, pausedOk = false): Box {
    const b = boxes.get(agentId);
    if (!b) throw missing(agentId);
    if (b.state !== 'running' && !(pausedOk && b.state === 'paused')) throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox is not running; wake it first`, { status: 409 });
    return b;
  }

  function start(agentId: string, b: Box): void {
    b.state = 'running';
    b.exitCode = undefined;
    if (!b.spec.command) return; // the idle main process: nothing to run
    const [cmd, ...args] = hostCommand(agentId, b.spec.command);
    const proc = spawn(cmd!, args, { cwd: ws(agentId), env: envOf(agentId, b.spec), stdio: ['pipe', 'pipe', 'pipe'] });
    b.proc = proc;
    b.exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        if (b.proc === proc) {
          b.proc = undefined;
          b.state = 'stopped';
          b.exitCode = code ?? (signal ? 128 + (os.constants.signals[signal] ?? 9) : 1);
          b.ended?.();
        }
        resolve();
      });
      proc.once('error', () => resolve());
    });
    proc.stdin.on('error', () => undefined);
    proc.stdout.on('data', (d: Buffer) => b.out?.write(d));
    proc.stderr.on('data', (d: Buffer) => b.err?.write(d));
  }

  async function stop(b: Box): Promise<void> {
    const proc = b.proc;
    const paused = b.state === 'paused';
    b.state = 'stopped';
    if (!proc) return;
    proc.kill('SIGTERM');
    if (paused) proc.kill('SIGCONT'); // a stopped process takes SIGTERM only once continued
    const killer = setTimeout(() => proc.kill('SIGKILL'), 2000);
    await b.exited;
    clearTimeout(killer);
  }

  function handle(b: Box, action: SandboxHandle['action'], restoredFrom?: RestoredFrom): SandboxHandle {
    const runtime: RuntimeName = b.spec.runtime && b.spec.runtime !== 'auto' ? b.spec.runtime : 'runsc';
    return {
      agentId: b.spec.agentId, containerId: b.id, runtime, engineRuntime: 'fake', specHash: b.specHash, image: b.spec.image, action,
      restored: restoredFrom !== undefined, ...(restoredFrom ? { restoredFrom } : {}),
      ...(b.spec.network?.mode === 'internal' ? { hostAddress: hostAddressOf(b.spec.agentId) } : {}),
    };
  }

  function statusOf(agentId: string): SandboxStatus {
    const b = boxes.get(agentId);
    if (!b) return { agentId, containerId: '', state: 'missing', runtime: undefined, specHash: undefined, image: undefined, exitCode: undefined, oomKilled: false };
    return { agentId, containerId: b.id, state: b.state, runtime: handle(b, 'none').runtime, specHash: b.specHash, image: b.spec.image, exitCode: b.state === 'running' ? undefined : b.exitCode, oomKilled: false };
  }

  /** A loopback address of the agent's own (127/8 is all loopback), so endpoints of different agents never share a port. */
  const hostAddressOf = (agentId: string) => {
    const h = createHash('sha256').update(agentId).digest();
    return `127.${h[0]! % 254 + 1}.${h[1]!}.${(h[2]! % 253) + 2}`;
  };

  const info = (m: SnapshotManifest): SnapshotInfo => ({
    agentId: m.agentId, path: store.describe(m.agentId, m.generation), bytes: m.bytes, generation: m.generation, sha256: m.sha256, files: m.files, createdAt: m.createdAt,
  });

  async function take(agentId: string, meta?: SnapshotMeta): Promise<SnapshotInfo> {
    const { archive, counts } = packDirectory(ws(agentId));
    return info(await store.put(agentId, archive, counts, meta));
  }

  /** A new workspace from a verified generation; none is left behind if extraction fails. */
  async function fill(agentId: string, choice: Choice): Promise<RestoredFrom> {
    const v = choice.verified!;
    try {
      await extractInto(ws(agentId), v.open());
    } catch (err) {
      await fs.rm(ws(agentId), { recursive: true, force: true });
      throw new AgentVmError('restore_failed', `agent ${agentId}: restoring snapshot generation ${v.manifest.generation} failed: ${(err as Error).message}; no workspace was left behind`, { status: 500, retryable: true, cause: err });
    } finally {
      await v.dispose();
    }
    const m = v.manifest;
    return { generation: m.generation, sha256: m.sha256, createdAt: m.createdAt, skipped: choice.skipped, ...(m.sessions ? { sessions: m.sessions } : {}), ...(m.release ? { release: m.release } : {}) };
  }

  const driver: FakeDriver = {
    root,
    snapshots: store,
    async prepareNetwork(agentId) {
      assertAgentId(agentId);
      return hostAddressOf(agentId);
    },
    ensure(spec) {
      const valid = validateSpec(spec);
      const agentId = valid.agentId;
      return withLock(agentId, async () => {
        const specHash = hashOf({ ...valid, fake: true });
        let b = boxes.get(agentId);
        let action: SandboxHandle['action'] = 'created';
        if (b && b.specHash === specHash) {
          if (b.state === 'running') return handle(b, 'none');
          if (b.state === 'paused') {
            b.proc?.kill('SIGCONT');
            b.state = 'running';
            return handle(b, 'unpaused');
          }
          start(agentId, b);
          return handle(b, 'started');
        }
        if (b) {
          await stop(b);
          action = 'recreated';
        }
        let restoredFrom: RestoredFrom | undefined;
        if (!(await exists(ws(agentId)))) {
          // As the Docker driver: newest good generation, an empty first workspace, or a refusal.
          const choice = await chooseGeneration(store, agentId, { purpose: 'restore its workspace (the volume is gone)' });
          if (choice.verified) restoredFrom = await fill(agentId, choice);
          else await fs.mkdir(ws(agentId), { recursive: true });
        }
        b = { id: createHash('sha256').update(`${agentId}:${randomBytes(8).toString('hex')}`).digest('hex'), spec: valid, specHash, state: 'stopped', exitCode: undefined };
        boxes.set(agentId, b);
        start(agentId, b);
        return handle(b, action, restoredFrom);
      });
    },

    sleep(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        const b = boxes.get(agentId);
        if (b && b.state !== 'stopped') await stop(b);
      });
    },

    destroy(agentId, options) {
      assertAgentId(agentId);
      return withLock(agentId, async (): Promise<DestroyReport> => {
        const removed = { containers: 0, volumes: 0, networks: 0 };
        const b = boxes.get(agentId);
        let finalSnapshot: SnapshotInfo | null = null;
        if (b && options?.finalSnapshot !== false && (await exists(ws(agentId)))) {
          finalSnapshot = await take(agentId, { reason: 'destroy' }).catch((err: unknown) => {
            throw new AgentVmError('snapshot_failed', `agent ${agentId} was not destroyed: its final snapshot failed (${(err as Error).message}); fix the snapshot store, or destroy without one`, { status: 502, retryable: true, cause: err });
          });
        }
        if (b) {
          await stop(b);
          boxes.delete(agentId);
          removed.containers = 1;
        }
        if (await exists(ws(agentId))) removed.volumes = 1;
        await fs.rm(path.join(root, agentId), { recursive: true, force: true });
        return { agentId, removed, finalSnapshot };
      });
    },

    async exec(agentId, command, opts): Promise<ExecResult> {
      assertAgentId(agentId);
      if (command.length === 0) throw new AgentVmError('exec_invalid', 'exec needs a command', { status: 400 });
      const b = runningBox(agentId);
      const [cmd, ...args] = hostCommand(agentId, command);
      const max = opts.maxOutputBytes ?? 1024 * 1024;
      const started = performance.now();
      return new Promise<ExecResult>((resolve) => {
        // Its own process group, so a timeout kills everything it started (as `timeout -s KILL` does).
        const child = spawn(cmd!, args, { cwd: ws(agentId), env: envOf(agentId, b.spec, opts.env), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let sizes = [0, 0];
        let truncated = false;
        let timedOut = false;
        const take = (i: number, bucket: Buffer[]) => (d: Buffer) => {
          const room = max - sizes[i]!;
          if (room <= 0) return void (truncated = true);
          const part = d.length <= room ? d : d.subarray(0, room);
          if (part.length < d.length) truncated = true;
          bucket.push(part);
          sizes = i === 0 ? [sizes[0]! + part.length, sizes[1]!] : [sizes[0]!, sizes[1]! + part.length];
        };
        child.stdout.on('data', take(0, out));
        child.stderr.on('data', take(1, err));
        const timer = setTimeout(() => {
          timedOut = true;
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
        }, opts.timeoutMs);
        const finish = (code: number | null) => {
          clearTimeout(timer);
          resolve({
            exitCode: timedOut ? 137 : code, // as the engine reports a command killed at its deadline
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(err).toString('utf8'),
            timedOut,
            truncated,
            durationMs: performance.now() - started,
          });
        };
        child.once('error', (e) => {
          err.push(Buffer.from(e.message));
          finish(127);
        });
        child.once('close', (code) => finish(code));
      });
    },

    async attach(agentId): Promise<SandboxStdio> {
      assertAgentId(agentId);
      const b = runningBox(agentId, true);
      if (!b.spec.stdin || !b.proc) {
        throw new AgentVmError('sandbox_no_stdio', `agent ${agentId}'s sandbox was not created with stdin open; wake it with stdin: true`, { status: 409 });
      }
      const proc = b.proc;
      b.ended?.(); // one attach at a time: a new one replaces the old
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let done = false;
      let resolveClosed!: () => void;
      const closed = new Promise<void>((r) => (resolveClosed = r));
      const end = () => {
        if (done) return;
        done = true;
        if (b.out === stdout) b.out = undefined;
        if (b.err === stderr) b.err = undefined;
        stdout.end();
        stderr.end();
        resolveClosed();
      };
      b.out = stdout;
      b.err = stderr;
      b.ended = end;
      // Writes reach the process; ending this stream never closes the process's stdin.
      const stdin = new Writable({
        write(chunk: Buffer, _enc, cb) {
          if (done || proc.stdin.destroyed) return cb();
          proc.stdin.write(chunk, () => cb());
        },
      });
      return { stdin, stdout, stderr, closed, close: end };
    },

    async *readOutbox(agentId, dir, limits): AsyncGenerator<OutboxEntry> {
      assertAgentId(agentId);
      const rel = workspaceDir(dir);
      if (!boxes.has(agentId)) throw missing(agentId);
      const top = rel.split('/').pop()!;
      const parent = path.join(ws(agentId), path.dirname(rel));
      if (!(await exists(path.join(parent, top)))) return;
      yield* readOutboxTar(packDirectory(parent, top).archive, top, { ...o.outbox, ...limits });
    },

    async removeFiles(agentId, dir, names) {
      assertAgentId(agentId);
      const rel = workspaceDir(dir);
      runningBox(agentId);
      for (const n of names) await fs.rm(path.join(ws(agentId), rel, relativeName(n)), { recursive: true, force: true });
    },

    async writeFiles(agentId, dir, files) {
      assertAgentId(agentId);
      if (!boxes.has(agentId)) throw missing(agentId);
      const names = inboxFileNames(files);
      const target = path.join(ws(agentId), workspaceDir(dir));
      await fs.mkdir(target, { recursive: true });
      for (const [i, f] of files.entries()) await fs.writeFile(path.join(target, names[i]!), f.data);
      return names.map((n) => `${WORKSPACE}/${dir}/${n}`);
    },

    snapshot(agentId, meta) {
      assertAgentId(agentId);
      // As the Docker driver: the lock only for the lookup, not while the workspace streams out.
      return withLock(agentId, async () => boxes.has(agentId)).then((has) => {
        if (!has) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
        return take(agentId, meta);
      });
    },

    restore(agentId, ro = {}) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        const choice = await chooseGeneration(store, agentId, { purpose: 'restore', ...(ro.generation !== undefined ? { generation: ro.generation } : {}), ...(ro.before !== undefined ? { before: ro.before } : {}) });
        if (!choice.verified) throw new AgentVmError('snapshot_missing', `agent ${agentId} has no snapshots in ${store.location}`, { status: 404 });
        const b = boxes.get(agentId);
        const wasRunning = b?.state === 'running' || b?.state === 'paused';
        let savedAs: SnapshotInfo | undefined;
        try {
          if (b) await stop(b);
          if (ro.snapshotFirst !== false && (await exists(ws(agentId)))) savedAs = await take(agentId, { reason: 'pre-restore', ...ro.meta });
        } catch (err) {
          await choice.verified.dispose();
          throw err;
        }
        boxes.delete(agentId); // as the engine: the container goes with the volume it used
        await fs.rm(ws(agentId), { recursive: true, force: true });
        const from = await fill(agentId, choice);
        return { agentId, ...from, wasRunning, ...(savedAs ? { savedAs } : {}) };
      });
    },

    pause(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        const b = runningBox(agentId, true);
        if (b.state === 'paused') return;
        b.proc?.kill('SIGSTOP');
        b.state = 'paused';
      });
    },

    async status(agentId) {
      assertAgentId(agentId);
      return statusOf(agentId);
    },

    async list() {
      return [...boxes.keys()].sort().map(statusOf);
    },

    async loseWorkspace(agentId) {
      const b = boxes.get(agentId);
      if (b) await stop(b);
      boxes.delete(agentId);
      await fs.rm(ws(agentId), { recursive: true, force: true });
    },

    async crash(agentId, exitCode = 3) {
      const b = boxes.get(agentId);
      if (!b?.proc) return;
      const proc = b.proc;
      proc.kill('SIGKILL');
      await b.exited;
      b.exitCode = exitCode;
    },

    async close() {
      await Promise.allSettled([...locks.values()]);
      await Promise.allSettled([...boxes.values()].map(stop));
    },
  };
  return driver;
}
