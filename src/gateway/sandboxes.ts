/**
 * The gateway's view of agent sandboxes: every wake, sleep and destroy goes through the driver
 * and is recorded in the database, including the runtime the engine actually used.
 */
import type { SandboxDriver, SandboxHandle, SandboxSpec, DestroyOptions, DestroyReport } from '../sandbox/types.js';
import type { Store } from '../store/index.js';
import { noopMetrics, wakeKind, type Metrics, type PoolOutcome } from '../metrics.js';

export interface SandboxService {
  /** `pool` tells whether this wake was a warm-pool hit or miss (for the wake metric). */
  wake(spec: SandboxSpec, profile?: string, opts?: { pool?: (h: SandboxHandle) => PoolOutcome }): Promise<SandboxHandle & { wakeMs: number }>;
  sleep(agentId: string): Promise<void>;
  destroy(agentId: string, options?: DestroyOptions): Promise<DestroyReport>;
}

export function createSandboxService(deps: { driver: SandboxDriver; store: Store; metrics?: Metrics }): SandboxService {
  const { driver, store } = deps;
  const metrics = deps.metrics ?? noopMetrics;
  return {
    async wake(spec, profile, opts) {
      const started = performance.now();
      const handle = await driver.ensure(spec);
      const wakeMs = Math.round(performance.now() - started);
      await store.agents.upsertAwake({
        id: handle.agentId,
        profile: profile ?? null,
        runtime: handle.runtime,
        engineRuntime: handle.engineRuntime,
        image: handle.image,
        specHash: handle.specHash,
        containerId: handle.containerId,
        wakeMs,
      });
      metrics.wake(profile ?? handle.agentId, wakeKind(handle), wakeMs, opts?.pool?.(handle) ?? 'none');
      return { ...handle, wakeMs };
    },
    async sleep(agentId) {
      await driver.sleep(agentId);
      await store.agents.markSleeping(agentId);
    },
    async destroy(agentId, options) {
      const report = await driver.destroy(agentId, options);
      await store.agents.markDestroyed(agentId);
      return report;
    },
  };
}
