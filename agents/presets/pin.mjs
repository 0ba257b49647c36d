#!/usr/bin/env node
// Re-pins one preset in versions.json from the npm registry:
//   node agents/presets/pin.mjs claude @zed-industries/claude-agent-acp@0.23.1
//   node agents/presets/pin.mjs codex  @zed-industries/codex-acp@0.16.0
//   node agents/presets/pin.mjs gemini @google/gemini-cli@0.61.0
// Resolves the named packages (exact versions) in a throwaway directory and records every package
// an install on Linux (x64 or arm64, glibc) can bring in, with the registry's integrity hash. `agent-vm image build --agents …` installs exactly these.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.join(here, 'versions.json');
const [preset, ...specs] = process.argv.slice(2);
if (!preset || specs.length === 0 || !specs.every((s) => /^(@[^/@]+\/)?[^@]+@\d+\.\d+\.\d+/.test(s))) {
  process.stderr.write('usage: node agents/presets/pin.mjs <preset> <package>@<exact version> [...]\n');
  process.exit(2);
}
const install = specs.map((s) => s.slice(0, s.lastIndexOf('@')));
const packages = {};
{
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentvm-pin-'));
  try {
    const deps = Object.fromEntries(specs.map((s) => [s.slice(0, s.lastIndexOf('@')), s.slice(s.lastIndexOf('@') + 1)]));
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'pin', private: true, dependencies: deps }));
    execFileSync('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--omit=dev', '--package-lock-only'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
    const lock = JSON.parse(fs.readFileSync(path.join(dir, 'package-lock.json'), 'utf8'));
    for (const [where, p] of Object.entries(lock.packages)) {
      if (!where) continue;
      const name = where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length);
      // The lock lists every platform's optional packages; keep those Linux (glibc, x64/arm64) can use.
      if (p.os && !p.os.includes('linux')) continue;
      if (p.cpu && !p.cpu.some((c) => c === 'x64' || c === 'arm64')) continue;
      if (p.libc && !p.libc.includes('glibc')) continue;
      const prev = packages[name];
      if (prev && prev.version !== p.version) throw new Error(`${name}: two versions (${prev.version}, ${p.version}); pin.mjs keeps one per name`);
      packages[name] = { version: p.version, integrity: p.integrity };
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
const all = JSON.parse(fs.readFileSync(file, 'utf8'));
all[preset] = { install, packages: Object.fromEntries(Object.entries(packages).sort(([a], [b]) => a.localeCompare(b))) };
fs.writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
process.stderr.write(`pinned ${preset}: ${Object.keys(packages).length} packages\n`);
