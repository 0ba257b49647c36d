/** Wiring shared by the CLI commands: config → logger, store, sandbox driver. */
import path from 'node:path';
import type { Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { createDockerDriver } from './sandbox/docker/index.js';
import type { SandboxDriver } from './sandbox/types.js';
import { openStore, type Store } from './store/index.js';

export interface Context {
  config: Config;
  logger: Logger;
  store: Store;
  driver: SandboxDriver;
  close(): Promise<void>;
}

export function createDriver(config: Config, logger: Logger): SandboxDriver {
  return createDockerDriver({
    docker: config.docker,
    runtime: config.runtime,
    allowRunc: config.allowRunc,
    outbox: config.outbox,
    snapshotDir: path.join(config.dataDir, 'snapshots'),
    logger,
  });
}

export async function openContext(config: Config, logger = createLogger(config.logLevel)): Promise<Context> {
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  await store.migrate();
  const driver = createDriver(config, logger);
  let closed = false;
  return {
    config,
    logger,
    store,
    driver,
    async close() {
      if (closed) return;
      closed = true;
      const results = await Promise.allSettled([driver.close(), store.close()]);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    },
  };
}
