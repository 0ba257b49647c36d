#!/usr/bin/env node
// Runs the compiled CLI (npm run build); from a source checkout without dist/, tells how.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (!existsSync(compiled)) {
  process.stderr.write('agent-vm: error: not built yet; run `npm run build` (or `npm start`) first\n');
  process.exit(1);
}
const { main } = await import(compiled);
const code = await main(process.argv.slice(2));
// `up` keeps serving; every other command ends here.
if (code !== 0 || !process.argv.slice(2).includes('up')) process.exitCode = code;
