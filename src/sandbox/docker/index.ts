/**
 * SandboxDriver on a Docker engine, with a VM-grade OCI runtime (kata or runsc) underneath.
 * One container, one workspace volume and (optionally) one internal network per agent, all
 * labelled with the agent id; the container also carries a hash of its full create body.
 */
import { PassThrough, type Duplex } from 'node:stream';
import { AgentVmError, isAgentVmError } from '../../errors.js';
import type { DockerConnection } from '../../config.js';
import type { Logger } from '../../log.js';
import { packFiles, safeFileName } from '../inbox.js';
import { createOutboxIo } from './outbox-io.js';
import { selectRuntime, type RuntimeChoice } from '../runtime.js';
import { assertAgentId, hashOf, validateSpec } from '../spec.js';
import type {
  DestroyReport, ExecOptions, ExecResult, OutboxLimits, RuntimeSetting,
  SandboxDriver, SandboxHandle, SandboxSpec, SandboxStatus, SnapshotInfo,
} from '../types.js';
import { createLocalSnapshotStore } from '../snapshots/local.js';
import type { SnapshotStore } from '../snapshots/types.js';
import {
  connectDocker, engineError, isConflict, isNotFound, isNotModified,
  type ContainerInspectInfo, type DockerClient,
} from './engine.js';
import { runExec } from './exec.js';
import { LABELS, WORKSPACE, createBody } from './hardening.js';
import { createDockerSnapshots } from './snapshot.js';
import { transitions } from './pause.js';
import { bridgeName, chainFor, chainInstalled, guardBridge, hostPortsOf, proxyEnv, unguardBridge } from './firewall.js';

