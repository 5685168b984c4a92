#!/usr/bin/env bash
# Start a private PostgreSQL server for the fleet tests (Debian's postgresql package) and print its URL.
#
#   scripts/postgres_for_tests.sh DIR [PORT]     -> postgresql://edge@127.0.0.1:PORT/edge_fleet
#
# The cluster lives in DIR (owned by the postgres user), listens on 127.0.0.1 only, trusts local connections,
# and is stopped with: su postgres -c "pg_ctl -D DIR/data stop"  (CI simply ends with it).
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd)
port=${2:-54329}
log="$dir/postgres.log"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >>"$log" 2>&1
fi
bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
chown postgres "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
  su postgres -c "$bin/initdb -D '$dir/data' -A trust -U postgres" >>"$log" 2>&1
fi
if ! su postgres -c "$bin/pg_ctl -D '$dir/data' status" >/dev/null 2>&1; then
  su postgres -c "$bin/pg_ctl -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -h 127.0.0.1 -k '$dir'\" start" >>"$log" 2>&1
fi
psql=(su postgres -c)
"${psql[@]}" "psql -h 127.0.0.1 -p $port -U postgres -tc \"SELECT 1 FROM pg_roles WHERE rolname='edge'\" | grep -q 1 || psql -h 127.0.0.1 -p $port -U postgres -c 'CREATE ROLE edge LOGIN'" >>"$log" 2>&1
"${psql[@]}" "psql -h 127.0.0.1 -p $port -U postgres -tc \"SELECT 1 FROM pg_database WHERE datname='edge_fleet'\" | grep -q 1 || psql -h 127.0.0.1 -p $port -U postgres -c 'CREATE DATABASE edge_fleet OWNER edge'" >>"$log" 2>&1
echo "postgresql://edge@127.0.0.1:$port/edge_fleet"
