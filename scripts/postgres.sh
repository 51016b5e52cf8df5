#!/usr/bin/env bash
# A throw-away local PostgreSQL server (Debian's postgresql package) for the distributed search:
#   scripts/postgres.sh start DIR [PORT]   initialise DIR if new, start, print the database URL
#   scripts/postgres.sh stop DIR
# It listens on 127.0.0.1 only and trusts local connections (a test or a one-machine cluster);
# for a real cluster use a managed server and pass its URL to `tfpconv search --storage`.
set -euo pipefail
action=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop DIR [PORT]}
port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ]; then
  echo "postgres.sh: PostgreSQL is not installed; run scripts/setup.sh (apt-get install postgresql)" >&2
  exit 1
fi
# The server refuses to run as root: run it as the postgres user the Debian package creates.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$dir" -A trust -U tfpconv >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U tfpconv -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'search'" | grep -q 1 ||
      as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U tfpconv search
    echo "postgresql://tfpconv@127.0.0.1:$port/search"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir" -w -m fast stop >/dev/null
    ;;
  *)
    echo "postgres.sh: unknown action $action (start or stop)" >&2
    exit 2
    ;;
esac
