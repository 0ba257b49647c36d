#!/usr/bin/env bash
# Brings this machine to what agent-vm needs: a running Docker engine that knows the runsc
# (gVisor) runtime. Idempotent: safe to run on every start and every test run.
# Installs from Debian packages when something is missing (needs root); never touches runc's
# status as the engine default, and never makes runc something agent-vm would pick.
set -euo pipefail

log() { printf 'host-setup: %s\n' "$*" >&2; }
die() { printf 'host-setup: error: %s\n' "$*" >&2; exit 1; }

SOCK=/var/run/docker.sock
DAEMON_JSON=/etc/docker/daemon.json
WANT_JSON='{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=host"]}}}'

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# An engine reached through DOCKER_HOST (or already running) that has runsc needs nothing from us.
if engine_up && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
  log "Docker engine is up with runsc"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix://$SOCK" ]; then
  die "DOCKER_HOST=${DOCKER_HOST} is set but that engine is unreachable or has no runsc runtime; fix that engine (see README: runtimes)"
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /usr/bin/runsc ] || need+=(runsc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}; install them as root: apt-get install -y ${need[*]}"
  log "installing ${need[*]} from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ "$(id -u)" = 0 ] || die "the Docker engine is not running and starting it needs root"

mkdir -p /etc/docker
if [ ! -f "$DAEMON_JSON" ] || ! grep -q '"runsc"' "$DAEMON_JSON"; then
  if [ -s "$DAEMON_JSON" ]; then
    # Merge runsc into an existing config rather than overwrite someone's settings.
    node -e '
      const fs=require("fs");const p=process.argv[1];const c=JSON.parse(fs.readFileSync(p,"utf8"));
      c.runtimes=Object.assign({},c.runtimes,{runsc:{path:"/usr/bin/runsc",runtimeArgs:["--network=host"]}});
      fs.writeFileSync(p,JSON.stringify(c,null,2));' "$DAEMON_JSON"
  else
    echo "$WANT_JSON" > "$DAEMON_JSON"
  fi
  log "wrote runsc runtime to $DAEMON_JSON"
  if pid=$(pidof dockerd); then kill -HUP $pid; sleep 1; fi
fi

if ! pidof dockerd >/dev/null; then
  log "starting dockerd"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do engine_up && break; sleep 0.5; done
engine_up || die "dockerd did not come up in 30 s; see /var/log/dockerd.log"
docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' || die "engine is up but has no runsc runtime; check $DAEMON_JSON"
log "Docker engine is up with runsc"
