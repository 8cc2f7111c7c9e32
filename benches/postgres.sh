#!/usr/bin/env bash
# `sbk snapshot postgres` against pg_dump alone and restic, on a pgbench database.
#
# A throwaway cluster gets `pgbench -i -s SCALE` (pgbench_accounts.filler made md5 text, then
# VACUUM FULL, so the table compresses like real data). Printed:
#   1. wall time of `sbk snapshot postgres` against `pg_dump -Fc -Z0 > /dev/null` (target: within 10%)
#   2. after ~1% of pgbench_accounts rows change at random, the bytes the second snapshot adds, for
#      sbk and for `pg_dump -Fc -Z0 | restic backup --stdin` (target: sbk at most 5% of its first)
#   3. `sbk restore --to-database` against `pg_restore` from a local dump file (target: within 20%)
#
# Autovacuum is off in the throwaway cluster: after a restore it vacuums and analyzes the new
# 5M-row table in the background, which slowed whichever restore came next by up to 1.5 s.
#
# Usage: [SCALE=50] benches/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-50}
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || { echo "SCALE must be a positive integer" >&2; exit 2; }
N=$((SCALE * 100000))
need_apt() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "missing $1: install it" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
command -v restic >/dev/null || need_apt restic
pg_bindir() {
  local d
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}
BIN=$(pg_bindir) || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
cargo build --release --locked --quiet --bin sbk
SBK=$PWD/target/release/sbk

