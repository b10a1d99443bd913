#!/usr/bin/env bash
# Throwaway Redis for tests and development.
#
#   eval "$(infra/redis.sh start)"   # exports REDIS_URL and FLEET_REDIS_DIR
#   infra/redis.sh stop [dir]        # stops it and deletes its directory (default: $FLEET_REDIS_DIR)
#
# Listens on 127.0.0.1 only, random free port, no persistence. Progress goes to stderr; only the export
# lines go to stdout.
set -euo pipefail

log() { echo "redis.sh: $*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
  local dir port attempt i
  dir="$(mktemp -d "${TMPDIR:-/tmp}/fleet-redis.XXXXXX")"
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    rm -f "$dir/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --save '' --appendonly no >/dev/null 2>&1 || true
    for i in $(seq 1 50); do
      if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        echo "$port" >"$dir/port"
        log "Redis ready on 127.0.0.1:$port (dir $dir)"
        echo "export REDIS_URL=redis://127.0.0.1:$port"
        echo "export FLEET_REDIS_DIR=$dir"
        return 0
      fi
      sleep 0.1
    done
    log "start on port $port failed (attempt $attempt)"
    if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  done
  tail -n 30 "$dir/redis.log" >&2 || true
  die "could not start Redis"
}

stop() {
  local dir="${1:-${FLEET_REDIS_DIR:-}}"
  [ -n "$dir" ] || die "usage: redis.sh stop <dir> (or set FLEET_REDIS_DIR)"
  [ -d "$dir" ] || { log "$dir does not exist: nothing to stop"; return 0; }
  [ -f "$dir/port" ] || die "$dir does not look like a directory made by redis.sh start; refusing to delete it"
  local port pid i
  port="$(cat "$dir/port")"
  pid="$(cat "$dir/redis.pid" 2>/dev/null || true)"
  redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  if [ -n "$pid" ]; then
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop [dir]" >&2; exit 2 ;;
esac
