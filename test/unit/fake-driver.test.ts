import { afterAll } from 'vitest';
import { describeSandboxDriver } from '../contracts/sandbox-driver.js';
import { fakeSpec, makeFakeDriver, REFERENCE_AGENT_IN_IMAGE } from '../helpers/fake.js';

const driver = makeFakeDriver();
afterAll(() => driver.close());

describeSandboxDriver({
  name: 'fake',
  driver,
  snapshots: driver.snapshots,
  spec: fakeSpec,
  referenceAgent: ['node', REFERENCE_AGENT_IN_IMAGE],
  loseWorkspace: (id) => driver.loseWorkspace(id),
  timeoutMs: 20_000,
});
