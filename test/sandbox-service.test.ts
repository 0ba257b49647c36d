/**
 * The gateway's sandbox service records each wake, including the runtime the engine actually
 * used, on both storage backends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandboxService } from '../src/gateway/sandboxes.js';
import type { Store } from '../src/store/index.js';
import { agentId } from './helpers/env.js';
import { makeDriver, spec } from './helpers/sandbox.js';
import { storeBackends } from './helpers/stores.js';

describe.each(storeBackends('svc'))('sandbox service on $kind', (backend) => {
  let store: Store;
  let close: () => Promise<void>;
  const driver = makeDriver();
  const a = agentId(`svc-${backend.kind}`);

  beforeAll(async () => {
    ({ store, close } = await backend.open());
  });

  afterAll(async () => {
    await driver.destroy(a).catch(() => undefined);
    await close();
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
