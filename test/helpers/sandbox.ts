import { createLogger } from '../../src/log.js';
import { createDockerDriver } from '../../src/sandbox/docker/index.js';
import { createLocalSnapshotStore } from '../../src/sandbox/snapshots/local.js';
import type { SnapshotStore } from '../../src/sandbox/snapshots/types.js';
import type { SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';
import { TEST_IMAGE, tempDir, testConfig } from './env.js';

export function makeDriver(overrides: Record<string, string> = {}, snapshotDir = tempDir('snap')): SandboxDriver {
  return makeDriverWithSnapshots(overrides, createLocalSnapshotStore({ dir: snapshotDir })).driver;
}

/** The Docker driver and the snapshot store it writes to. */
export function makeDriverWithSnapshots(overrides: Record<string, string> = {}, snapshots: SnapshotStore = createLocalSnapshotStore({ dir: tempDir('snap') })): { driver: SandboxDriver; snapshots: SnapshotStore } {
  const cfg = testConfig(overrides);
  const driver = createDockerDriver({
    docker: cfg.docker,
    runtime: cfg.runtime,
    allowRunc: cfg.allowRunc,
    outbox: cfg.outbox,
    snapshots,
    logger: createLogger('silent'),
    stopTimeoutSeconds: 2,
  });
  return { driver, snapshots };
}

export function spec(agentId: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { agentId, image: TEST_IMAGE, limits: { cpus: 1, memoryMiB: 256, pids: 128 }, ...extra };
}

/** Runs a shell snippet in the sandbox and returns the result. */
export function sh(driver: SandboxDriver, agentId: string, script: string, timeoutMs = 20_000) {
  return driver.exec(agentId, ['sh', '-c', script], { timeoutMs });
}
