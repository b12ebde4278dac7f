#!/usr/bin/env bash
# A throwaway PostgreSQL server for shared Optuna studies: for nnlab's tests, and for trying the
# multi-machine recipe of docs/clusters.md before pointing it at a real server.
#
#   scripts/local_postgres.sh up     # start it; prints the URL for hydra.sweeper.storage=
#   scripts/local_postgres.sh url    # print that URL again
#   scripts/local_postgres.sh down   # stop it and delete its data
#
# Debian's postgresql (initdb, pg_ctl); the server runs as the calling user, or as `postgres`
# when called by root (PostgreSQL refuses root). It listens on 127.0.0.1 only (port
# NNLAB_POSTGRES_PORT, default 55432) and on a Unix socket in its own folder, and trusts local
# connections: no password exists, in a file or elsewhere. State lives in NNLAB_POSTGRES_DIR
# (default: $TMPDIR/nnlab-postgres). The URL names 127.0.0.1 rather than the socket because a
# socket's URL needs `?host=`, and Hydra's override grammar would need that `=` quoted.
set -euo pipefail

dir=${NNLAB_POSTGRES_DIR:-${TMPDIR:-/tmp}/nnlab-postgres}
database=nnlab
port=${NNLAB_POSTGRES_PORT:-55432}
url="postgresql+psycopg://nnlab@127.0.0.1:$port/$database"

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
if [ -z "$bin" ]; then
  echo "local_postgres.sh: PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
  exit 2
fi

as_owner() {  # PostgreSQL's programs as the server's owner
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mark=.nnlab-local-postgres  # the folder is this script's, and only then removed
remove_own_dir() {
  if [ -e "$dir" ] && [ ! -e "$dir/$mark" ]; then
    echo "local_postgres.sh: $dir is not this script's folder; it is left alone" >&2
    exit 2
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  up)
    if as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      echo "$url"
      exit 0
    fi
    remove_own_dir
    mkdir -p "$dir"
    touch "$dir/$mark"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U nnlab --auth=trust --no-sync -E UTF8 >"$dir/initdb.log"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c fsync=off" start >/dev/null
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U nnlab "$database"
    echo "$url"
    ;;
  url)
    echo "$url"
    ;;
  down)
    if [ -d "$dir/data" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    remove_own_dir
    ;;
  *)
    echo "usage: scripts/local_postgres.sh up|url|down" >&2
    exit 2
    ;;
esac