/** How long exec waits for the engine to report a sandbox stopped after an exec died with it. */
const SANDBOX_STOP_SETTLE_MS = 3_000;

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
  const names = (agentId: string) => ({
    container: `${prefix}-${agentId}`,
    volume: `${prefix}-${agentId}-workspace`,
    network: `${prefix}-${agentId}-net`,
  });
  const locks = new Map<string, Promise<unknown>>();
  /** Agent id → its internal network's gateway address (stable for the network's lifetime). */
  const hostAddresses = new Map<string, string>();
  let engineRuntimes: Promise<string[]> | undefined;
  if (!options.snapshots && !options.snapshotDir) throw new Error('createDockerDriver needs snapshots or snapshotDir');
  const store = options.snapshots ?? createLocalSnapshotStore({ dir: options.snapshotDir! });
  const pausing = transitions();
  const outbox = createOutboxIo({
    docker, call, inspect, limits: options.outbox,
    container: (agentId) => names(agentId).container,
    exec: (agentId, command, o) => driver.exec(agentId, command, o),
  });
  const forgetOutboxes = outbox.forget;
  const snaps = createDockerSnapshots({
    docker, store, log, call, names, inspect, labels, stopTimeoutSeconds: options.stopTimeoutSeconds ?? 5, pausing,
  });

  /** Serializes operations on one agent; different agents proceed in parallel. */
  function withLock<T>(agentId: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(agentId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    locks.set(agentId, tail);
    void tail.then(() => {
      if (locks.get(agentId) === tail) locks.delete(agentId);
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

  async function imageId(image: string): Promise<string> {
    try {
      return (await call(() => docker.getImage(image).inspect())).Id;
    } catch (err) {
      if (isNotFound(err)) {
        throw new AgentVmError('image_missing', `image ${image} is not on the Docker engine; build it with \`agent-vm image build\``, { status: 400 });
      }
      throw err;
    }
  }

  function labels(agentId: string, extra: Record<string, string> = {}): Record<string, string> {
    return { [LABELS.managed]: 'true', [LABELS.agent]: agentId, ...extra };
  }

  async function ensureNetwork(agentId: string): Promise<string> {
    const n = names(agentId);
    try {
      await call(() => docker.getNetwork(n.network).inspect());
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        await call(() =>
          docker.createNetwork({
            Name: n.network,
            Internal: true,
            CheckDuplicate: true,
            Labels: labels(agentId),
            // Our own bridge name, so the host firewall chain can name the interface.
            Options: { 'com.docker.network.bridge.name': bridgeName(prefix, agentId) },
          }),
        );
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
    }
    return n.network;
  }

  /** The Linux bridge behind an agent's network (ours, or Docker's `br-<id>` for older networks). */
  async function bridgeOf(agentId: string): Promise<string> {
    const info = (await call(() => docker.getNetwork(names(agentId).network).inspect())) as { Id: string; Options?: Record<string, string> };
    return info.Options?.['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
  }

  /** Closes the host to the sandbox except the spec's ports; before the container runs. */
  async function guard(spec: SandboxSpec): Promise<void> {
    if (spec.network?.mode !== 'internal') return;
    await guardBridge(await bridgeOf(spec.agentId), await hostAddress(spec.agentId), hostPortsOf(spec));
  }

  async function hostAddress(agentId: string): Promise<string> {
    const cached = hostAddresses.get(agentId);
    if (cached) return cached;
    const info = await call(() => docker.getNetwork(names(agentId).network).inspect());
    const gateway = (info as { IPAM?: { Config?: Array<{ Gateway?: string }> } }).IPAM?.Config?.find((c) => c.Gateway)?.Gateway;
    if (!gateway) throw new AgentVmError('network_no_gateway', `agent ${agentId}'s network has no gateway address`, { status: 500 });
    hostAddresses.set(agentId, gateway);
    return gateway;
  }

  async function ensureWithAddress(spec: SandboxSpec): Promise<SandboxHandle> {
    const h = await ensureLocked(spec);
    // A started or new sandbox may hold anything (a restored workspace, another process's writes).
    if (h.action !== 'none' && h.action !== 'unpaused') forgetOutboxes(spec.agentId);
    return spec.network?.mode === 'internal' ? { ...h, hostAddress: await hostAddress(spec.agentId) } : h;
  }

  async function ensureLocked(spec: SandboxSpec): Promise<SandboxHandle> {
    const n = names(spec.agentId);
    await pausing.settle(spec.agentId);
    const choice = await runtimeFor(spec.runtime ?? options.runtime);
    const [id, existing] = await Promise.all([imageId(spec.image), inspect(n.container)]);
    const networkName = spec.network?.mode === 'internal' ? n.network : undefined;
    // Before the create body: the proxy address is the network's gateway, stable for the
    // network's life, so the spec hash stays the same from wake to wake.
    if (networkName) await ensureNetwork(spec.agentId);
    const proxyPort = spec.network?.mode === 'internal' ? spec.network.proxyPort : undefined;
    const env = proxyPort ? { ...spec.env, ...proxyEnv(await hostAddress(spec.agentId), proxyPort) } : spec.env;
    const body = createBody({
      spec: { ...spec, ...(env ? { env } : {}) }, containerName: n.container, volumeName: n.volume, networkName, engineRuntime: choice.engineRuntime, imageId: id,
      // The engine's resolver forwards only here, where the host firewall refuses port 53.
      hostAddress: networkName ? await hostAddress(spec.agentId) : undefined,
    });
    const ports = hostPortsOf(spec);
    const specHash = hashOf(ports.length > 0 ? { ...body, hostPorts: ports } : body);
    const handle = (containerId: string, action: SandboxHandle['action'], restoredFrom?: SandboxHandle['restoredFrom']): SandboxHandle => ({
      agentId: spec.agentId, containerId, runtime: choice.runtime, engineRuntime: choice.engineRuntime, specHash,
      image: spec.image, action, restored: restoredFrom !== undefined, ...(restoredFrom ? { restoredFrom } : {}),
    });

    let action: SandboxHandle['action'] = 'created';
    if (existing) {
      const state = existing.State;
      const same = existing.Config.Labels?.[LABELS.specHash] === specHash;
      if (same && state.Running && !state.Paused) return handle(existing.Id, 'none');
      if (same && state.Paused) {
        await call(() => docker.getContainer(existing.Id).unpause());
        pausing.mark(spec.agentId);
        return handle(existing.Id, 'unpaused');
      }
      if (same && (state.Status === 'created' || state.Status === 'exited')) {
        await guard(spec);
        await startContainer(existing.Id);
        return handle(existing.Id, 'started');
      }
      // A changed spec (or a dead container) is never reused: recreate, keeping the volume.
      log.info({ agent: spec.agentId, state: state.Status, changed: !same }, 'recreating sandbox');
      await call(() => docker.getContainer(existing.Id).remove({ force: true, v: false })).catch((err) => {
        if (!isNotFound(err)) throw err;
      });
      action = 'recreated';
    }

    // A missing volume comes back from the newest good snapshot generation, or the wake is refused.
    const restoredFrom = await snaps.ensureWorkspace(spec.agentId, id);
    await guard(spec);

    let containerId: string;
    try {
      const created = await call(() =>
        docker.createContainer({
          ...body,
          name: n.container,
          Labels: labels(spec.agentId, { [LABELS.specHash]: specHash, [LABELS.runtime]: choice.runtime }),
        }),
      );
      containerId = created.id;
    } catch (err) {
      if (!isConflict(err)) throw err;
      // Another process created it between our inspect and create: take the normal path.
      return ensureLocked(spec);
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
    return {
      agentId,
      containerId: info.Id,
      state: s.Paused ? 'paused' : s.Running ? 'running' : 'stopped',
      runtime: info.Config.Labels?.[LABELS.runtime],
      specHash: info.Config.Labels?.[LABELS.specHash],
      image: info.Config.Image,
      exitCode: s.Running ? undefined : s.ExitCode,
      oomKilled: s.OOMKilled === true,
    };
  }

  async function requireRunning(agentId: string, pausedOk = false): Promise<ContainerInspectInfo> {
    const info = await inspect(names(agentId).container);
    if (!info) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox; wake it first`, { status: 404 });
    if (!info.State.Running || (info.State.Paused && !pausedOk)) {
      throw new AgentVmError('sandbox_not_running', `agent ${agentId}'s sandbox is not running; wake it first`, { status: 409 });
    }
    return info;
  }

  const driver: SandboxDriver = {
    ensure(spec) {
      const valid = validateSpec(spec);
      return withLock(valid.agentId, () => ensureWithAddress(valid));
    },

    prepareNetwork(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        await ensureNetwork(agentId);
        return hostAddress(agentId);
      });
    },

    sleep(agentId) {
      assertAgentId(agentId);
      forgetOutboxes(agentId);
      return withLock(agentId, async () => {
        const info = await inspect(names(agentId).container);
        if (info) await snaps.stop(info);
      });
    },

    destroy(agentId, destroyOptions) {
      assertAgentId(agentId);
      forgetOutboxes(agentId);
      return withLock(agentId, async (): Promise<DestroyReport> => {
        const n = names(agentId);
        const finalSnapshot = await snaps.final(agentId, destroyOptions?.finalSnapshot !== false);
        hostAddresses.delete(agentId);
        const filter = { label: [`${LABELS.agent}=${agentId}`] };
        const removed = { containers: 0, volumes: 0, networks: 0 };
        const ignore404 = (err: unknown) => {
          if (!isNotFound(err)) throw err;
        };
        // By label, so strays from an interrupted create are removed too; then by name.
        const containers = await call(() => docker.listContainers({ all: true, filters: filter }));
        for (const c of containers) {
          await call(() => docker.getContainer(c.Id).remove({ force: true, v: false })).then(() => removed.containers++, ignore404);
        }
        await call(() => docker.getContainer(n.container).remove({ force: true })).then(() => removed.containers++, ignore404);
        await call(() => docker.getVolume(n.volume).remove()).then(() => removed.volumes++, ignore404);
        // Our own bridge name when the network is gone already (a retried destroy): its chain may not be.
        const bridge = await bridgeOf(agentId).catch(() => bridgeName(prefix, agentId));
        await call(() => docker.getNetwork(n.network).remove()).then(() => removed.networks++, ignore404);
        await unguardBridge(bridge).catch((err: unknown) => { if (!isAgentVmError(err, 'firewall_unavailable')) throw err; });

        const [c, v, nw] = await Promise.all([
          call(() => docker.listContainers({ all: true, filters: filter })),
          call(() => docker.listVolumes({ filters: filter })),
          call(() => docker.listNetworks({ filters: filter })),
        ]);
        const left = [
          ...c.map((x) => `container ${x.Id.slice(0, 12)}`),
          ...(v.Volumes ?? []).map((x) => `volume ${x.Name}`),
          ...nw.map((x) => `network ${x.Name}`),
          ...((await chainInstalled(bridge)) ? [`firewall chain ${chainFor(bridge)}`] : []),
        ];
        if (left.length > 0) {
          throw new AgentVmError('destroy_incomplete', `agent ${agentId} still has ${left.join(', ')} after destroy`, { status: 500 });
        }
        log.info({ agent: agentId, removed, finalSnapshot: finalSnapshot?.generation ?? null }, 'sandbox destroyed');
        return { agentId, removed, finalSnapshot };
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
        // No exit code at all means the exec died with its sandbox (gVisor's WaitPID fails with
        // EOF); the engine may take a moment longer to report the container stopped.
        for (let waited = 0; result.exitCode === null && !result.timedOut && after?.State.Running && waited < SANDBOX_STOP_SETTLE_MS; waited += 100) {
          await new Promise((r) => setTimeout(r, 100));
          after = await inspect(info.Id);
        }
        if (after && !after.State.Running) {
          result.sandboxStopped = { exitCode: after.State.ExitCode, oomKilled: after.State.OOMKilled === true };
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
      try {
        // The workspace is a volume, so the engine extracts into it even with a read-only root.
        await call(() => docker.getContainer(names(agentId).container).putArchive(archive, { path: WORKSPACE }));
      } catch (err) {
        if (isNotFound(err)) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox`, { status: 404 });
        throw err;
      }
      return written.map((n) => `${WORKSPACE}/${dir}/${n}`);
    },

    snapshot(agentId, meta) {
      assertAgentId(agentId);
      // Only the lookup takes the agent's lock: streaming a workspace out must not hold up a wake.
      // The store serializes writes; a sandbox removed meanwhile fails this snapshot, whole.
      return withLock(agentId, () => inspect(names(agentId).container)).then((info): Promise<SnapshotInfo> => {
        if (!info) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
        return snaps.take(agentId, info.Id, meta);
      });
    },

    restore(agentId, restoreOptions = {}) {
      assertAgentId(agentId);
      return withLock(agentId, () => snaps.restore(agentId, restoreOptions));
    },

    pause(agentId) {
      assertAgentId(agentId);
      return withLock(agentId, async () => {
        await pausing.settle(agentId);
        const info = await requireRunning(agentId, true);
        if (info.State.Paused) return;
        await call(() => docker.getContainer(info.Id).pause()).catch((err: unknown) => {
          if (!isConflict(err)) throw err; // paused by someone else meanwhile
        });
        pausing.mark(agentId);
      });
    },

    async status(agentId) {
      assertAgentId(agentId);
      return toStatus(agentId, await inspect(names(agentId).container));
    },

    async list() {
      const all = await call(() => docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } }));
      const infos = await Promise.all(all.map((c) => inspect(c.Id)));
      return infos
        .filter((i): i is ContainerInspectInfo => i !== undefined)
        .map((i) => toStatus(i.Config.Labels?.[LABELS.agent] ?? '?', i))
        .sort((a, b) => a.agentId.localeCompare(b.agentId));
    },

    async close() {
      // dockerode holds no pooled connections we own; pending operations finish on their own.
      await Promise.allSettled([...locks.values()]);
    },
  };
  return driver;
}

