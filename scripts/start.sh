#!/usr/bin/env bash
# `npm start`: sets up and starts agent-vm on its embedded defaults (PGlite under
# ./.agent-vm, in-process queue, runsc sandboxes). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/host-setup.sh
npm run --silent build
node bin/agent-vm.js image build
exec node bin/agent-vm.js up
