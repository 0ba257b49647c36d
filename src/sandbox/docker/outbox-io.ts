/**
 * Reading and clearing a conversation's outbox through the engine: the archive endpoint (never
 * code in the sandbox) for reading, validated by ../outbox.ts; `rm` in the sandbox for clearing.
 *
 * The common case — a turn that wrote no file — costs no engine call when the workspace volume is
 * on this machine (a local engine): the outbox is looked at host-side, each path component from
 * the volume's root checked with lstat to be a real directory (no symlink is ever followed), and
 * only its first entry read, never a file's name or contents beyond "there is one". Anything but
 * a real, empty directory goes to the engine's archive as before. With a remote engine it costs
 * one HEAD: a directory this driver saw or left empty is only read again when its mtime says
 * something was added or removed since the turn began. The engine reports whole seconds, so only
 * an mtime clearly before the turn counts. (bench:turn: the HEAD was 2 ms p50, 40 ms p95 under
 * runsc; the host-side look is well under a millisecond.)
 */
import { lstat, opendir } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { AgentVmError } from '../../errors.js';
import { relativeName, WORKSPACE, workspaceDir } from '../layout.js';
import { readOutboxTar } from '../outbox.js';
import { assertAgentId } from '../spec.js';
import type { ExecOptions, ExecResult, OutboxEntry, OutboxLimits } from '../types.js';
import { isNotFound, type ContainerInspectInfo, type DockerClient } from './engine.js';

const MTIME_MARGIN_MS = 2_000;

export function createOutboxIo(o: {
  docker: DockerClient;
  call: <T>(fn: () => Promise<T>) => Promise<T>;
  inspect: (name: string) => Promise<ContainerInspectInfo | undefined>;
  /** The container to read through: any slot mounting the workspace (they all see the same files). */
  container: (agentId: string) => Promise<string>;
  exec: (agentId: string, command: string[], opts: ExecOptions) => Promise<ExecResult>;
  limits: OutboxLimits;
}) {
  /** Outbox directories seen or left empty (agent NUL dir); forgotten when the sandbox changes. */
  const empty = new Set<string>();
  /** The workspace volume's directory on this machine, per container (null: not reachable here). */
  const hostRoots = new Map<string, string | null>();
  /**
   * The same, per agent, once found: every slot a view reads through mounts the one workspace
   * volume, whose directory is fixed by its name, so the common case needs no engine call at all
   * (finding the current slot costs two inspects). Forgotten with the sandbox; a volume gone
   * since fails the lstat and the read goes the engine's way.
   */
  const agentRoots = new Map<string, string>();

  async function hostRoot(container: string): Promise<string | null> {
    const known = hostRoots.get(container);
    if (known !== undefined) return known;
    const info = await o.inspect(container).catch(() => undefined);
    const mount = info?.Mounts?.find((m) => m.Destination === WORKSPACE && m.Type === 'volume');
    let root: string | null = null;
    if (mount?.Source && path.isAbsolute(mount.Source)) {
      const st = await lstat(mount.Source).catch(() => undefined);
      if (st?.isDirectory()) root = mount.Source;
    }
    hostRoots.set(container, root);
    return root;
  }

  /** True only when `rel` under the volume is a real directory (no symlink on the way) with no entry. */
  async function emptyOnHost(root: string | null, rel: string): Promise<boolean> {
    if (!root) return false;
    let at = root;
    for (const part of rel.split('/')) {
      at = path.join(at, part);
      const st = await lstat(at).catch(() => undefined);
      if (!st?.isDirectory()) return false;
    }
    const dir = await opendir(at).catch(() => undefined);
    if (!dir) return false;
    try {
      return (await dir.read()) === null;
    } finally {
      await dir.close().catch(() => undefined);
    }
  }

  async function pathMtime(container: string, path: string): Promise<number | undefined> {
    try {
      const res = (await o.docker.getContainer(container).infoArchive({ path })) as unknown as { headers?: Record<string, string>; resume?: () => void };
      res.resume?.();
      const raw = res.headers?.['x-docker-container-path-stat'];
      if (!raw) return undefined;
      const stat = JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as { mtime?: string };
      const t = stat.mtime ? Date.parse(stat.mtime) : NaN;
      return Number.isFinite(t) ? t : undefined;
    } catch {
      return undefined;
    }
  }

  return {
    forget(agentId: string): void {
      for (const k of empty) if (k.startsWith(`${agentId}\u0000`)) empty.delete(k);
      hostRoots.clear();
      agentRoots.delete(agentId);
    },

    async *read(agentId: string, dir: string, limits?: Partial<OutboxLimits>, opts?: { unchangedSince?: Date }): AsyncGenerator<OutboxEntry> {
      assertAgentId(agentId);
      const rel = workspaceDir(dir);
      const known = agentRoots.get(agentId);
      if (known !== undefined && (await emptyOnHost(known, rel))) return;
      const name = await o.container(agentId);
      const key = `${agentId}\u0000${name}\u0000${rel}`;
      const inside = `${WORKSPACE}/${rel}`;
      const root = await hostRoot(name);
      if (root) agentRoots.set(agentId, root);
      if (root !== known && (await emptyOnHost(root, rel))) return;
      if (opts?.unchangedSince && empty.has(key)) {
        const mtime = await pathMtime(name, inside);
        if (mtime !== undefined && mtime < opts.unchangedSince.getTime() - MTIME_MARGIN_MS) return;
      }
      empty.delete(key);
      let archive: NodeJS.ReadableStream;
      try {
        archive = await o.call(() => o.docker.getContainer(name).getArchive({ path: inside }));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        if (!(await o.inspect(name))) throw new AgentVmError('sandbox_missing', `agent ${agentId} has no sandbox`, { status: 404 });
        return; // no such directory: nothing to send
      }
      let entries = 0;
      yield* readOutboxTar(archive as Readable, rel.split('/').pop()!, { ...o.limits, ...limits }, () => entries++);
      if (entries === 0) empty.add(key);
    },

    async remove(agentId: string, dir: string, files: string[]): Promise<void> {
      assertAgentId(agentId);
      const rel = workspaceDir(dir);
      if (files.length === 0) return;
      const root = `${WORKSPACE}/${rel}`;
      const paths = files.map((f) => `${root}/${relativeName(f)}`);
      // Remove what was taken, then directories left empty, then say whether anything is left.
      const script = 'root="$1"; shift; rm -rf -- "$@" && find "$root" -mindepth 1 -depth -type d -empty -delete && find "$root" -mindepth 1 -print -quit';
      const r = await o.exec(agentId, ['sh', '-c', script, 'sh', root, ...paths], { timeoutMs: 10_000 });
      if (r.exitCode !== 0) {
        throw new AgentVmError('remove_failed', `could not remove files from ${rel}: ${r.stderr.slice(0, 300) || `exit ${r.exitCode}`}`, { status: 500, retryable: true });
      }
      if (r.stdout.trim() === '') empty.add(`${agentId}\u0000${await o.container(agentId)}\u0000${rel}`);
    },
  };
}
