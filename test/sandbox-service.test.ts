/**
 * The gateway's sandbox service records each wake, including the runtime the engine actually
 * used, on both storage backends.
 */
import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandboxService } from '../src/gateway/sandboxes.js';
import { openStore, type Store } from '../src/store/index.js';
import { agentId, tempDir } from './helpers/env.js';
import { createTestDatabase } from './helpers/pg.js';
import { makeDriver, spec } from './helpers/sandbox.js';

describe.each(['pglite', 'postgres'] as const)('sandbox service on %s', (backend) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  const driver = makeDriver();
  const a = agentId(`svc-${backend}`);

  beforeAll(async () => {
    if (backend === 'postgres') {
      const db = await createTestDatabase();
      store = await openStore({ databaseUrl: db.url, dataDir: tempDir('unused') });
      cleanup = db.drop;
    } else {
      const dir = tempDir('pglite');
      store = await openStore({ dataDir: dir });
      cleanup = () => fs.rm(dir, { recursive: true, force: true });
    }
    await store.migrate();
  });

  afterAll(async () => {
    await driver.destroy(a).catch(() => undefined);
    await store.close();
    await cleanup();
  });

  it('records wake, sleep and destroy with the runtime actually used', async () => {
    const svc = createSandboxService({ driver, store });
    const h = await svc.wake(spec(a), 'support');
    expect(h.runtime).toBe('runsc');
    let row = await store.agents.get(a);
    expect(row).toMatchObject({ id: a, profile: 'support', runtime: 'runsc', engineRuntime: 'runsc', state: 'running', containerId: h.containerId, specHash: h.specHash });
    expect(row?.lastWakeMs).toBeGreaterThan(0);

    await svc.sleep(a);
    expect((await store.agents.get(a))?.state).toBe('sleeping');
    expect((await driver.status(a)).state).toBe('stopped');

    await svc.wake(spec(a), 'support');
    expect((await store.agents.get(a))?.state).toBe('running');

    await svc.destroy(a);
    row = await store.agents.get(a);
    expect(row?.state).toBe('destroyed');
    expect((await driver.status(a)).state).toBe('missing');
  });
});
