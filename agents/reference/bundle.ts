/**
 * Bundles the reference agent (agent.ts and its npm dependencies) into one self-contained ESM
 * file, because the sandbox image has `node` but no node_modules. The image builder calls
 * `bundleReferenceAgent(outFile)`; `build.mjs` is a CLI over the same function.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** Absolute path of the agent's entry point. */
export const REFERENCE_AGENT_ENTRY = fileURLToPath(new URL('./agent.ts', import.meta.url));

/** Default output: agents/reference/dist/agent.mjs (a build output, not committed). */
export const REFERENCE_AGENT_DEFAULT_OUT = fileURLToPath(new URL('./dist/agent.mjs', import.meta.url));

/** Bundle the reference agent to `outFile` (one .mjs, platform node, ESM, node20). */
export async function bundleReferenceAgent(outFile: string = REFERENCE_AGENT_DEFAULT_OUT): Promise<void> {
  const out = path.resolve(outFile);
  await mkdir(path.dirname(out), { recursive: true });
  const result = await build({
    entryPoints: [REFERENCE_AGENT_ENTRY],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minify: true,
    legalComments: 'none',
    sourcemap: false,
    logLevel: 'silent',
    // Some dependencies are CommonJS and call require() for node builtins.
    banner: {
      js: "import { createRequire as __refAgentCreateRequire } from 'module'; const require = __refAgentCreateRequire(import.meta.url);",
    },
  });
  if (result.errors.length > 0) {
    throw new Error(`bundling the reference agent failed: ${result.errors.map((e) => e.text).join('; ')}`);
  }
}
