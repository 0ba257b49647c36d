/**
 * Snapshot restore on the real engine (runsc), where the contract suite cannot reach: a restore
 * interrupted by a crash, a hostile archive that got past verification (defence in depth: the
 * engine itself would follow a planted symlink into the container's read-only root), symlinks
 * the agent made that point out of the workspace, and a restore through a volume with no
 * container. Runs with the driver's own local store.
 */
import { Readable } from 'node:stream';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { isAgentVmError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { NAME_PREFIX } from '../src/sandbox/layout.js';
import { createDockerSnapshots, RESTORE_LABEL } from '../src/sandbox/docker/snapshot.js';
import { tarOf } from './contracts/snapshot-store.js';
import { agentId } from './helpers/env.js';
import { makeDriverWithSnapshots, sh, spec } from './helpers/sandbox.js';

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const { driver, snapshots } = makeDriverWithSnapshots();
const created = new Set<string>();
const id = (label: string) => {
  const a = agentId(label);
  created.add(a);
  return a;
};
const names = (a: string) => ({ container: `${NAME_PREFIX}-${a}`, volume: `${NAME_PREFIX}-${a}-workspace` });

afterAll(async () => {
  for (const a of created) {
    await driver.destroy(a, { finalSnapshot: false }).catch(() => undefined);
    await snapshots.remove(a).catch(() => undefined);
  }
  await driver.close();
});

async function volumeExists(a: string): Promise<boolean> {
  return docker.getVolume(names(a).volume).inspect().then(() => true, () => false);
}

async function loseWorkspace(a: string): Promise<void> {
  await docker.getContainer(names(a).container).remove({ force: true });
  await docker.getVolume(names(a).volume).remove();
}

describe('workspace restore on the engine', () => {
  it('discards a restore interrupted half-way (its helper is still there) and restores again', async () => {
    const a = id('interrupted');
    await driver.ensure(spec(a));
    await sh(driver, a, 'echo whole > /workspace/w');
    await driver.snapshot(a);
    await loseWorkspace(a);
    // What a gateway killed mid-restore leaves: the never-started helper with a half-filled volume.
    const image = (await docker.getImage(spec(a).image).inspect()).Id;
    const helper = await docker.createContainer({
      name: `${names(a).container}-restore`, Image: image, Cmd: ['true'], Labels: { 'agent-vm.agent': a, [RESTORE_LABEL]: '1' },
      HostConfig: { Mounts: [{ Type: 'volume', Source: names(a).volume, Target: '/workspace' }] },
    });
    const half = await tarOf([{ name: 'half-written', data: 'partial' }]);
    await helper.putArchive(Readable.from([half.bytes]), { path: '/workspace' });
    const back = await driver.ensure(spec(a));
    expect(back.restoredFrom?.generation).toBe(1);
    expect((await sh(driver, a, 'cat /workspace/w; ls /workspace')).stdout).not.toContain('half-written');
    expect((await sh(driver, a, 'cat /workspace/w')).stdout).toBe('whole\n');
    expect(await docker.getContainer(`${names(a).container}-restore`).inspect().then(() => 'there', () => 'gone')).toBe('gone');
  }, 90_000);

  it('refuses a hostile archive even past verification: nothing planted in the root, no volume left', async () => {
    const a = id('pastverify');
    const image = (await docker.getImage(spec(a).image).inspect()).Id;
    const ops = createDockerSnapshots({
      docker, store: snapshots, log: createLogger('silent'), names,
      call: (fn) => fn(), inspect: (n) => docker.getContainer(n).inspect().catch(() => undefined),
      labels: (x) => ({ 'agent-vm.managed': 'true', 'agent-vm.agent': x }), stopTimeoutSeconds: 2,
    });
    const evil = await tarOf([
      { name: 'ok.txt', data: 'fine' },
      { name: 'etc-link', type: 'symlink', linkname: '/etc' },
      { name: 'etc-link/agentvm-planted', data: 'planted' },
    ]);
    // Straight into the store with a true manifest, then chosen as if verification had passed.
    await snapshots.put(a, Readable.from([evil.bytes]), evil.counts);
    const bypass = { manifest: (await snapshots.list(a))[0]!.manifest!, open: () => Readable.from([evil.bytes]), dispose: async () => undefined };
    const err = await ops.fill(a, image, bypass).catch((e: unknown) => e);
    expect(isAgentVmError(err, 'restore_failed')).toBe(true);
    expect((err as Error).message).toMatch(/unsafe snapshot entry: entry "etc-link\/agentvm-planted" lies under symlink/);
    expect(await volumeExists(a)).toBe(false);
    expect(await docker.listContainers({ all: true, filters: { label: [`agent-vm.agent=${a}`] } })).toEqual([]);
  }, 90_000);

  it("restores symlinks the agent made, including relative ones that point out of the workspace", async () => {
    const a = id('links');
    await driver.ensure(spec(a));
    await sh(driver, a, 'cd /workspace && ln -s ../../../etc up && ln -s /etc/hostname host && mkdir d && ln -s ../d/x d/y && echo x > d/x');
    await driver.snapshot(a);
    await loseWorkspace(a);
    const back = await driver.ensure(spec(a));
    expect(back.restoredFrom?.skipped).toEqual([]);
    const r = await sh(driver, a, 'readlink /workspace/up /workspace/host /workspace/d/y; cat /workspace/d/y; test -e /workspace/up/passwd && echo resolves; find /workspace/d/x -printf "%U\\n"');
    // The escaping relative link comes back as the absolute path it resolved to (the engine refuses it as written).
    expect(r.stdout).toBe('/etc\n/etc/hostname\n../d/x\nx\nresolves\n1000\n');
  }, 90_000);

  it('restore through a volume whose container is gone saves it first, through a reader that never starts', async () => {
    const a = id('novol');
    await driver.ensure(spec(a));
    await sh(driver, a, 'echo one > /workspace/s');
    await driver.snapshot(a);
    await sh(driver, a, 'echo two > /workspace/s');
    await driver.sleep(a);
    await docker.getContainer(names(a).container).remove({ force: true });
    expect(await code(driver.restore(a, { generation: 1 }))).toBe('restore_needs_image');
    const r = await driver.restore(a, { generation: 1, image: spec(a).image });
    expect(r).toMatchObject({ generation: 1, wasRunning: false });
    expect(r.savedAs?.generation).toBe(2);
    await driver.ensure(spec(a));
    expect((await sh(driver, a, 'cat /workspace/s')).stdout).toBe('one\n');
    const saved = await driver.restore(a, { generation: 2, snapshotFirst: false });
    expect(saved.savedAs).toBeUndefined();
    await driver.ensure(spec(a));
    expect((await sh(driver, a, 'cat /workspace/s')).stdout).toBe('two\n');
    const leftovers = await docker.listContainers({ all: true, filters: { label: [`agent-vm.agent=${a}`] } });
    expect(leftovers.map((c) => c.Names[0])).toEqual([`/${names(a).container}`]);
  }, 90_000);
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return isAgentVmError(err) ? err.code : String(err);
  }
}
