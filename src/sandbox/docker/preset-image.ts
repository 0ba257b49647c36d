/**
 * Builds a preset agent's image (Claude, Codex, Gemini) FROM the agent image, offline: the
 * agent's npm packages are installed on the host at exactly the pinned versions into a cache
 * directory keyed by those pins (a second build reuses it without touching npm), checked against
 * the pinned integrity hashes, trimmed to this platform, and copied into the image with the
 * preset's baked files (image/preset.Dockerfile). No registry is pulled from and nothing is
 * downloaded inside the image build.
 *
 * An image whose `agent-vm.preset-hash` label matches the inputs (pins, files, links, check,
 * Dockerfile and the base image's id) is left as it is: a rebuilt base means a rebuilt preset.
 *
 * Deliberately left out: what a preset is (command, env, which files): the caller passes a
 * recipe (governance/presets.ts has the data; the sandbox does not import governance).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DockerConnection } from '../../config.js';
import { AgentVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { connectDocker, engineError, type DockerClient } from './engine.js';
import { follow, imageLabels, run, stampMtimes } from './image.js';

const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const PRESET_LABELS = { preset: 'agent-vm.preset', version: 'agent-vm.preset-version', package: 'agent-vm.preset-package', hash: 'agent-vm.preset-hash' } as const;

export interface PresetImageRecipe {
  /** Preset name: the `agent-vm.preset` label and the cache directory's prefix. */
  name: string;
  /** Tag to build, e.g. agent-vm/agent-claude:latest. */
  image: string;
  /** Absolute install directory in the image, e.g. /opt/agent-vm/presets/claude. */
  installDir: string;
  /** Top-level packages; each must be in `packages`. */
  install: string[];
  /** Every package the install may bring in: exact version and registry integrity. */
  packages: Record<string, { version: string; integrity: string }>;
  /** Absolute image path → host file. */
  files: Record<string, string>;
  /** Symlinks in the install directory: name → target (relative); `{platform}` is e.g. linux-x64. */
  links: Record<string, string>;
  /** Install-relative directories of `<cpu>-<os>` children: only this platform's is kept. */
  platformDirs: string[];
  /** Shell command run in the build as the sandbox user. */
  check: string;
}

export interface PresetBuildOptions {
  docker: DockerConnection;
  /** The agent image to build FROM (AGENTVM_IMAGE); it must exist. */
  baseImage: string;
  /** Persists across builds: staged installs under presets/, npm's download cache under npm/. */
  cacheDir: string;
  recipe: PresetImageRecipe;
  /** Build even when the image's inputs hash matches. */
  force?: boolean;
  /** npm CPU to install for (default: this host's). */
  cpu?: 'x64' | 'arm64';
  logger: Logger;
}

export interface PresetBuildResult {
  preset: string;
  image: string;
  imageId: string;
  /** Version of the first top-level package (the `agent-vm.preset-version` label). */
  version: string;
  /** `built`: a new image; `unchanged`: the existing image already had these inputs. */
  action: 'built' | 'unchanged';
  /** The npm install was reused from the cache directory. */
  stageCached: boolean;
  sizeBytes: number;
  seconds: number;
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** What the npm install depends on: the same key means the same staged tree. */
function stageKey(r: PresetImageRecipe, cpu: string): string {
  return sha256(JSON.stringify({ v: 1, install: r.install, packages: r.packages, cpu, links: r.links, platformDirs: r.platformDirs })).slice(0, 16);
}

/** A package's name from its hidden-lockfile key (`node_modules/a/node_modules/@s/b` → `@s/b`). */
function lockName(key: string): string {
  return key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
}

/** Fails unless every installed package is pinned with the same version and integrity, and every top-level one is there. */
export function verifyInstalled(r: Pick<PresetImageRecipe, 'name' | 'install' | 'packages'>, lock: { packages?: Record<string, { version?: string; integrity?: string }> }): void {
  const seen = new Set<string>();
  for (const [key, p] of Object.entries(lock.packages ?? {})) {
    if (!key) continue;
    const name = lockName(key);
    const pin = r.packages[name];
    if (!pin) throw new AgentVmError('image_build_failed', `${r.name}: npm installed ${name}@${p.version}, which is not pinned in versions.json (re-pin with agents/presets/pin.mjs)`);
    if (pin.version !== p.version || pin.integrity !== p.integrity) {
      throw new AgentVmError('image_build_failed', `${r.name}: ${name}@${p.version} (${p.integrity}) does not match the pin ${pin.version} (${pin.integrity})`);
    }
    seen.add(name);
  }
  for (const name of r.install) if (!seen.has(name)) throw new AgentVmError('image_build_failed', `${r.name}: ${name} was not installed`);
}

/** npm's CPU name → the `<cpu>-<os>` directory names some packages ship (`x64-linux`). */
async function keepPlatform(root: string, dirs: string[], cpu: string): Promise<void> {
  for (const rel of dirs) {
    const dir = path.join(root, rel);
    if (!existsSync(dir)) throw new AgentVmError('image_build_failed', `platform directory ${rel} is not in the install (the package layout changed?)`);
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      if (entry.isDirectory() && /^[a-z0-9]+-(linux|darwin|win32)$/.test(entry.name) && entry.name !== `${cpu}-linux`) {
        await fs.rm(path.join(dir, entry.name), { recursive: true, force: true });
      }
    }
  }
}

