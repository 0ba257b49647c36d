/**
 * Unit tests need no service: only the reference agent bundled for the fake driver to run on
 * this machine (esbuild, well under a second), and one migrated embedded database every fake
 * gateway starts from a copy of (test/helpers/pglite-template.ts).
 */
import { rmSync } from 'node:fs';
import type { TestProject } from 'vitest/node';
import { bundleReferenceAgent } from '../../agents/reference/bundle.js';
import { REFERENCE_AGENT_HOST_BUNDLE } from '../helpers/fake.js';
import { makePgliteTemplate } from '../helpers/pglite-template.js';
import { useRunTmp } from '../helpers/run-tmp.js';

export default async function setup(project: TestProject): Promise<() => void> {
  const removeRunTmp = useRunTmp();
  const [, template] = await Promise.all([bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE), makePgliteTemplate()]);
  project.provide('pgliteTemplate', template);
  return () => {
    rmSync(template, { recursive: true, force: true });
    removeRunTmp();
  };
}
