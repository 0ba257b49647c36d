import Docker from 'dockerode';
import { afterAll } from 'vitest';
import { NAME_PREFIX } from '../src/sandbox/layout.js';
import { describeSandboxDriver } from './contracts/sandbox-driver.js';
import { REFERENCE_AGENT } from './helpers/gateway.js';
import { makeDriverWithSnapshots, spec } from './helpers/sandbox.js';

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const { driver, snapshots } = makeDriverWithSnapshots();
afterAll(() => driver.close());

describeSandboxDriver({
  name: 'docker + runsc',
  driver,
  snapshots,
  spec,
  referenceAgent: REFERENCE_AGENT,
  async loseWorkspace(id) {
    await docker.getContainer(`${NAME_PREFIX}-${id}`).remove({ force: true });
    await docker.getVolume(`${NAME_PREFIX}-${id}-workspace`).remove();
  },
  timeoutMs: 90_000,
});
