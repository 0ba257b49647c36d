import { createLogger } from '../../src/log.js';
import { createDockerDriver } from '../../src/sandbox/docker/index.js';
import type { SandboxDriver, SandboxSpec } from '../../src/sandbox/types.js';
import { TEST_IMAGE, tempDir, testConfig } from './env.js';

export function makeDriver(overrides: Record<string, string> = {}, snapshotDir = tempDir('snap')): SandboxDriver {
  const cfg = testConfig(overrides);
  return createDockerDriver({
    docker: cfg.docker,
    runtime: cfg.runtime,
    allowRunc: cfg.allowRunc,
    outbox: cfg.outbox,
    snapshotDir,
    logger: createLogger('silent'),
    stopTimeoutSeconds: 2,
  });
}

export function spec(agentId: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { agentId, image: TEST_IMAGE, limits: { cpus: 1, memoryMiB: 256, pids: 128 }, ...extra };
}

/** Runs a shell snippet in the sandbox and returns the result. */
export function sh(driver: SandboxDriver, agentId: string, script: string, timeoutMs = 20_000) {
  return driver.exec(agentId, ['sh', '-c', script], { timeoutMs });
}
