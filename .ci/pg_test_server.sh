#!/usr/bin/env bash
# A throw-away PostgreSQL server for the store's tests (Debian's `postgresql` package).
#
#   eval "$(.ci/pg_test_server.sh start)"     # sets FRACTAL_TEST_PG_URL and FRACTAL_PG_DIR
#   ... run the tests ...
#   .ci/pg_test_server.sh stop "$FRACTAL_PG_DIR"
#
# The server keeps its data and its unix socket in a fresh temporary directory, listens on no TCP port, trusts
# local connections as the superuser `fractal` (each test creates and drops its own database), and runs without
# fsync (nothing in it outlives the tests). `stop` shuts it down and removes the directory.
set -euo pipefail

pg_bindir() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "PostgreSQL server binaries not found (apt-get install -y postgresql)" >&2
    exit 1
  fi
  echo "$d"
}

# initdb and postgres refuse to run as root: run them as the postgres system user then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local bin dir
  bin=$(pg_bindir)
  dir=$(mktemp -d -t fractal-pg.XXXXXX)
  mkdir "$dir/data"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U fractal -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
    "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c synchronous_commit=off \
     -c full_page_writes=off -c max_connections=200" >/dev/null || {
    cat "$dir/server.log" >&2
    exit 1
  }
  echo "export FRACTAL_PG_DIR='$dir'"
  echo "export FRACTAL_TEST_PG_URL='postgresql+psycopg://fractal@/postgres?host=$dir'"
}

stop() {
  local dir=${1:?usage: $0 stop DIR}
  [ -f "$dir/data/PG_VERSION" ] || { echo "$dir is not a server started by this script" >&2; exit 1; }
  as_owner "$(pg_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
