/** Wiring shared by the CLI commands: config → logger, store, sandbox driver. */
import type { Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { createDockerDriver } from './sandbox/docker/index.js';
import { createSnapshotStore, type SnapshotStore } from './sandbox/snapshots/index.js';
import type { SandboxDriver } from './sandbox/types.js';
import { openStore, type Store } from './store/index.js';

export interface Context {
  config: Config;
  logger: Logger;
  store: Store;
  driver: SandboxDriver;
  /** Where the driver keeps workspace snapshot generations (AGENTVM_SNAPSHOT_URL). */
  snapshots: SnapshotStore;
  close(): Promise<void>;
}

/** The Docker driver on the configured snapshot store (made here when not given). */
export function createDriver(config: Config, logger: Logger, snapshots = createSnapshotStore(config.snapshots, config.dataDir)): SandboxDriver {
  return createDockerDriver({
    docker: config.docker,
    runtime: config.runtime,
    allowRunc: config.allowRunc,
    outbox: config.outbox,
    snapshots,
    logger,
  });
}

export async function openContext(config: Config, logger = createLogger(config.logLevel)): Promise<Context> {
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  await store.migrate();
  const snapshots = createSnapshotStore(config.snapshots, config.dataDir);
  const driver = createDriver(config, logger, snapshots);
  let closed = false;
  return {
    config,
    logger,
    store,
    driver,
    snapshots,
    async close() {
      if (closed) return;
      closed = true;
      const results = await Promise.allSettled([driver.close().then(() => snapshots.close()), store.close()]);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    },
  };
}
