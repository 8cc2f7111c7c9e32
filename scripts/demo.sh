#!/usr/bin/env bash
# sbk's main job on this machine, end to end: a throwaway PostgreSQL cluster with pgbench data is
# dumped into a new local sbk repository twice (before and after 1% of rows change), then the
# latest snapshot is restored into a fresh database and compared with the source.
# Usage: scripts/demo.sh [pgbench scale, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-10}

pg_bindir() {
  local d
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}

if ! BIN=$(pg_bindir); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing PostgreSQL (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    BIN=$(pg_bindir)
  else
    echo "PostgreSQL server binaries not found: install the 'postgresql' package" >&2; exit 1
  fi
fi

echo "== building sbk (a first build compiles ~420 crates: 10-25 minutes on 2 cores; cargo shows its progress)"
cargo build --locked
SBK=$PWD/target/debug/sbk

WORK=$(mktemp -d /tmp/sbk-demo.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$WORK"; RUN_AS=(runuser -u nobody --); fi
PORT=54329
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
PG=(-h 127.0.0.1 -p "$PORT" -U postgres)
cleanup() {
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$WORK/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL cluster on 127.0.0.1:$PORT"
"${RUN_AS[@]}" "$BIN/initdb" -D "$WORK/pgdata" -A trust -U postgres >/dev/null
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pg.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
"$BIN/createdb" "${PG[@]}" app
"$BIN/pgbench" "${PG[@]}" -q -i -s "$SCALE" app 2>/dev/null

export SBK_REPOSITORY="$WORK/repo"
SBK_PASSWORD="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_PASSWORD
URL="postgresql://postgres@127.0.0.1:$PORT/app"

echo "== sbk init"
"$SBK" init
echo "== snapshot 1: sbk snapshot postgres (pg_dump of database app, globals, manifest)"
"$SBK" snapshot postgres "$URL" --count-rows --tag demo
echo "== updating 1% of pgbench_accounts at random"
ROWS=$((SCALE * 1000))
"$BIN/psql" "${PG[@]}" -q -d app -c "UPDATE pgbench_accounts SET abalance = abalance + 1
  WHERE aid IN (SELECT (random() * $((SCALE * 100000 - 1)))::int + 1 FROM generate_series(1, $ROWS))"
echo "== snapshot 2 (changed chunks stored as deltas against snapshot 1)"
"$SBK" snapshot postgres "$URL" --count-rows --tag demo
"$SBK" snapshots

echo "== restore drill: sbk verify latest (scratch database, row counts, ANALYZE, drop)"
"$SBK" verify latest --scratch "postgresql://postgres@127.0.0.1:$PORT/postgres"
echo "== restoring the latest snapshot into a new database app_restored"
"$SBK" restore latest --to-database "postgresql://postgres@127.0.0.1:$PORT/app_restored" --create
Q="SELECT count(*) || ' rows, balance sum ' || sum(abalance) FROM pgbench_accounts"
A=$("$BIN/psql" "${PG[@]}" -At -d app -c "$Q")
B=$("$BIN/psql" "${PG[@]}" -At -d app_restored -c "$Q")
echo "source:   $A"
echo "restored: $B"
[ "$A" = "$B" ] || { echo "MISMATCH" >&2; exit 1; }
echo "== sbk check --read-data (every blob re-hashed, deltas through their bases), then stats"
"$SBK" check --read-data
"$SBK" stats
echo "== sbk forget --keep-last 1 --prune --instant-delete (the older snapshot's deltas' bases stay)"
"$SBK" forget --keep-last 1 --prune --instant-delete
"$SBK" check --read-data
echo "== OK: the restored database matches the source, and the repository checks whole"