W=$(mktemp -d /tmp/sbk-pg-bench.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$W"; RUN_AS=(runuser -u nobody --); fi
PORT=$((55330 + RANDOM % 500))
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
PG=(-h 127.0.0.1 -p "$PORT" -U postgres)
cleanup() {
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
"${RUN_AS[@]}" "$BIN/initdb" -D "$W/pgdata" -A trust -U postgres >/dev/null
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -l "$W/pg.log" -w \
  -o "-p $PORT -k $W -c listen_addresses=127.0.0.1 -c autovacuum=off" start >/dev/null
psql_() { "$BIN/psql" "${PG[@]}" -X -q -v ON_ERROR_STOP=1 "$@"; }
"$BIN/createdb" "${PG[@]}" bench
echo "== sbk PostgreSQL benchmark: SCALE=$SCALE ($N accounts), nproc=$(nproc), $("$BIN/postgres" --version)"
"$BIN/pgbench" "${PG[@]}" -q -i -s "$SCALE" bench >"$W/pgbench.log" 2>&1 || { cat "$W/pgbench.log" >&2; exit 1; }
psql_ -d bench -c "UPDATE pgbench_accounts SET filler = md5(aid::text)"
psql_ -d bench -c "VACUUM FULL pgbench_accounts"
psql_ -d bench -c "VACUUM ANALYZE"
URL="postgresql://postgres@127.0.0.1:$PORT"

SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_PASSWORD RESTIC_PASSWORD=$SBK_PASSWORD RESTIC_CACHE_DIR=$W/cache SBK_REPOSITORY=$W/sbk
"$SBK" -q init
restic -q init --repository-version 2 -r "$W/restic" >/dev/null
size() { du -sb "$1" | cut -f1; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

# 1. snapshot vs pg_dump alone (three of each, alternating; the median counts)
dump_t=(); snap_t=()
for i in 1 2 3; do
  dump_t+=("$(secs bash -c "'$BIN/pg_dump' -h 127.0.0.1 -p $PORT -U postgres -Fc -Z0 bench > /dev/null")")
  snap_t+=("$(secs "$SBK" -q snapshot postgres "$URL/bench" --tag run$i)")
done
D=$(median3 "${dump_t[@]}"); S=$(median3 "${snap_t[@]}")
echo "== 1. pg_dump > /dev/null: ${dump_t[*]} s (median $D); sbk snapshot postgres: ${snap_t[*]} s (median $S); ratio $(echo "scale=3; $S / $D" | bc)"

# 2. second snapshot after ~1% of rows change: fresh repositories, first + second
rm -rf "$W/sbk"; "$SBK" -q init
"$SBK" -q snapshot postgres "$URL/bench"
"$BIN/pg_dump" "${PG[@]}" -Fc -Z0 bench | restic -q -r "$W/restic" backup --stdin --stdin-filename bench.pgdump >/dev/null
s1=$(size "$W/sbk"); r1=$(size "$W/restic")
psql_ -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1
  WHERE aid IN (SELECT (random() * $((N - 1)))::int + 1 FROM generate_series(1, $((N / 100))))"
"$SBK" -q snapshot postgres "$URL/bench"
"$BIN/pg_dump" "${PG[@]}" -Fc -Z0 bench | restic -q -r "$W/restic" backup --stdin --stdin-filename bench.pgdump >/dev/null
s2=$(size "$W/sbk"); r2=$(size "$W/restic")
echo "== 2. first snapshot stored: sbk $s1 bytes, restic $r1 bytes"
echo "   second snapshot added: sbk $((s2 - s1)) bytes = $(echo "scale=2; 100 * ($s2 - $s1) / $s1" | bc)% of its first;" \
  "restic $((r2 - r1)) bytes = $(echo "scale=2; 100 * ($r2 - $r1) / $r1" | bc)% of its first"

# 3. restore: sbk restore --to-database vs pg_restore from a local file (the latest, a delta snapshot).
# Both restore into an empty database made beforehand (createdb is not timed for either). Each
# timed restore starts after a CHECKPOINT and a sync, and the order alternates: a restore that follows
# another pays for the checkpoint of the first one's ~1 GB of WAL, which skewed earlier runs by ~1.5 s.
"$BIN/pg_dump" "${PG[@]}" -Fc -Z0 -f "$W/local.pgdump" bench
sr_t=(); pr_t=()
# Let the kernel write back what the previous run wrote (~2.5 GB of table files and WAL, the
# 513 MB dump file): without this, writeback overlapped the next timed run and made the piped
# restores (sbk, and plain sbk dump | pg_restore alike) 1.3-1.5 s slower than pg_restore.
settle() { sync; sleep 3; }
time_pg() {
  "$BIN/dropdb" "${PG[@]}" --if-exists r_pg; "$BIN/createdb" "${PG[@]}" r_pg; psql_ -d postgres -c CHECKPOINT; settle
  pr_t+=("$(secs "$BIN/pg_restore" "${PG[@]}" -d r_pg "$W/local.pgdump")")
}
time_sbk() {
  "$BIN/dropdb" "${PG[@]}" --if-exists r_sbk; "$BIN/createdb" "${PG[@]}" r_sbk; psql_ -d postgres -c CHECKPOINT; settle
  sr_t+=("$(secs "$SBK" -q restore latest --to-database "$URL/r_sbk")")
}
pipe_t=()
time_pipe() { # sbk's stream alone: sbk dump | pg_restore, without sbk's row counts
  "$BIN/dropdb" "${PG[@]}" --if-exists r_pipe; "$BIN/createdb" "${PG[@]}" r_pipe; psql_ -d postgres -c CHECKPOINT; settle
  pipe_t+=("$(secs bash -c "'$SBK' -q dump latest bench.pgdump | '$BIN/pg_restore' -h 127.0.0.1 -p $PORT -U postgres -d r_pipe")")
}
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then time_pg; time_sbk; time_pipe; else time_pipe; time_sbk; time_pg; fi
done
P=$(median3 "${pr_t[@]}"); R=$(median3 "${sr_t[@]}")
echo "== 3. pg_restore from a local file: ${pr_t[*]} s (median $P); sbk restore --to-database: ${sr_t[*]} s (median $R); ratio $(echo "scale=3; $R / $P" | bc)"
echo "   sbk dump | pg_restore (the stream without sbk's per-table row counts): ${pipe_t[*]} s (median $(median3 "${pipe_t[@]}"))"
Q="SELECT sum(abalance)::text || '/' || count(*) FROM pgbench_accounts"
[ "$(psql_ -At -d r_sbk -c "$Q")" = "$(psql_ -At -d bench -c "$Q")" ] || { echo "restored data differs" >&2; exit 1; }
echo "   restored data matches the source"
