/** The fake sandbox driver as unit tests use it: the reference agent runs from a local bundle. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createFakeDriver, type FakeDriver } from '../../src/sandbox/fake.js';
import type { SandboxSpec } from '../../src/sandbox/types.js';
import { tempDir } from './env.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Built by test/unit/setup.ts. */
export const REFERENCE_AGENT_HOST_BUNDLE = path.join(ROOT, 'node_modules', '.cache', 'agent-vm', 'reference-agent.mjs');
/** The path the agent image runs the reference agent from. */
export const REFERENCE_AGENT_IN_IMAGE = '/opt/agent-vm/agents/reference/agent.mjs';

export function makeFakeDriver(): FakeDriver {
  return createFakeDriver({
    root: tempDir('fake'),
    outbox: { maxFileBytes: 25 * 1024 * 1024, maxTotalBytes: 100 * 1024 * 1024, maxFiles: 20 },
    programs: { [REFERENCE_AGENT_IN_IMAGE]: [REFERENCE_AGENT_HOST_BUNDLE] },
    path: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
  });
}

export function fakeSpec(agentId: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { agentId, image: 'fake', limits: { cpus: 1, memoryMiB: 256, pids: 128 }, ...extra };
}

