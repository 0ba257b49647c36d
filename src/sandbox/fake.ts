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
import tar from 'tar-stream';
import { AgentVmError } from '../errors.js';
import { inboxFileNames } from './inbox.js';
import { relativeName, WORKSPACE, workspaceDir } from './layout.js';
import { readOutboxTar } from './outbox.js';
import { assertAgentId, hashOf, validateSpec } from './spec.js';
import type {
  DestroyReport, ExecResult, OutboxEntry, OutboxLimits, RuntimeName, SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus, SandboxStdio,
} from './types.js';

export interface FakeDriverOptions {
  /** Where workspaces and snapshots live. Default: a new temp directory. */
  root?: string;
  outbox: OutboxLimits;
  /** Sandbox path → host command words, e.g. `{'/opt/agent-vm/agents/reference/agent.mjs': ['/abs/agent.mjs']}`. */
  programs?: Record<string, string[]>;
}

export interface FakeDriver extends SandboxDriver {
  readonly root: string;
  /** Removes the workspace "volume" behind the driver's back (for restore tests). */
  loseWorkspace(agentId: string): Promise<void>;
  /** Ends the main process as if it crashed with `exitCode`. */
  crash(agentId: string, exitCode?: number): Promise<void>;
}

interface Box {
  id: string;
  spec: SandboxSpec;
  specHash: string;
  state: 'running' | 'stopped';
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
  const snapDir = (agentId: string) => path.join(root, agentId, 'snapshot');

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
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: ws(agentId), AGENT_WORKSPACE: ws(agentId) };
    for (const [k, v] of Object.entries({ ...spec.env, ...extra })) env[k] = hostWord(agentId, v);
    return env;
  }

  function missing(agentId: string): AgentVmError {
    return new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox; wake it first`, { status: 404 });
  }

  function runningBox(agentId: string): Box {
    const b = boxes.get(agentId);
    if (!b) throw missing(agentId);
    if (b.state !== 'running') throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox is not running; wake it first`, { status: 409 });
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
    b.state = 'stopped';
    if (!proc) return;
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 2000);
    await b.exited;
    clearTimeout(killer);
  }

  function handle(b: Box, action: SandboxHandle['action'], restored = false): SandboxHandle {
    const runtime: RuntimeName = b.spec.runtime && b.spec.runtime !== 'auto' ? b.spec.runtime : 'runsc';
    return {
      agentId: b.spec.agentId, containerId: b.id, runtime, engineRuntime: 'fake', specHash: b.specHash, image: b.spec.image, action, restored,
      ...(b.spec.network?.mode === 'internal' ? { hostAddress: hostAddressOf(b.spec.agentId) } : {}),
    };
  }

  function statusOf(agentId: string): SandboxStatus {
    const b = boxes.get(agentId);
    if (!b) return { agentId, containerId: '', state: 'missing', runtime: undefined, specHash: undefined, image: undefined, exitCode: undefined, oomKilled: false };
    return { agentId, containerId: b.id, state: b.state, runtime: handle(b, 'none').runtime, specHash: b.specHash, image: b.spec.image, exitCode: b.state === 'running' ? undefined : b.exitCode, oomKilled: false };
  }

  /** A tar of `<workspace>/<dir>` as the engine's archive endpoint would produce it. */
  async function archiveOf(base: string, top: string): Promise<PassThrough> {
    const pack = tar.pack();
    const seen = new Map<string, string>();
    const walk = async (abs: string, name: string): Promise<void> => {
      const st = await fs.lstat(abs);
      if (st.isSymbolicLink()) {
        pack.entry({ name, type: 'symlink', linkname: await fs.readlink(abs) });
      } else if (st.isDirectory()) {
        pack.entry({ name: `${name}/`, type: 'directory', mode: st.mode & 0o7777 });
        for (const e of (await fs.readdir(abs)).sort()) await walk(path.join(abs, e), `${name}/${e}`);
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? seen.get(key) : undefined;
        if (first !== undefined) {
          pack.entry({ name, type: 'link', linkname: first });
        } else {
          if (st.nlink > 1) seen.set(key, name);
          pack.entry({ name, type: 'file', size: st.size, mode: st.mode & 0o7777 }, await fs.readFile(abs));
        }
      } else {
        pack.entry({ name, type: st.isFIFO() ? 'fifo' : 'character-device' });
      }
    };
    const out = new PassThrough();
    pack.pipe(out);
    void walk(path.join(base, top), top).then(
      () => pack.finalize(),
      (err: unknown) => pack.destroy(err as Error),
    );
    return out;
  }

  /** A loopback address of the agent's own (127/8 is all loopback), so endpoints of different agents never share a port. */
  const hostAddressOf = (agentId: string) => {
    const h = createHash('sha256').update(agentId).digest();
    return `127.${h[0]! % 254 + 1}.${h[1]!}.${(h[2]! % 253) + 2}`;
  };

  const driver: FakeDriver = {
    root,
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
          start(agentId, b);
          return handle(b, 'started');
        }
        if (b) {
          await stop(b);
          action = 'recreated';
        }
        const volumeIsNew = !(await exists(ws(agentId)));
        const restore = volumeIsNew && (await exists(snapDir(agentId)));
        if (restore) await fs.cp(snapDir(agentId), ws(agentId), { recursive: true, verbatimSymlinks: true });
        else await fs.mkdir(ws(agentId), { recursive: true });
        b = { id: createHash('sha256').update(`${agentId}:${randomBytes(8).toString('hex')}`).digest('hex'), spec: valid, specHash, state: 'stopped', exitCode: undefined };
        boxes.set(agentId, b);
        start(agentId, b);
        return handle(b, action, restore);
      });
    },

    sleep(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        const b = boxes.get(agentId);
        if (b && b.state === 'running') await stop(b);
      });
    },

    destroy(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async (): Promise<DestroyReport> => {
        const removed = { containers: 0, volumes: 0, networks: 0, snapshot: false };
        const b = boxes.get(agentId);
        if (b) {
          await stop(b);
          boxes.delete(agentId);
          removed.containers = 1;
        }
        if (await exists(ws(agentId))) removed.volumes = 1;
        removed.snapshot = await exists(snapDir(agentId));
        await fs.rm(path.join(root, agentId), { recursive: true, force: true });
        return { agentId, removed };
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
      const b = runningBox(agentId);
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
      yield* readOutboxTar(await archiveOf(parent, top), top, { ...o.outbox, ...limits });
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

    snapshot(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        if (!boxes.has(agentId)) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
        const dest = snapDir(agentId);
        await fs.rm(dest, { recursive: true, force: true });
        await fs.cp(ws(agentId), dest, { recursive: true, verbatimSymlinks: true });
        let bytes = 0;
        for (const f of (await fs.readdir(dest, { recursive: true })) as string[]) {
          const st = await fs.lstat(path.join(dest, f));
          if (st.isFile()) bytes += st.size;
        }
        return { agentId, path: dest, bytes };
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
