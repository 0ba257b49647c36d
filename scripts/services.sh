#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, trust auth for local connections) and Redis
# (127.0.0.1:6379) answer, as the integration tests expect. Starts them if installed but
# stopped; installs them from Debian packages if missing (root only). Idempotent.
set -euo pipefail
log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
as_root() { [ "$(id -u)" = 0 ] || die "$1 is not running and starting it needs root"; }

if ! pg_up; then
  as_root PostgreSQL
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing postgresql"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # Tests connect as postgres over TCP without a password, as on the development machines.
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  pg_up || die "PostgreSQL did not come up on 127.0.0.1:5432"
fi
log "PostgreSQL answers on 127.0.0.1:5432"

if ! redis_up; then
  as_root Redis
  if ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  redis_up || die "Redis did not come up on 127.0.0.1:6379"
fi
log "Redis answers on 127.0.0.1:6379"
