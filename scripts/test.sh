#!/usr/bin/env bash
# `npm test`: prepares what the integration tests need (Docker engine with runsc, the agent
# image and the preset agents' images), then runs every test. Extra arguments go to vitest
# (e.g. `npm test -- test/sandbox.test.ts`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/host-setup.sh
# Debian's chromium for the dashboard's browser tests (test/ui-browser.test.ts).
bash scripts/browser-setup.sh
npm run --silent build
npx tsc -p tsconfig.test.json --noEmit
# The agent image, then the preset agents' images on top of it (test/presets-agents.test.ts):
# pinned npm packages installed on the host (cached under ~/.cache/agent-vm, so only the first
# build downloads), no registry pulls. An unchanged preset image is left as it is.
node bin/agent-vm.js image build --agents claude,codex,gemini
report=$(mktemp -t agentvm-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# One plain closing line that any CI can read, whatever the reporter above printed.
# Before it, what failed, one line each (a CI that shows only the end of the log still says why).
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const line = (t) => String(t ?? "").replace(/\x1b\[[0-9;]*m/g, "").split("\n").find((l) => l.trim()) ?? "";
  const failed = [];
  for (const f of r.testResults ?? []) {
    const file = require("path").relative(process.cwd(), f.name);
    if (f.status === "failed" && f.message) failed.push(`${file}: ${line(f.message)}`);
    for (const a of f.assertionResults ?? []) {
      if (a.status === "failed") failed.push(`${file} > ${a.fullName}: ${line(a.failureMessages?.[0])}`);
    }
  }
  if (failed.length) console.log(["failed:", ...failed.slice(0, 30).map((l) => "  " + l.slice(0, 400)), ...(failed.length > 30 ? [`  … and ${failed.length - 30} more`] : [])].join("\n"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$report" 2>/dev/null || echo "0 passed, 1 failed"
exit $status
