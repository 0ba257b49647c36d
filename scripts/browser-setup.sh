#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (test/ui*.test.ts drive it through
# playwright-core at /usr/bin/chromium). Playwright's own browser download cannot work here (no
# registry but npm and Debian), so the browser comes from Debian packages. Idempotent.
set -euo pipefail
log() { printf 'browser-setup: %s\n' "$*" >&2; }
if [ -x /usr/bin/chromium ]; then
  log "chromium is installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
  exit 0
fi
[ "$(id -u)" = 0 ] || { printf 'browser-setup: error: chromium is missing; install it as root: apt-get install -y chromium\n' >&2; exit 1; }
log "installing chromium from Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
log "chromium installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
