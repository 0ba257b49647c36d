/**
 * A fake SandboxDriver for tests: no engine, no isolation at all. Each "sandbox" is a directory
 * on this machine (its workspace "volume") and, when the spec names a command, a child process
 * of this one (its main process, with stdio for ACP). It passes the same contract suite as the
 * Docker driver (test/contracts/sandbox-driver.ts), so turn and unit logic — timeouts, hang-ups,
 * shutdown, outbox, recovery, releases — can be tested in milliseconds without Docker.
 *
 * How it stands in for a sandbox:
 *   - `/workspace` is `<root>/<agent>/workspace` (a trial's `<root>/<agent>/trial-workspace`):
 *     paths under /workspace in commands and in the env are rewritten to it, and the agent gets
 *     AGENT_WORKSPACE (the reference agent maps its session cwd with it);
 *   - `programs` maps sandbox paths to host paths (e.g. the image's reference agent to the local
 *     bundle); `node` and `sh` are the host's;
 *   - images are names with a made-up id; `defineImage` (re)builds one with labels and an env
 *     its processes get, as a Dockerfile's ENV would (how tests make a "broken" image);
 *   - the outbox is read through the engine archive's tar validation, so refusals match.
 *
 * Snapshots are real generations in a real SnapshotStore (default: a local store under the root),
 * restored with the same verification as the Docker driver; `pause` stops the main process
 * (SIGSTOP), `ensure` continues it (SIGCONT). Slots a and b share the workspace directory.
 *
 * Deliberately left out: every isolation property (users, capabilities, read-only root, network,
 * limits): the Docker driver's, proven against it only. `close()` ends every child process.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AgentVmError } from '../errors.js';
import { attachTo, runProcess, type AttachPoint } from './fake-proc.js';
import { inboxFileNames } from './inbox.js';
import { relativeName, WORKSPACE, workspaceDir } from './layout.js';
import { readOutboxTar } from './outbox.js';
import { assertAgentId, hashOf, validateSpec } from './spec.js';
import type {
  DestroyReport, ImageInfo, OutboxEntry, OutboxLimits, RestoredFrom, RuntimeName, SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus, SlotName, SlotRef, SnapshotInfo, SnapshotMeta,
} from './types.js';
import { extractInto, packDirectory } from './snapshots/fs-archive.js';
import { createLocalSnapshotStore } from './snapshots/local.js';
import type { SnapshotManifest, SnapshotStore } from './snapshots/types.js';
import { chooseGeneration, type Choice } from './snapshots/verify.js';

/** A fake image: its labels, and environment its processes get (as a Dockerfile's ENV). */
export interface FakeImage {
  labels?: Record<string, string>;
  env?: Record<string, string>;
}

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
  /** Images by name; any other name is an image with no labels, made up on first use. */
  images?: Record<string, FakeImage>;
}

export interface FakeDriver extends SandboxDriver {
  readonly root: string;
  readonly snapshots: SnapshotStore;
  /** Removes the workspace "volume" behind the driver's back (for restore tests). */
  loseWorkspace(agentId: string): Promise<void>;
  /** Ends the current slot's main process as if it crashed with `exitCode`. */
  crash(agentId: string, exitCode?: number): Promise<void>;
  /** Builds `ref` anew, as `docker build -t ref` would: a new image id; returns it. */
  defineImage(ref: string, image?: FakeImage): string;
}

interface Box extends AttachPoint {
  id: string;
  slot: SlotRef;
  spec: SandboxSpec;
  specHash: string;
  imageId: string;
  state: 'running' | 'paused' | 'stopped';
  exitCode: number | undefined;
  startedAt?: number;
  proc?: ChildProcessWithoutNullStreams | undefined;
  exited?: Promise<void>;
}

