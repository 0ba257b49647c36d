/**
 * SandboxDriver on a Docker engine, with a VM-grade OCI runtime (kata or runsc) underneath.
 * Per agent: one workspace volume and (optionally) one internal network, and up to two slot
 * containers on them (slots.ts), all labelled with the agent id; each container also carries a
 * hash of its full create body. `slot(x)` views share every cache and lock of this driver.
 */
import { PassThrough, type Duplex } from 'node:stream';
import { AgentVmError, isAgentVmError } from '../../errors.js';
import type { DockerConnection } from '../../config.js';
import type { Logger } from '../../log.js';
import { packDirs, packFiles } from '../inbox.js';
import { workspaceDir } from '../layout.js';
import { createOutboxIo } from './outbox-io.js';
import { selectRuntime, type RuntimeChoice } from '../runtime.js';
import { assertAgentId, hashOf, validateSpec } from '../spec.js';
import type {
  ExecOptions, ExecResult, OutboxLimits, RuntimeSetting, SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus, SlotName, SlotRef, SnapshotInfo,
} from '../types.js';
import { createLocalSnapshotStore } from '../snapshots/local.js';
import type { SnapshotStore } from '../snapshots/types.js';
import { connectDocker, engineError, isConflict, isNotFound, isNotModified, type ContainerInspectInfo, type DockerClient } from './engine.js';
import { runExec } from './exec.js';
import { LABELS, WORKSPACE, createBody } from './hardening.js';
import { createDockerSnapshots } from './snapshot.js';
import { transitions } from './pause.js';
import { hostPortsOf, proxyEnv } from './firewall.js';
import { createNetworks } from './network.js';
import { destroyAgent } from './destroy.js';
import { pickCurrent, releaseLabels, slotNames, slotOf, startedIso } from './slots.js';

/** How long exec waits for the engine to report a sandbox stopped after an exec died with it. */
const SANDBOX_STOP_SETTLE_MS = 10_000;
/**
 * What runsc's exec helper prints (and exits 128 with) when the sandbox's sentry went away under
 * the command, e.g. killed by the memory limit. A command can print this too; it then only costs
 * the wait above, since the sandbox keeps running and its 128 is kept.
 */
const RUNSC_SENTRY_LOST = /containerManager\.WaitPID"? failed: EOF/;

export interface DockerDriverOptions {
  docker: DockerConnection;
  runtime: RuntimeSetting;
  allowRunc: boolean;
  outbox: OutboxLimits;
  /** Where workspace snapshot generations are kept (src/sandbox/snapshots). */
  snapshots?: SnapshotStore;
  /** Without `snapshots`: a local store in this directory (keeping 5 generations). */
  snapshotDir?: string;
  logger: Logger;
  /** Prefix for container, volume and network names. */
  namePrefix?: string;
  /** Seconds a sleeping sandbox gets between SIGTERM and SIGKILL. */
  stopTimeoutSeconds?: number;
}

