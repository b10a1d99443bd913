#!/usr/bin/env bash
# Throwaway PostgreSQL 15 for tests and development.
#
#   eval "$(infra/pg.sh start)"   # exports DATABASE_URL and FLEET_PG_DIR
#   infra/pg.sh stop [dir]        # stops the server started above and deletes its data (default: $FLEET_PG_DIR)
#
# The server listens on 127.0.0.1 only, on a random free port, with trust auth (it is a throwaway: never use
# this for anything that matters). initdb refuses to run as root, so under root it runs as the `postgres`
# OS user. Progress goes to stderr; only the export lines go to stdout.
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
DB_NAME="${PG_DB_NAME:-fleet_test}"

log() { echo "pg.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Runs a command as the OS user that owns the cluster (postgres when we are root, else ourselves).
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user to run PostgreSQL as"
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL binaries not found in $PG_BIN (apt-get install postgresql-15, or set PG_BIN)"
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/fleet-pg.XXXXXX")"
  chmod 755 "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  log "initdb in $dir"
  as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

  local port attempt
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    # fsync off etc.: data is thrown away, speed matters more than durability here.
    if as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null 2>&1; then
      break
    fi
    log "start on port $port failed (attempt $attempt)"
    port=""
  done
  [ -n "$port" ] || { tail -n 30 "$dir/server.log" >&2 || true; die "could not start PostgreSQL"; }
  echo "$port" >"$dir/port"
  as_owner "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME" || die "createdb $DB_NAME failed"
  log "PostgreSQL ready on 127.0.0.1:$port (data $dir)"
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$port/$DB_NAME"
  echo "export FLEET_PG_DIR=$dir"
}

stop() {
  local dir="${1:-${FLEET_PG_DIR:-}}"
  [ -n "$dir" ] || die "usage: pg.sh stop <dir> (or set FLEET_PG_DIR)"
  [ -d "$dir" ] || { log "$dir does not exist: nothing to stop"; return 0; }
  [ -f "$dir/data/PG_VERSION" ] || die "$dir does not look like a directory made by pg.sh start; refusing to delete it"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
      # Fall back to the pid when pg_ctl cannot do it.
      local pid
      pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
      [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    }
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop [dir]" >&2; exit 2 ;;
esac
