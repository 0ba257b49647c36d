/**
 * Unit tests need no service: only the reference agent bundled for the fake driver to run on
 * this machine (esbuild, well under a second).
 */
import { bundleReferenceAgent } from '../../agents/reference/bundle.js';
import { REFERENCE_AGENT_HOST_BUNDLE } from '../helpers/fake.js';

export default async function setup(): Promise<void> {
  await bundleReferenceAgent(REFERENCE_AGENT_HOST_BUNDLE);
}