/**
 * The install for these pins, from the cache or made now: `<cacheDir>/presets/<name>-<version>-<key>/`.
 * Made in a temporary sibling and renamed, so a build killed halfway leaves no half tree behind.
 */
async function stage(o: PresetBuildOptions, cpu: string, log: Logger): Promise<{ dir: string; cached: boolean }> {
  const r = o.recipe;
  const version = r.packages[r.install[0]!]!.version;
  const parent = path.join(o.cacheDir, 'presets');
  const dir = path.join(parent, `${r.name}-${version}-${stageKey(r, cpu)}`);
  if (existsSync(path.join(dir, 'node_modules'))) return { dir, cached: true };
  await fs.mkdir(parent, { recursive: true });
  const tmp = path.join(parent, `.tmp-${r.name}-${randomBytes(4).toString('hex')}`);
  try {
    await fs.mkdir(tmp);
    const pinned = (n: string) => r.packages[n]!.version;
    const overrides = Object.fromEntries(Object.keys(r.packages).filter((n) => !r.install.includes(n)).map((n) => [n, pinned(n)]));
    const pkg = { name: `agent-vm-preset-${r.name}`, private: true, dependencies: Object.fromEntries(r.install.map((n) => [n, pinned(n)])), overrides };
    await fs.writeFile(path.join(tmp, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
    log.info({ version }, 'npm install (pinned versions)');
    await run('npm', [
      'install', '--prefix', tmp, '--ignore-scripts', '--no-audit', '--no-fund', '--omit=dev', '--prefer-offline',
      '--os=linux', `--cpu=${cpu}`, '--libc=glibc', '--cache', path.join(o.cacheDir, 'npm'), '--loglevel=error',
    ]).done;
    verifyInstalled(r, JSON.parse(await fs.readFile(path.join(tmp, 'node_modules', '.package-lock.json'), 'utf8')));
    await keepPlatform(tmp, r.platformDirs, cpu);
    for (const [name, target] of Object.entries(r.links)) {
      const at = path.join(tmp, name);
      const to = target.replaceAll('{platform}', `linux-${cpu}`);
      if (!existsSync(path.resolve(path.dirname(at), to))) throw new AgentVmError('image_build_failed', `${r.name}: link ${name} -> ${to}: no such file in the install`);
      await fs.mkdir(path.dirname(at), { recursive: true });
      await fs.symlink(to, at);
    }
    await stampMtimes(tmp);
    await fs.rename(tmp, dir);
    return { dir, cached: false };
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

async function hashFiles(files: Record<string, string>): Promise<string> {
  const h = createHash('sha256');
  for (const [dest, src] of Object.entries(files).sort(([a], [b]) => a.localeCompare(b))) {
    const st = await fs.stat(src);
    h.update(`${dest}\0${st.mode & 0o111 ? 'x' : '-'}\0`).update(await fs.readFile(src)).update('\0');
  }
  return h.digest('hex');
}

export async function buildPresetImage(o: PresetBuildOptions): Promise<PresetBuildResult> {
  const r = o.recipe;
  const log = o.logger.child({ component: 'image', preset: r.name });
  const docker = connectDocker(o.docker);
  const started = performance.now();
  const cpu = o.cpu ?? (process.arch === 'arm64' ? 'arm64' : 'x64');
  const first = r.install[0];
  if (!first || !r.packages[first]) throw new AgentVmError('image_build_failed', `${r.name}: nothing to install`);
  const version = r.packages[first].version;
  const seconds = () => Math.round((performance.now() - started) / 100) / 10;
  try {
    const base = await docker.getImage(o.baseImage).inspect().catch(() => undefined);
    if (!base) throw new AgentVmError('image_build_failed', `base image ${o.baseImage} is missing; build it first (agent-vm image build)`);
    const dockerfile = await fs.readFile(path.join(PACKAGE_ROOT, 'image', 'preset.Dockerfile'));
    const hash = sha256(JSON.stringify({ key: stageKey(r, cpu), base: base.Id, files: await hashFiles(r.files), check: r.check, dir: r.installDir, dockerfile: sha256(dockerfile) }));
    const labels = await imageLabels(docker, r.image);
    if (!o.force && labels?.[PRESET_LABELS.hash] === hash) {
      const info = await docker.getImage(r.image).inspect();
      return { preset: r.name, image: r.image, imageId: info.Id, version, action: 'unchanged', stageCached: true, sizeBytes: info.Size, seconds: seconds() };
    }

    const staged = await stage(o, cpu, log);
    const ctx = await fs.mkdtemp(path.join(os.tmpdir(), `agentvm-preset-${r.name}-`));
    try {
      await fs.writeFile(path.join(ctx, 'Dockerfile'), dockerfile);
      await fs.mkdir(path.join(ctx, 'files'));
      for (const [dest, src] of Object.entries(r.files)) {
        if (!path.posix.isAbsolute(dest) || dest.split('/').includes('..')) throw new AgentVmError('image_build_failed', `${r.name}: file destination ${dest} must be an absolute path`);
        const at = path.join(ctx, 'files', dest);
        await fs.mkdir(path.dirname(at), { recursive: true });
        await fs.copyFile(src, at);
        await fs.chmod(at, (await fs.stat(src)).mode & 0o111 ? 0o755 : 0o644);
      }
      await stampMtimes(ctx);
      // Two roots in one context: the small build directory, and the staged install straight
      // from the cache (not copied), under its own name.
      const tar = run('tar', ['-c', '-C', ctx, '.', '-C', path.dirname(staged.dir), path.basename(staged.dir)], { stdout: 'pipe' });
      log.info({ image: r.image, base: o.baseImage, version }, 'building preset image');
      const stream = await docker.buildImage(tar.stdout as unknown as NodeJS.ReadableStream, {
        t: r.image,
        buildargs: { BASE_IMAGE: o.baseImage, PRESET_DIR: r.installDir, PRESET_SOURCE: path.basename(staged.dir), PRESET_CHECK: r.check },
        labels: {
          [PRESET_LABELS.preset]: r.name,
          [PRESET_LABELS.version]: version,
          [PRESET_LABELS.package]: r.install.map((n) => `${n}@${r.packages[n]!.version}`).join(' '),
          [PRESET_LABELS.hash]: hash,
        },
        rm: true,
        forcerm: true,
      });
      await Promise.all([follow(docker, stream, log), tar.done]);
    } finally {
      await fs.rm(ctx, { recursive: true, force: true });
    }
    const info = await docker.getImage(r.image).inspect();
    return { preset: r.name, image: r.image, imageId: info.Id, version, action: 'built', stageCached: staged.cached, sizeBytes: info.Size, seconds: seconds() };
  } catch (err) {
    if (err instanceof AgentVmError) throw err;
    throw engineError(err, o.docker);
  }
}

/** Preset images share the agent image's layers; this is what one adds on top of it. */
export async function imageSizes(docker: DockerConnection, image: string, base: string): Promise<{ total: number; added: number }> {
  const client: DockerClient = connectDocker(docker);
  const [a, b] = await Promise.all([client.getImage(image).inspect(), client.getImage(base).inspect()]);
  return { total: a.Size, added: a.Size - b.Size };
}