export function createFakeDriver(o: FakeDriverOptions): FakeDriver {
  const root = o.root ?? path.join(os.tmpdir(), `agentvm-fake-${randomBytes(4).toString('hex')}`);
  const boxes = new Map<string, Box>();
  const locks = new Map<string, Promise<unknown>>();
  const key = (agentId: string, slot: SlotRef) => `${agentId}\u0000${slot}`;
  const ws = (agentId: string, slot: SlotRef = 'a') => path.join(root, agentId, slot === 'trial' ? 'trial-workspace' : 'workspace');
  const store = o.snapshots ?? createLocalSnapshotStore({ dir: path.join(root, '.snapshots') });
  const images = new Map<string, { id: string; image: FakeImage }>();
  const byId = new Map<string, FakeImage>();
  let builds = 0;

  function defineImage(ref: string, image: FakeImage = {}): string {
    const id = `sha256:${createHash('sha256').update(`${ref}\u0000${builds++}\u0000${randomBytes(4).toString('hex')}`).digest('hex')}`;
    images.set(ref, { id, image });
    byId.set(id, image);
    return id;
  }
  for (const [ref, image] of Object.entries(o.images ?? {})) defineImage(ref, image);
  function imageOf(ref: string): { id: string; image: FakeImage } | undefined {
    const named = images.get(ref);
    if (named) return named;
    const image = byId.get(ref);
    if (image) return { id: ref, image };
    if (/^sha256:[0-9a-f]{64}$/.test(ref)) return undefined; // an id the engine never had
    defineImage(ref);
    return images.get(ref);
  }

  function withLock<T>(k: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(k) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    locks.set(k, next.catch(() => undefined));
    return next;
  }
  const lockKey = (agentId: string, slot: SlotRef | undefined) => (slot === 'trial' ? key(agentId, 'trial') : agentId);

  const exists = (p: string) => fs.lstat(p).then(() => true, () => false);

  /** Rewrites sandbox paths to host paths in one word. */
  function hostWord(dir: string, w: string): string {
    const mapped = o.programs?.[w];
    if (mapped && mapped.length === 1) return mapped[0]!;
    if (w === WORKSPACE || w.startsWith(`${WORKSPACE}/`)) return dir + w.slice(WORKSPACE.length);
    return w.split(`${WORKSPACE}/`).join(`${dir}/`);
  }

  const hostCommand = (dir: string, command: string[]) => command.flatMap((w) => o.programs?.[w] ?? [hostWord(dir, w)]);

  function envOf(dir: string, b: Box, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { PATH: o.path ?? `${path.dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: dir, AGENT_WORKSPACE: dir };
    for (const [k, v] of Object.entries({ ...byId.get(b.imageId)?.env, ...b.spec.env, ...extra })) env[k] = hostWord(dir, v);
    return env;
  }

  function missing(agentId: string): AgentVmError {
    return new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox; wake it first`, { status: 404 });
  }

  /** The agent's current slot: running or paused (started last), else started last, else a. */
  function current(agentId: string): SlotName {
    const both = (['a', 'b'] as const).map((s) => ({ s, b: boxes.get(key(agentId, s)) })).filter((x): x is { s: SlotName; b: Box } => x.b !== undefined);
    const live = both.filter((x) => x.b.state !== 'stopped');
    const pool = live.length > 0 ? live : both;
    return [...pool].sort((x, y) => (y.b.startedAt ?? 0) - (x.b.startedAt ?? 0))[0]?.s ?? 'a';
  }

  function start(b: Box): void {
    b.state = 'running';
    b.exitCode = undefined;
    b.startedAt = performance.now();
    if (!b.spec.command) return; // the idle main process: nothing to run
    const dir = ws(b.spec.agentId, b.slot);
    const [cmd, ...args] = hostCommand(dir, b.spec.command);
    const proc = spawn(cmd!, args, { cwd: dir, env: envOf(dir, b), stdio: ['pipe', 'pipe', 'pipe'] });
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
      agentId: b.spec.agentId, containerId: b.id, runtime, engineRuntime: 'fake', specHash: b.specHash, image: b.spec.image, imageId: b.imageId, slot: b.slot, action,
      restored: restoredFrom !== undefined, ...(restoredFrom ? { restoredFrom } : {}),
      ...(b.spec.network?.mode === 'internal' ? { hostAddress: hostAddressOf(b.spec.agentId) } : {}),
    };
  }

  function statusOf(agentId: string, b: Box | undefined): SandboxStatus {
    if (!b) return { agentId, containerId: '', state: 'missing', runtime: undefined, specHash: undefined, image: undefined, exitCode: undefined, oomKilled: false };
    return {
      agentId, containerId: b.id, state: b.state, runtime: handle(b, 'none').runtime, specHash: b.specHash, image: b.spec.image, exitCode: b.state === 'running' ? undefined : b.exitCode,
      oomKilled: false, slot: b.slot, imageId: b.imageId, releaseLabels: { ...b.spec.labels },
      ...(b.startedAt !== undefined ? { startedAt: new Date(performance.timeOrigin + b.startedAt).toISOString() } : {}),
    };
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

  /** A new workspace (the agent's or a trial's) from a verified generation; none is left behind if extraction fails. */
  async function fill(agentId: string, choice: Choice, slot: SlotRef = 'a'): Promise<RestoredFrom> {
    const v = choice.verified!;
    try {
      await extractInto(ws(agentId, slot), v.open());
    } catch (err) {
      await fs.rm(ws(agentId, slot), { recursive: true, force: true });
      throw new AgentVmError('restore_failed', `agent ${agentId}: restoring snapshot generation ${v.manifest.generation} failed: ${(err as Error).message}; no workspace was left behind`, { status: 500, retryable: true, cause: err });
    } finally {
      await v.dispose();
    }
    const m = v.manifest;
    return { generation: m.generation, sha256: m.sha256, createdAt: m.createdAt, skipped: choice.skipped, ...(m.sessions ? { sessions: m.sessions } : {}), ...(m.release ? { release: m.release } : {}) };
  }

  const liveBoxes = (agentId: string) => (['a', 'b'] as const).map((s) => boxes.get(key(agentId, s))).filter((b): b is Box => b !== undefined);

  const views = new Map<SlotRef | undefined, SandboxDriver>();
  function view(fixed: SlotRef | undefined): SandboxDriver {
    const made = views.get(fixed);
    if (made) return made;
    const slotOf = (agentId: string): SlotRef => fixed ?? current(agentId);
    const boxOf = (agentId: string) => boxes.get(key(agentId, slotOf(agentId)));
    /** The agent-wide operations a trial view refuses, as a rejection (never a synchronous throw). */
    const refusedOnTrial = (what: string): Promise<never> | undefined =>
      fixed === 'trial' ? Promise.reject(new AgentVmError('slot_unsupported', `${what} does not apply to a trial sandbox: its workspace is a copy, not the agent's`, { status: 400 })) : undefined;
    function runningBox(agentId: string, pausedOk = false): Box {
      const b = boxOf(agentId);
      if (!b) throw missing(agentId);
      if (b.state !== 'running' && !(pausedOk && b.state === 'paused')) throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox is not running; wake it first`, { status: 409 });
      return b;
    }
    const d: SandboxDriver = {
      async prepareNetwork(agentId) {
        assertAgentId(agentId);
        return hostAddressOf(agentId);
      },
      async ensure(spec) {
        const valid = validateSpec(spec);
        const agentId = valid.agentId;
        const wanted = valid.slot ?? fixed;
        return withLock(lockKey(agentId, wanted), async () => {
          const slot = wanted ?? current(agentId);
          const img = imageOf(valid.image);
          if (!img) throw new AgentVmError('image_missing', `image ${valid.image} is not on the Docker engine; build it with \`agent-vm image build\``, { status: 400 });
          const { slot: _slot, ...hashed } = valid;
          const specHash = hashOf({ ...hashed, image: img.id, fake: true, volume: slot === 'trial' ? 'trial' : 'workspace' });
          let b = boxes.get(key(agentId, slot));
          let action: SandboxHandle['action'] = 'created';
          if (b && b.specHash === specHash) {
            if (b.state === 'running') return handle(b, 'none');
            if (b.state === 'paused') {
              b.proc?.kill('SIGCONT');
              b.state = 'running';
              return handle(b, 'unpaused');
            }
            start(b);
            return handle(b, 'started');
          }
          if (b) {
            await stop(b);
            action = 'recreated';
          }
          let restoredFrom: RestoredFrom | undefined;
          if (slot === 'trial') await fs.rm(ws(agentId, slot), { recursive: true, force: true });
          if (!(await exists(ws(agentId, slot)))) {
            // As the Docker driver: newest good generation, an empty first workspace, or a refusal.
            const choice = await chooseGeneration(store, agentId, { purpose: 'restore its workspace (the volume is gone)' });
            if (choice.verified) restoredFrom = await fill(agentId, choice, slot);
            else await fs.mkdir(ws(agentId, slot), { recursive: true });
          }
          b = { id: createHash('sha256').update(`${agentId}:${randomBytes(8).toString('hex')}`).digest('hex'), slot, spec: valid, specHash, imageId: img.id, state: 'stopped', exitCode: undefined };
          boxes.set(key(agentId, slot), b);
          start(b);
          return handle(b, action, restoredFrom);
        });
      },

      sleep(agentId) {
        assertAgentId(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          // The plain driver puts the whole agent to sleep (every slot); a view only its slot.
          const all = fixed ? [boxes.get(key(agentId, fixed))] : liveBoxes(agentId);
          for (const b of all) if (b && b.state !== 'stopped') await stop(b);
        });
      },

      destroy(agentId, options) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('destroy');
        if (refused) return refused;
        return withLock(agentId, async (): Promise<DestroyReport> => {
          const removed = { containers: 0, volumes: 0, networks: 0 };
          const all = [...liveBoxes(agentId), boxes.get(key(agentId, 'trial'))].filter((b): b is Box => b !== undefined);
          let finalSnapshot: SnapshotInfo | null = null;
          if (liveBoxes(agentId).length > 0 && options?.finalSnapshot !== false && (await exists(ws(agentId)))) {
            finalSnapshot = await take(agentId, { reason: 'destroy' }).catch((err: unknown) => {
              throw new AgentVmError('snapshot_failed', `agent ${agentId} was not destroyed: its final snapshot failed (${(err as Error).message}); fix the snapshot store, or destroy without one`, { status: 502, retryable: true, cause: err });
            });
          }
          for (const b of all) {
            await stop(b);
            boxes.delete(key(agentId, b.slot));
            removed.containers++;
          }
          if (await exists(ws(agentId))) removed.volumes = 1;
          await fs.rm(path.join(root, agentId), { recursive: true, force: true });
          return { agentId, removed, finalSnapshot };
        });
      },

      async exec(agentId, command, opts) {
        assertAgentId(agentId);
        if (command.length === 0) throw new AgentVmError('exec_invalid', 'exec needs a command', { status: 400 });
        const b = runningBox(agentId);
        const dir = ws(agentId, b.slot);
        const [cmd, ...args] = hostCommand(dir, command);
        return runProcess(cmd!, args, { timeoutMs: opts.timeoutMs, maxOutputBytes: opts.maxOutputBytes, cwd: dir, env: envOf(dir, b, opts.env) });
      },

      async attach(agentId) {
        assertAgentId(agentId);
        const b = runningBox(agentId, true);
        if (!b.spec.stdin || !b.proc) {
          throw new AgentVmError('sandbox_no_stdio', `agent ${agentId}'s sandbox was not created with stdin open; wake it with stdin: true`, { status: 409 });
        }
        return attachTo(b.proc, b);
      },

      async *readOutbox(agentId, dir, limits): AsyncGenerator<OutboxEntry> {
        assertAgentId(agentId);
        const rel = workspaceDir(dir);
        const b = boxOf(agentId);
        if (!b) throw missing(agentId);
        const top = rel.split('/').pop()!;
        const parent = path.join(ws(agentId, b.slot), path.dirname(rel));
        if (!(await exists(path.join(parent, top)))) return;
        yield* readOutboxTar(packDirectory(parent, top).archive, top, { ...o.outbox, ...limits });
      },

      async removeFiles(agentId, dir, names) {
        assertAgentId(agentId);
        const rel = workspaceDir(dir);
        const b = runningBox(agentId);
        for (const n of names) await fs.rm(path.join(ws(agentId, b.slot), rel, relativeName(n)), { recursive: true, force: true });
      },

      async writeFiles(agentId, dir, files) {
        assertAgentId(agentId);
        const b = boxOf(agentId);
        if (!b) throw missing(agentId);
        const names = inboxFileNames(files);
        const target = path.join(ws(agentId, b.slot), workspaceDir(dir));
        await fs.mkdir(target, { recursive: true });
        for (const [i, f] of files.entries()) await fs.writeFile(path.join(target, names[i]!), f.data);
        return names.map((n) => `${WORKSPACE}/${dir}/${n}`);
      },

      async makeDirs(agentId, dirs) {
        for (const dir of dirs) await d.writeFiles(agentId, dir, []);
      },

      snapshot(agentId, meta) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('snapshot');
        if (refused) return refused;
        // As the Docker driver: the lock only for the lookup, not while the workspace streams out.
        return withLock(agentId, async () => liveBoxes(agentId).length > 0).then((has) => {
          if (!has) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
          return take(agentId, meta);
        });
      },

      restore(agentId, ro = {}) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('restore');
        if (refused) return refused;
        return withLock(agentId, async () => {
          const choice = await chooseGeneration(store, agentId, { purpose: 'restore', ...(ro.generation !== undefined ? { generation: ro.generation } : {}), ...(ro.before !== undefined ? { before: ro.before } : {}) });
          if (!choice.verified) throw new AgentVmError('snapshot_missing', `agent ${agentId} has no snapshots in ${store.location}`, { status: 404 });
          const all = liveBoxes(agentId);
          const wasRunning = all.some((b) => b.state === 'running' || b.state === 'paused');
          let savedAs: SnapshotInfo | undefined;
          try {
            for (const b of all) await stop(b);
            if (ro.snapshotFirst !== false && (await exists(ws(agentId)))) savedAs = await take(agentId, { reason: 'pre-restore', ...ro.meta });
          } catch (err) {
            await choice.verified.dispose();
            throw err;
          }
          // As the engine: every slot goes with the volume it used.
          for (const b of all) boxes.delete(key(agentId, b.slot));
          await fs.rm(ws(agentId), { recursive: true, force: true });
          const from = await fill(agentId, choice);
          return { agentId, ...from, wasRunning, ...(savedAs ? { savedAs } : {}) };
        });
      },

      pause(agentId) {
        assertAgentId(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          const b = runningBox(agentId, true);
          if (b.state === 'paused') return;
          b.proc?.kill('SIGSTOP');
          b.state = 'paused';
        });
      },

      async status(agentId) {
        assertAgentId(agentId);
        return statusOf(agentId, boxOf(agentId));
      },

      async list() {
        const agents = [...new Set([...boxes.values()].filter((b) => b.slot !== 'trial').map((b) => b.spec.agentId))].sort();
        return agents.map((a) => statusOf(a, boxes.get(key(a, current(a)))));
      },

      slot: (s) => view(s),

      async slots(agentId) {
        assertAgentId(agentId);
        return (['a', 'b', 'trial'] as const).map((s) => boxes.get(key(agentId, s))).filter((b): b is Box => b !== undefined).map((b) => statusOf(agentId, b));
      },

      discard(agentId) {
        assertAgentId(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          const slot = slotOf(agentId);
          const b = boxes.get(key(agentId, slot));
          if (b) {
            await stop(b);
            boxes.delete(key(agentId, slot));
          }
          if (slot === 'trial') await fs.rm(ws(agentId, 'trial'), { recursive: true, force: true });
        });
      },

      async inspectImage(ref): Promise<ImageInfo | undefined> {
        const img = imageOf(ref);
        return img ? { id: img.id, labels: { ...img.image.labels } } : undefined;
      },

      async close() {
        await Promise.allSettled([...locks.values()]);
        await Promise.allSettled([...boxes.values()].map(stop));
      },
    };
    views.set(fixed, d);
    return d;
  }

  const base = view(undefined);
  const driver: FakeDriver = {
    ...base,
    root,
    snapshots: store,
    defineImage,
    async loseWorkspace(agentId: string) {
      for (const b of liveBoxes(agentId)) {
        await stop(b);
        boxes.delete(key(agentId, b.slot));
      }
      await fs.rm(ws(agentId), { recursive: true, force: true });
    },
    async crash(agentId: string, exitCode = 3) {
      const b = boxes.get(key(agentId, current(agentId)));
      if (!b?.proc) return;
      const proc = b.proc;
      proc.kill('SIGKILL');
      await b.exited;
      b.exitCode = exitCode;
    },
  };
  return driver;
}
