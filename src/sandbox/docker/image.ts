/**
 * Builds the agent runtime image with no registry: a Debian base made by debootstrap and
 * imported into the engine, then image/Dockerfile on top with the host's node binary copied
 * in. With `base` set (e.g. node:22-bookworm-slim) the same Dockerfile builds from a registry.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import type { DockerConnection } from '../../config.js';
import { AgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { connectDocker, engineError, isNotFound, type DockerClient } from './engine.js';

export const DEFAULT_BASE_IMAGE = 'agent-vm/base:bookworm';
/**
 * Debian packages added to debootstrap's minbase. libssl3 is what the Codex preset's native
 * binary links (libssl.so.3, libcrypto.so.3); about 6 MB, so every preset builds FROM one base.
 */
const BASE_PACKAGES = ['libssl3'];
/** Bumped whenever the base recipe changes: a base with another value is rebuilt by `image build`. */
const BASE_RECIPE = `2:${BASE_PACKAGES.join(',')}`;
const BASE_RECIPE_LABEL = 'agent-vm.base-recipe';
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface ImageBuildOptions {
  docker: DockerConnection;
  /** Tag of the image to build (config: AGENTVM_IMAGE). */
  image: string;
  /** A registry base that already has node; when unset the debootstrap base is used. */
  base?: string;
  /** Rebuild the debootstrap base even when it exists. */
  rebuildBase?: boolean;
  mirror?: string;
  nodeBinary?: string;
  logger: Logger;
}

export interface ImageBuildResult {
  image: string;
  imageId: string;
  base: string;
  baseBuilt: boolean;
  sizeBytes: number;
  seconds: number;
}

export function run(cmd: string, args: string[], opts: { stdout?: 'pipe' | 'ignore' } = {}): { done: Promise<void>; stdout: Readable | null } {
  const child = spawn(cmd, args, { stdio: ['ignore', opts.stdout ?? 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (err) =>
      reject(new AgentVmError('image_build_failed', `cannot run ${cmd}: ${err.message}`, { cause: err })),
    );
    child.once('close', (code) =>
      code === 0
        ? resolve()
        : reject(new AgentVmError('image_build_failed', `${cmd} exited with ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`)),
    );
  });
  return { done, stdout: child.stdout };
}

/**
 * The legacy builder's cache key includes file times; a fixed time makes identical inputs give
 * an identical image in any checkout, so agents are not re-created after every fresh install.
 */
export async function stampMtimes(dir: string): Promise<void> {
  const epoch = new Date('2000-01-01T00:00:00Z');
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    await fs.utimes(path.join(entry.parentPath, entry.name), epoch, epoch);
  }
  await fs.utimes(dir, epoch, epoch);
}

/**
 * Each agent under agents/<name>/ ships its built output (dist/) as /opt/agent-vm/agents/<name>/
 * in the image: one self-contained file per agent, no sources or tests. agents/presets/ is the
 * data of the preset images (preset-image.ts), not an agent of this image.
 */
async function stageAgents(src: string, dest: string): Promise<void> {
  await fs.mkdir(dest, { recursive: true });
  for (const entry of await fs.readdir(src, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === 'presets') continue;
    const dist = path.join(src, entry.name, 'dist');
    if (!existsSync(dist)) {
      throw new AgentVmError('image_build_failed', `agents/${entry.name} is not built (no ${dist}); run \`npm run build\` first`);
    }
    await fs.cp(dist, path.join(dest, entry.name), { recursive: true });
  }
}

/** The image's labels ({} when it has none), or undefined when there is no such image. */
export async function imageLabels(docker: DockerClient, name: string): Promise<Record<string, string> | undefined> {
  try {
    const info = await docker.getImage(name).inspect();
    return info.Config?.Labels ?? {};
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Follows a build/import progress stream and turns an error message in it into an exception. */
export async function follow(docker: DockerClient, stream: NodeJS.ReadableStream, log: Logger): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null, out: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
        const failed = out?.find((o) => o.error || o.errorDetail);
        if (err) reject(err);
        else if (failed) reject(new AgentVmError('image_build_failed', failed.errorDetail?.message ?? failed.error ?? 'build failed'));
        else resolve();
      },
      (event: { stream?: string }) => {
        const line = event.stream?.trim();
        if (line) log.debug({ line }, 'build');
      },
    );
  });
}