export function createDockerDriver(options: DockerDriverOptions): SandboxDriver {
  const docker: DockerClient = connectDocker(options.docker);
  const log = options.logger.child({ component: 'sandbox.docker' });
  const prefix = options.namePrefix ?? 'agentvm';
  const names = (agentId: string, slot: SlotRef = 'a') => slotNames(prefix, agentId, slot);
  const locks = new Map<string, Promise<unknown>>();
  let engineRuntimes: Promise<string[]> | undefined;
  if (!options.snapshots && !options.snapshotDir) throw new Error('createDockerDriver needs snapshots or snapshotDir');
  const store = options.snapshots ?? createLocalSnapshotStore({ dir: options.snapshotDir! });
  const pausing = transitions();
  const stopTimeoutSeconds = options.stopTimeoutSeconds ?? 5;
  const nets = createNetworks({ docker, call, prefix, network: (a) => names(a).network, labels: (a) => labels(a) });
  const siblings = async (agentId: string): Promise<ContainerInspectInfo[]> => {
    const both = await slotInfos(agentId);
    const first = pickCurrent(both);
    return [first.info, ...both.filter((s) => s.slot !== first.slot).map((s) => s.info)].filter((i): i is ContainerInspectInfo => i !== undefined);
  };
  // Helpers of the agent's workspace are named after slot a (the agent's own name); the trial's
  // after the trial, whose workspace they fill.
  const snaps = createDockerSnapshots({ docker, store, log, call, names: (a) => names(a, 'a'), siblings, inspect, labels, stopTimeoutSeconds, pausing });
  const trialSnaps = createDockerSnapshots({
    docker, store, log, call, names: (a) => names(a, 'trial'), inspect, labels, stopTimeoutSeconds, pausing,
    siblings: async (a) => [await inspect(names(a, 'trial').container)].filter((i): i is ContainerInspectInfo => i !== undefined),
  });
  const outboxes: Array<{ forget(agentId: string): void }> = [];
  const forgetOutboxes = (agentId: string) => outboxes.forEach((x) => x.forget(agentId));
  const lockKey = (agentId: string, slot: SlotRef | undefined) => (slot === 'trial' ? `${agentId}\u0000trial` : agentId);

  /** Serializes operations on one agent's live workspace (and, apart, on its trial). */
  function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    locks.set(key, tail);
    void tail.then(() => {
      if (locks.get(key) === tail) locks.delete(key);
    });
    return next;
  }

  async function call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isAgentVmError(err) || isNotFound(err) || isConflict(err) || isNotModified(err)) throw err;
      throw engineError(err, options.docker);
    }
  }

  async function runtimeFor(setting: RuntimeSetting): Promise<RuntimeChoice> {
    const load = () =>
      call(async () => Object.keys((await docker.info()).Runtimes ?? {})).catch((err: unknown) => {
        engineRuntimes = undefined; // do not cache a failed lookup
        throw err;
      });
    engineRuntimes ??= load();
    try {
      return selectRuntime(setting, await engineRuntimes, options.allowRunc);
    } catch (err) {
      // The engine may have gained a runtime since we last looked (daemon.json reloaded).
      if (!isAgentVmError(err, 'runtime_unavailable')) throw err;
      engineRuntimes = load();
      return selectRuntime(setting, await engineRuntimes, options.allowRunc);
    }
  }

  async function inspect(name: string): Promise<ContainerInspectInfo | undefined> {
    try {
      return await call(() => docker.getContainer(name).inspect());
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async function inspectImage(ref: string): Promise<{ id: string; labels: Record<string, string> } | undefined> {
    try {
      const info = await call(() => docker.getImage(ref).inspect());
      return { id: info.Id, labels: { ...(info.Config?.Labels ?? {}) } };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async function imageId(image: string): Promise<string> {
    const info = await inspectImage(image);
    if (!info) throw new AgentVmError('image_missing', `image ${image} is not on the Docker engine; build it with \`agent-vm image build\``, { status: 400 });
    return info.id;
  }

  function labels(agentId: string, extra: Record<string, string> = {}): Record<string, string> {
    return { [LABELS.managed]: 'true', [LABELS.agent]: agentId, ...extra };
  }

  async function slotInfos(agentId: string): Promise<Array<{ slot: SlotName; info: ContainerInspectInfo | undefined }>> {
    const [a, b] = await Promise.all([inspect(names(agentId, 'a').container), inspect(names(agentId, 'b').container)]);
    return [{ slot: 'a', info: a }, { slot: 'b', info: b }];
  }

  /** The view's slot of the agent and its container: a fixed slot, or the agent's current one. */
  async function target(agentId: string, fixed: SlotRef | undefined): Promise<{ slot: SlotRef; info: ContainerInspectInfo | undefined }> {
    if (fixed) return { slot: fixed, info: await inspect(names(agentId, fixed).container) };
    return pickCurrent(await slotInfos(agentId));
  }

  async function ensureLocked(spec: SandboxSpec, slot: SlotRef): Promise<SandboxHandle> {
    const n = names(spec.agentId, slot);
    await pausing.settle(n.container);
    const choice = await runtimeFor(spec.runtime ?? options.runtime);
    const [id, existing] = await Promise.all([imageId(spec.image), inspect(n.container)]);
    const networkName = spec.network?.mode === 'internal' ? n.network : undefined;
    // Before the create body: the proxy address is the network's gateway, stable for the
    // network's life, so the spec hash stays the same from wake to wake.
    if (networkName) await nets.ensureNetwork(spec.agentId);
    const proxyPort = spec.network?.mode === 'internal' ? spec.network.proxyPort : undefined;
    const env = proxyPort ? { ...spec.env, ...proxyEnv(await nets.hostAddress(spec.agentId), proxyPort) } : spec.env;
    const body = createBody({
      spec: { ...spec, ...(env ? { env } : {}) }, containerName: n.container, volumeName: n.volume, networkName, engineRuntime: choice.engineRuntime, imageId: id,
      // The engine's resolver forwards only here, where the host firewall refuses port 53.
      hostAddress: networkName ? await nets.hostAddress(spec.agentId) : undefined,
    });
    const ports = hostPortsOf(spec);
    const extra = spec.labels && Object.keys(spec.labels).length > 0 ? spec.labels : undefined;
    const specHash = hashOf({ ...body, ...(ports.length > 0 ? { hostPorts: ports } : {}), ...(extra ? { labels: extra } : {}) });
    const handle = (containerId: string, action: SandboxHandle['action'], restoredFrom?: SandboxHandle['restoredFrom']): SandboxHandle => ({
      agentId: spec.agentId, containerId, runtime: choice.runtime, engineRuntime: choice.engineRuntime, specHash, image: spec.image, imageId: id, slot,
      action, restored: restoredFrom !== undefined, ...(restoredFrom ? { restoredFrom } : {}),
    });

    let action: SandboxHandle['action'] = 'created';
    if (existing) {
      const state = existing.State;
      // The label alone is not trusted: a container re-created by hand with our labels but another
      // image or runtime is never reused.
      const same = existing.Config.Labels?.[LABELS.specHash] === specHash && existing.Image === id && existing.HostConfig?.Runtime === choice.engineRuntime;
      if (same && state.Running && !state.Paused) return handle(existing.Id, 'none');
      if (same && state.Paused) {
        await call(() => docker.getContainer(existing.Id).unpause());
        pausing.mark(n.container);
        return handle(existing.Id, 'unpaused');
      }
      if (same && (state.Status === 'created' || state.Status === 'exited')) {
        await nets.guard(spec);
        await startContainer(existing.Id);
        return handle(existing.Id, 'started');
      }
      // A changed spec (or a dead container) is never reused: recreate, keeping the volume.
      log.info({ agent: spec.agentId, slot, state: state.Status, changed: !same }, 'recreating sandbox');
      await call(() => docker.getContainer(existing.Id).remove({ force: true, v: false })).catch((err) => {
        if (!isNotFound(err)) throw err;
      });
      action = 'recreated';
    }

    // A trial always starts on a fresh copy of the newest good generation.
    if (slot === 'trial') await call(() => docker.getVolume(n.volume).remove()).catch((err) => { if (!isNotFound(err)) throw err; });
    // A missing volume comes back from the newest good snapshot generation, or the wake is refused.
    const restoredFrom = await (slot === 'trial' ? trialSnaps : snaps).ensureWorkspace(spec.agentId, id);
    await nets.guard(spec);

    let containerId: string;
    try {
      const created = await call(() =>
        docker.createContainer({
          ...body,
          name: n.container,
          Labels: labels(spec.agentId, { ...extra, [LABELS.specHash]: specHash, [LABELS.runtime]: choice.runtime, [LABELS.slot]: slot }),
        }),
      );
      containerId = created.id;
    } catch (err) {
      if (!isConflict(err)) throw err;
      // Another process created it between our inspect and create: take the normal path.
      return ensureLocked(spec, slot);
    }
    await startContainer(containerId);
    return handle(containerId, action, restoredFrom);
  }

  async function startContainer(containerId: string): Promise<void> {
    try {
      await call(() => docker.getContainer(containerId).start());
    } catch (err) {
      if (isNotModified(err)) return; // already started by a concurrent caller
      throw err;
    }
  }

  function toStatus(agentId: string, info: ContainerInspectInfo | undefined): SandboxStatus {
    if (!info) {
      return { agentId, containerId: '', state: 'missing', runtime: undefined, specHash: undefined, image: undefined, exitCode: undefined, oomKilled: false };
    }
    const s = info.State;
    const started = startedIso(info);
    return {
      agentId,
      containerId: info.Id,
      state: s.Paused ? 'paused' : s.Running ? 'running' : 'stopped',
      runtime: info.Config.Labels?.[LABELS.runtime],
      specHash: info.Config.Labels?.[LABELS.specHash],
      image: info.Config.Image,
      exitCode: s.Running ? undefined : s.ExitCode,
      oomKilled: s.OOMKilled === true,
      slot: slotOf(info),
      imageId: info.Image,
      releaseLabels: releaseLabels(info),
      ...(started ? { startedAt: started } : {}),
    };
  }

  const views = new Map<SlotRef | undefined, SandboxDriver>();
  function view(fixed: SlotRef | undefined): SandboxDriver {
    const existing = views.get(fixed);
    if (existing) return existing;
    /** The agent-wide operations a trial view refuses, as a rejection (never a synchronous throw). */
    const refusedOnTrial = (what: string): Promise<never> | undefined =>
      fixed === 'trial' ? Promise.reject(new AgentVmError('slot_unsupported', `${what} does not apply to a trial sandbox: its workspace is a copy, not the agent's`, { status: 400 })) : undefined;
    const containerName = async (agentId: string) => names(agentId, (await target(agentId, fixed)).slot).container;

    async function requireRunning(agentId: string, pausedOk = false): Promise<ContainerInspectInfo> {
      const { info } = await target(agentId, fixed);
      if (!info) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox; wake it first`, { status: 404 });
      if (!info.State.Running || (info.State.Paused && !pausedOk)) {
        throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox is not running; wake it first`, { status: 409 });
      }
      return info;
    }

    /** Extracts a tar at /workspace: a volume, so the engine extracts into it even with a read-only root. */
    async function upload(agentId: string, archive: NodeJS.ReadableStream): Promise<void> {
      try {
        await call(async () => docker.getContainer(await containerName(agentId)).putArchive(archive, { path: WORKSPACE }));
      } catch (err) {
        if (isNotFound(err)) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox`, { status: 404 });
        throw err;
      }
    }

    const d: SandboxDriver = {
      async ensure(spec) {
        const valid = validateSpec(spec);
        const wanted = valid.slot ?? fixed;
        return withLock(lockKey(valid.agentId, wanted), async () => {
          const slot = wanted ?? (await target(valid.agentId, undefined)).slot;
          const h = await ensureLocked(valid, slot);
          // A started or new sandbox may hold anything (a restored workspace, another process's writes).
          if (h.action !== 'none' && h.action !== 'unpaused') forgetOutboxes(valid.agentId);
          return valid.network?.mode === 'internal' ? { ...h, hostAddress: await nets.hostAddress(valid.agentId) } : h;
        });
      },

      prepareNetwork(agentId) {
        assertAgentId(agentId);
        return withLock(agentId, async () => {
          await nets.ensureNetwork(agentId);
          return nets.hostAddress(agentId);
        });
      },

      sleep(agentId) {
        assertAgentId(agentId);
        forgetOutboxes(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          // The plain driver puts the whole agent to sleep (every slot); a view only its slot.
          const infos = fixed ? [await inspect(names(agentId, fixed).container)] : (await slotInfos(agentId)).map((s) => s.info);
          for (const info of infos) if (info) await snaps.stop(info);
        });
      },

      destroy(agentId, destroyOptions) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('destroy');
        if (refused) return refused;
        forgetOutboxes(agentId);
        return withLock(agentId, async () => {
          const finalSnapshot = await snaps.final(agentId, destroyOptions?.finalSnapshot !== false);
          nets.forget(agentId);
          return destroyAgent({ docker, call, prefix, log, bridgeOf: nets.bridgeOf }, agentId, finalSnapshot);
        });
      },

      async exec(agentId, command, execOptions: ExecOptions): Promise<ExecResult> {
        assertAgentId(agentId);
        if (command.length === 0) throw new AgentVmError('exec_invalid', 'exec needs a command', { status: 400 });
        const info = await requireRunning(agentId);
        const container = docker.getContainer(info.Id);
        let result: ExecResult;
        try {
          result = await call(() => runExec(docker, container, command, execOptions));
        } catch (err) {
          if (isConflict(err)) {
            throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox stopped; wake it again`, { status: 409, cause: err });
          }
          throw err;
        }
        if (result.exitCode !== 0) {
          let after = await inspect(info.Id);
          // The exec may have died with its sandbox: no exit code at all, or under runsc the exec
          // helper's own 128 once the sentry is gone ("WaitPID failed: EOF"). The engine may take
          // a moment longer to report the container stopped (seen: still running 350 ms later).
          const lostSandbox = result.exitCode === null || (result.exitCode === 128 && RUNSC_SENTRY_LOST.test(result.stderr));
          for (let waited = 0; lostSandbox && !result.timedOut && after?.State.Running && waited < SANDBOX_STOP_SETTLE_MS; waited += 100) {
            await new Promise((r) => setTimeout(r, 100));
            after = await inspect(info.Id);
          }
          if (after && !after.State.Running) {
            result.sandboxStopped = { exitCode: after.State.ExitCode, oomKilled: after.State.OOMKilled === true };
            // The 128 was runsc's, not the command's.
            if (lostSandbox) result.exitCode = null;
          }
        }
        return result;
      },

      async attach(agentId) {
        assertAgentId(agentId);
        const info = await requireRunning(agentId);
        if (!info.Config.OpenStdin) {
          throw new AgentVmError('sandbox_no_stdio', `agent ${agentId}'s sandbox was not created with stdin open; wake it with stdin: true`, { status: 409 });
        }
        const stream = (await call(() =>
          docker.getContainer(info.Id).attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true }),
        )) as unknown as Duplex;
        const stdout = new PassThrough();
        const stderr = new PassThrough();
        docker.modem.demuxStream(stream, stdout, stderr);
        const closed = new Promise<void>((resolve) => {
          let done = false;
          const end = () => {
            if (done) return;
            done = true;
            stdout.end();
            stderr.end();
            resolve();
          };
          stream.once('end', end);
          stream.once('close', end);
          stream.once('error', end);
        });
        return { stdin: stream, stdout, stderr, closed, close: () => stream.destroy() };
      },

      readOutbox: (agentId, dir, limits, opts) => outbox.read(agentId, dir, limits, opts),
      removeFiles: (agentId, dir, files) => outbox.remove(agentId, dir, files),

      async writeFiles(agentId, dir, files) {
        assertAgentId(agentId);
        // The names packFiles wrote are the paths returned: duplicates were renamed there.
        const { archive, names: written } = packFiles(dir, files);
        await upload(agentId, archive);
        return written.map((n) => `${WORKSPACE}/${dir}/${n}`);
      },

      async makeDirs(agentId, dirs) {
        assertAgentId(agentId);
        if (dirs.length === 0) return;
        await upload(agentId, packDirs(dirs.map(workspaceDir)));
      },

      snapshot(agentId, meta) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('snapshot');
        if (refused) return refused;
        // Only the lookup takes the agent's lock: streaming a workspace out must not hold up a wake.
        // The store serializes writes; a sandbox removed meanwhile fails this snapshot, whole.
        return withLock(agentId, () => siblings(agentId)).then(([info]): Promise<SnapshotInfo> => {
          if (!info) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
          return snaps.take(agentId, info.Id, meta);
        });
      },

      restore(agentId, restoreOptions = {}) {
        assertAgentId(agentId);
        const refused = refusedOnTrial('restore');
        if (refused) return refused;
        return withLock(agentId, () => snaps.restore(agentId, restoreOptions));
      },

      pause(agentId) {
        assertAgentId(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          const key = await containerName(agentId);
          await pausing.settle(key);
          const info = await requireRunning(agentId, true);
          if (info.State.Paused) return;
          await call(() => docker.getContainer(info.Id).pause()).catch((err: unknown) => {
            if (!isConflict(err)) throw err; // paused by someone else meanwhile
          });
          pausing.mark(key);
        });
      },

      async status(agentId) {
        assertAgentId(agentId);
        return toStatus(agentId, (await target(agentId, fixed)).info);
      },

      async list() {
        const all = await call(() => docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } }));
        const infos = (await Promise.all(all.map((c) => inspect(c.Id)))).filter((i): i is ContainerInspectInfo => i !== undefined);
        const byAgent = new Map<string, Array<{ slot: SlotName; info: ContainerInspectInfo }>>();
        for (const i of infos) {
          const slot = slotOf(i);
          if (slot === 'trial') continue;
          const agent = i.Config.Labels?.[LABELS.agent] ?? '?';
          byAgent.set(agent, [...(byAgent.get(agent) ?? []), { slot, info: i }]);
        }
        return [...byAgent].map(([agent, slots]) => toStatus(agent, pickCurrent(slots).info)).sort((a, b) => a.agentId.localeCompare(b.agentId));
      },

      slot: (s) => view(s),

      async slots(agentId) {
        assertAgentId(agentId);
        const all = await Promise.all((['a', 'b', 'trial'] as const).map((s) => inspect(names(agentId, s).container)));
        return all.filter((i): i is ContainerInspectInfo => i !== undefined).map((i) => toStatus(agentId, i));
      },

      discard(agentId) {
        assertAgentId(agentId);
        forgetOutboxes(agentId);
        return withLock(lockKey(agentId, fixed), async () => {
          const { info, slot } = await target(agentId, fixed);
          if (info) await call(() => docker.getContainer(info.Id).remove({ force: true, v: false })).catch((err) => { if (!isNotFound(err)) throw err; });
          if (slot === 'trial') await call(() => docker.getVolume(names(agentId, 'trial').volume).remove()).catch((err) => { if (!isNotFound(err)) throw err; });
        });
      },

      inspectImage: (ref) => inspectImage(ref),

      async close() {
        // dockerode holds no pooled connections we own; pending operations finish on their own.
        await Promise.allSettled([...locks.values()]);
      },
    };
    const outbox = createOutboxIo({ docker, call, inspect, limits: options.outbox, container: containerName, exec: (agentId, command, o) => d.exec(agentId, command, o) });
    outboxes.push(outbox);
    views.set(fixed, d);
    return d;
  }

  return view(undefined);
}
