/**
 * Workspace snapshots on the Docker engine: take a generation from a container's /workspace, and
 * fill a new workspace volume from a verified generation.
 *
 * A restore never presents a half-filled volume as the agent's: the volume is created together
 * with a helper container (one engine call, the volume's labels given as mount options) that is
 * never started; the archive goes in through the helper; the helper is removed only after the
 * whole archive is in. A helper still there means a restore was interrupted (a crash, a killed
 * gateway): the volume is discarded and the restore starts again. Errors discard it too.
 */
import { AgentVmError, describeError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { fromEngineArchive, restorable } from '../snapshots/archive.js';
import type { SnapshotManifest, SnapshotMeta, SnapshotStore } from '../snapshots/types.js';
import { chooseGeneration, type VerifiedGeneration } from '../snapshots/verify.js';
import type { RestoreOptions, RestoreReport, RestoredFrom, SnapshotInfo } from '../types.js';
import { isNotFound, isNotModified, type ContainerCreateOptions, type ContainerInspectInfo, type DockerClient } from './engine.js';
import { LABELS, SANDBOX_USER, WORKSPACE } from './hardening.js';

type MountVolumeOptions = NonNullable<NonNullable<NonNullable<ContainerCreateOptions['HostConfig']>['Mounts']>[number]['VolumeOptions']>;

/** On a restore helper: the generation being restored into the volume. */
export const RESTORE_LABEL = 'agent-vm.restore-generation';

export interface DockerSnapshotDeps {
  docker: DockerClient;
  store: SnapshotStore;
  log: Logger;
  call: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Helper containers are named after `container`; `volume` is the workspace restores fill. */
  names: (agentId: string) => { container: string; volume: string };
  /** The containers that mount that workspace (an agent's slots), the current one first. Default: `names().container`. */
  siblings?: (agentId: string) => Promise<ContainerInspectInfo[]>;
  labels: (agentId: string) => Record<string, string>;
  inspect: (name: string) => Promise<ContainerInspectInfo | undefined>;
  stopTimeoutSeconds: number;
  /** Spaces this driver's pause/unpause of one agent (pause.ts). */
  pausing?: { settle(agentId: string): Promise<void>; mark(agentId: string): void };
}

export function snapshotInfo(store: SnapshotStore, m: SnapshotManifest): SnapshotInfo {
  return {
    agentId: m.agentId, path: store.describe(m.agentId, m.generation), bytes: m.bytes,
    generation: m.generation, sha256: m.sha256, files: m.files, createdAt: m.createdAt,
  };
}

export function createDockerSnapshots(d: DockerSnapshotDeps) {
  const { docker, store, call } = d;
  const helperName = (agentId: string) => `${d.names(agentId).container}-restore`;
  const siblings = d.siblings ?? (async (agentId: string) => [await d.inspect(d.names(agentId).container)].filter((i): i is ContainerInspectInfo => i !== undefined));
  const ignore404 = (err: unknown) => {
    if (!isNotFound(err)) throw err;
  };

  /** A new generation from the container's /workspace (running, paused or stopped). */
  async function take(agentId: string, containerId: string, meta?: SnapshotMeta): Promise<SnapshotInfo> {
    let engine: NodeJS.ReadableStream;
    try {
      engine = await call(() => docker.getContainer(containerId).getArchive({ path: WORKSPACE }));
    } catch (err) {
      if (isNotFound(err)) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox to snapshot`, { status: 404 });
      throw err;
    }
    const { archive, counts } = fromEngineArchive(engine as import('node:stream').Readable);
    return snapshotInfo(store, await store.put(agentId, archive, counts, meta));
  }

  async function volumeExists(agentId: string): Promise<boolean> {
    try {
      await call(() => docker.getVolume(d.names(agentId).volume).inspect());
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async function removeVolume(agentId: string): Promise<void> {
    await call(() => docker.getVolume(d.names(agentId).volume).remove()).catch(ignore404);
  }

  /** A helper left by an interrupted restore: its volume is incomplete, so both go. */
  async function clearInterrupted(agentId: string): Promise<void> {
    const helper = await d.inspect(helperName(agentId));
    if (!helper) return;
    d.log.warn({ agent: agentId, generation: helper.Config.Labels?.[RESTORE_LABEL] }, 'an interrupted workspace restore was found; discarding its volume and restoring again');
    await call(() => docker.getContainer(helper.Id).remove({ force: true, v: false })).catch(ignore404);
    await removeVolume(agentId);
  }

  /** Creates the workspace volume from `v` through a never-started helper; on any failure, no volume is left. */
  async function fill(agentId: string, image: string, v: VerifiedGeneration): Promise<void> {
    const n = d.names(agentId);
    const helper = await call(() =>
      docker.createContainer({
        name: helperName(agentId),
        Image: image,
        Cmd: ['true'],
        User: SANDBOX_USER,
        NetworkDisabled: true,
        Labels: { [LABELS.agent]: agentId, [RESTORE_LABEL]: String(v.manifest.generation) },
        HostConfig: {
          NetworkMode: 'none', ReadonlyRootfs: true, CapDrop: ['ALL'],
          // The engine creates the volume with this container, labelled so destroy finds it.
          Mounts: [{ Type: 'volume', Source: n.volume, Target: WORKSPACE, ReadOnly: false, VolumeOptions: { Labels: d.labels(agentId) } as MountVolumeOptions }],
        },
      }),
    );
    try {
      await call(() => helper.putArchive(restorable(v.open()), { path: WORKSPACE }));
    } catch (err) {
      await call(() => helper.remove({ force: true, v: false })).catch(() => undefined);
      await removeVolume(agentId).catch(() => undefined);
      throw new AgentVmError('restore_failed', `agent ${agentId}: restoring snapshot generation ${v.manifest.generation} failed: ${describeError(err).slice(0, 300)}; no workspace was left behind`, { status: 500, retryable: true, cause: err });
    }
    await call(() => helper.remove({ force: true, v: false }));
  }

  function restoredFrom(v: VerifiedGeneration, skipped: RestoredFrom['skipped']): RestoredFrom {
    const m = v.manifest;
    return { generation: m.generation, sha256: m.sha256, createdAt: m.createdAt, skipped, ...(m.sessions ? { sessions: m.sessions } : {}), ...(m.release ? { release: m.release } : {}) };
  }

  /**
   * Before a container is created: makes sure the workspace volume exists. A missing volume is
   * restored from the newest good generation (skipped ones reported); with no generation at all it
   * is a first wake and the volume starts empty; with generations but none good, this throws
   * SnapshotRefusedError and creates nothing.
   */
  async function ensureWorkspace(agentId: string, image: string): Promise<RestoredFrom | undefined> {
    await clearInterrupted(agentId);
    if (await volumeExists(agentId)) return undefined;
    const choice = await chooseGeneration(store, agentId, { purpose: 'restore its workspace (the volume is gone)' });
    if (!choice.verified) {
      await call(() => docker.createVolume({ Name: d.names(agentId).volume, Labels: d.labels(agentId) }));
      return undefined;
    }
    try {
      await fill(agentId, image, choice.verified);
    } finally {
      await choice.verified.dispose();
    }
    d.log.info({ agent: agentId, generation: choice.verified.manifest.generation, skipped: choice.skipped }, 'workspace restored from snapshot');
    return restoredFrom(choice.verified, choice.skipped);
  }

  /** A generation from a workspace volume that has no container: read through a never-started one. */
  async function takeThroughReader(agentId: string, image: string, meta: SnapshotMeta): Promise<SnapshotInfo> {
    // A reader left by a crash holds the name; it never ran and holds nothing of its own.
    await call(() => docker.getContainer(`${d.names(agentId).container}-read`).remove({ force: true })).catch(ignore404);
    const reader = await call(() =>
      docker.createContainer({
        name: `${d.names(agentId).container}-read`, Image: image, Cmd: ['true'], User: SANDBOX_USER, NetworkDisabled: true,
        Labels: { [LABELS.agent]: agentId },
        HostConfig: { NetworkMode: 'none', ReadonlyRootfs: true, CapDrop: ['ALL'], Mounts: [{ Type: 'volume', Source: d.names(agentId).volume, Target: WORKSPACE, ReadOnly: true }] },
      }),
    );
    try {
      return await take(agentId, reader.id, meta);
    } finally {
      await call(() => reader.remove({ force: true, v: false })).catch(() => undefined);
    }
  }

  /** Stops the container (unpausing it first: a frozen process cannot take SIGTERM). */
  async function stop(info: ContainerInspectInfo): Promise<void> {
    const c = docker.getContainer(info.Id);
    if (info.State.Paused) await call(() => c.unpause()).catch(() => undefined);
    if (info.State.Paused) d.pausing?.mark(info.Name.replace(/^\//, ''));
    if (!info.State.Running) return;
    await call(() => c.stop({ t: d.stopTimeoutSeconds })).catch((err) => {
      if (!isNotModified(err) && !isNotFound(err)) throw err;
    });
  }

  /** See SandboxDriver.restore. Runs under the driver's per-agent lock. */
  async function restore(agentId: string, o: RestoreOptions): Promise<RestoreReport> {
    await clearInterrupted(agentId);
    const choice = await chooseGeneration(store, agentId, { purpose: 'restore', ...(o.generation !== undefined ? { generation: o.generation } : {}), ...(o.before !== undefined ? { before: o.before } : {}) });
    if (!choice.verified) throw new AgentVmError('snapshot_missing', `agent ${agentId} has no snapshots in ${store.location}`, { status: 404 });
    const v = choice.verified;
    try {
      // Every slot used the workspace being replaced: all are stopped, and removed with it.
      const all = await siblings(agentId);
      const info = all[0];
      const image = info?.Image ?? o.image;
      if (!image) throw new AgentVmError('restore_needs_image', `agent ${agentId} has no sandbox; name an image to restore its workspace through`, { status: 400 });
      let savedAs: SnapshotInfo | undefined;
      if (info) {
        for (const i of all) await stop(i);
        if (o.snapshotFirst !== false) {
          savedAs = await take(agentId, info.Id, { reason: 'pre-restore', ...o.meta }).catch((err: unknown) => {
            throw new AgentVmError('snapshot_failed', `agent ${agentId}: the workspace was not replaced: saving it first failed: ${describeError(err).slice(0, 300)}`, { status: 502, retryable: true, cause: err });
          });
        }
        for (const i of all) await call(() => docker.getContainer(i.Id).remove({ force: true, v: false })).catch(ignore404);
      } else if (o.snapshotFirst !== false && (await volumeExists(agentId))) {
        savedAs = await takeThroughReader(agentId, image, { reason: 'pre-restore', ...o.meta });
      }
      await removeVolume(agentId);
      await fill(agentId, image, v);
      d.log.info({ agent: agentId, generation: v.manifest.generation, savedAs: savedAs?.generation }, 'workspace replaced from snapshot');
      return { agentId, ...restoredFrom(v, choice.skipped), wasRunning: all.some((i) => i.State.Running), ...(savedAs ? { savedAs } : {}) };
    } finally {
      await v.dispose();
    }
  }

  /** The generation destroy takes first; a failure stops the destroy. No container: nothing to read. */
  async function final(agentId: string, wanted: boolean): Promise<SnapshotInfo | null> {
    const info = wanted ? (await siblings(agentId))[0] : undefined;
    if (!info) return null;
    return take(agentId, info.Id, { reason: 'destroy' }).catch((err: unknown) => {
      throw new AgentVmError('snapshot_failed', `agent ${agentId} was not destroyed: its final snapshot failed (${describeError(err).slice(0, 300)}); fix the snapshot store, or destroy without one (agent-vm agents destroy ${agentId} --no-snapshot)`, { status: 502, retryable: true, cause: err });
    });
  }

  return { take, ensureWorkspace, restore, clearInterrupted, stop, final, fill };
}
