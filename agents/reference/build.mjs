#!/usr/bin/env node
// Thin CLI over bundle.ts: `node agents/reference/build.mjs [outFile]`
// (default agents/reference/dist/agent.mjs). Loads the TypeScript through tsx (a devDependency).
import { tsImport } from 'tsx/esm/api';

const { bundleReferenceAgent, REFERENCE_AGENT_DEFAULT_OUT } = await tsImport('./bundle.ts', import.meta.url);
const out = process.argv[2] ?? REFERENCE_AGENT_DEFAULT_OUT;
await bundleReferenceAgent(out);
process.stderr.write(`reference agent bundled to ${out}\n`);