async function buildBase(docker: DockerClient, o: ImageBuildOptions, log: Logger): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new AgentVmError('image_build_failed', 'building the Debian base needs root (debootstrap); run as root or pass --base IMAGE');
  }
  if (!existsSync('/usr/sbin/debootstrap')) {
    throw new AgentVmError('image_build_failed', 'debootstrap is not installed: apt-get install -y debootstrap (or run scripts/host-setup.sh)');
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-rootfs-'));
  try {
    log.info({ mirror: o.mirror }, 'debootstrap: building the Debian base (about 30 s)');
    await run('debootstrap', ['--variant=minbase', `--include=${BASE_PACKAGES.join(',')}`, 'bookworm', dir, o.mirror ?? 'http://deb.debian.org/debian']).done;
    // Package caches are dead weight in every sandbox.
    for (const sub of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      await fs.rm(path.join(dir, sub), { recursive: true, force: true });
      await fs.mkdir(path.join(dir, sub), { recursive: true });
    }
    const tar = run('tar', ['-C', dir, '-c', '.'], { stdout: 'pipe' });
    const [repo, tag] = DEFAULT_BASE_IMAGE.split(':') as [string, string];
    const stream = await docker.importImage(tar.stdout as unknown as NodeJS.ReadableStream, { repo, tag, changes: [`LABEL ${BASE_RECIPE_LABEL}=${BASE_RECIPE}`] });
    await Promise.all([follow(docker, stream, log), tar.done]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export async function buildAgentImage(o: ImageBuildOptions): Promise<ImageBuildResult> {
  const log = o.logger.child({ component: 'image' });
  const docker = connectDocker(o.docker);
  const started = performance.now();
  try {
    const base = o.base ?? DEFAULT_BASE_IMAGE;
    let baseBuilt = false;
    if (!o.base && (o.rebuildBase || (await imageLabels(docker, base))?.[BASE_RECIPE_LABEL] !== BASE_RECIPE)) {
      await buildBase(docker, o, log);
      baseBuilt = true;
    }

    const ctx = await fs.mkdtemp(path.join(os.tmpdir(), `agentvm-image-${randomBytes(3).toString('hex')}-`));
    try {
      await fs.copyFile(path.join(PACKAGE_ROOT, 'image', 'Dockerfile'), path.join(ctx, 'Dockerfile'));
      await stageAgents(path.join(PACKAGE_ROOT, 'agents'), path.join(ctx, 'agents'));
      await fs.mkdir(path.join(ctx, 'node'));
      if (!o.base) {
        // Our Debian base has no node: bring the host's (same glibc family: bookworm).
        await fs.copyFile(o.nodeBinary ?? process.execPath, path.join(ctx, 'node', 'node'));
        await fs.chmod(path.join(ctx, 'node', 'node'), 0o755);
      }
      await stampMtimes(ctx);
      const tar = run('tar', ['-C', ctx, '-c', '.'], { stdout: 'pipe' });
      log.info({ image: o.image, base }, 'building agent image');
      const stream = await docker.buildImage(tar.stdout as unknown as NodeJS.ReadableStream, {
        t: o.image,
        buildargs: { BASE_IMAGE: base },
        rm: true,
        forcerm: true,
      });
      await Promise.all([follow(docker, stream, log), tar.done]);
    } finally {
      await fs.rm(ctx, { recursive: true, force: true });
    }
    const info = await docker.getImage(o.image).inspect();
    return { image: o.image, imageId: info.Id, base, baseBuilt, sizeBytes: info.Size, seconds: Math.round((performance.now() - started) / 100) / 10 };
  } catch (err) {
    if (err instanceof AgentVmError) throw err;
    throw engineError(err, o.docker);
  }
}
