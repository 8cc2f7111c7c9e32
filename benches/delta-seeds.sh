#!/usr/bin/env bash
# Issue 22: how much the second snapshot of a changed database costs, per chunker seed.
#
# Each `sbk init` draws a random chunker seed, and the seed decides where chunks are cut, so the
# same two dumps cost a different number of bytes in different repositories. This takes two
# `pg_dump --format=custom --compress=0` dumps of a throwaway cluster (before and after a change)
# and snapshots both into SEEDS fresh repositories, printing per repository: bytes the second
# snapshot added (repository growth, du -sb), of it the delta blobs' bytes and the count of delta
# blobs, and beside them the whole-file bound `zstd -1 --long=28 --patch-from=FIRST SECOND`.
#
# Workloads (WORKLOAD=pgbench|app|both, default both):
# - pgbench: pgbench -i -s SCALE, filler = md5(aid), VACUUM FULL; then ~1% of
#   pgbench_accounts rows updated at random (PostgreSQL writes their new versions at the heap's
#   end, so ~1% of rows move to the dump's tail).
# - app: an application-like schema: users, posts with TOASTed text bodies (2-8 KB), comments;
#   then inserts (0.5%), updates that rewrite TOASTed bodies (0.5%), deletes (0.2%), and a
#   VACUUM FULL of comments (the whole table rewritten in a new physical order).
#
# Usage: [SEEDS=20] [SCALE=20] [APP_SCALE=6] [WORKLOAD=both] [SBK=path/to/sbk] [KEEP=1]
#        [DUMPS=dir] benches/delta-seeds.sh
# DUMPS=dir keeps each workload's two dumps in dir/WORKLOAD/{first,second} and reuses them when
# present (no PostgreSQL needed then): the same dumps measured before and after a change.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-20}
SCALE=${SCALE:-20}
WORKLOAD=${WORKLOAD:-both}
# The app workload's size: APP_SCALE=1 is ~32 MB of dump (SCALE=20 of pgbench is ~204 MB).
APP_SCALE=${APP_SCALE:-6}
command -v zstd >/dev/null || { echo "zstd (the CLI) is needed for the whole-file bound" >&2; exit 1; }
pg_bindir() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}
BIN=$(pg_bindir) || BIN=
if [ -z "${SBK:-}" ]; then
  cargo build --release --locked --quiet --bin sbk
  SBK=${CARGO_TARGET_DIR:-$PWD/target}/release/sbk
fi

W=$(mktemp -d /tmp/sbk-delta-seeds.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$W"; RUN_AS=(runuser -u nobody --); fi
PORT=$((54330 + RANDOM % 500))
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
PG=(-h 127.0.0.1 -p "$PORT" -U postgres)
cleanup() {
  if [ -f "$W/pgdata/postmaster.pid" ]; then
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
start_cluster() { # once, when a workload's dumps are not kept from an earlier run
  [ -f "$W/pgdata/postmaster.pid" ] && return
  [ -n "$BIN" ] || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
  "${RUN_AS[@]}" "$BIN/initdb" -D "$W/pgdata" -A trust -U postgres >/dev/null
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -l "$W/pg.log" -w \
    -o "-p $PORT -k $W -c listen_addresses=127.0.0.1" start >/dev/null
}
psql_() { "$BIN/psql" "${PG[@]}" -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
dump() { "$BIN/pg_dump" "${PG[@]}" --format=custom --compress=0 -f "$1" "$DB"; }
export SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

prepare_pgbench() {
  DB=pgbench
  "$BIN/createdb" "${PG[@]}" "$DB"
  "$BIN/pgbench" "${PG[@]}" -q -i -s "$SCALE" "$DB" >"$W/pgbench.log" 2>&1
  psql_ -c "UPDATE pgbench_accounts SET filler = md5(aid::text)"
  psql_ -c "VACUUM FULL pgbench_accounts" -c "VACUUM ANALYZE"
  dump "$W/first"
  local n=$((SCALE * 100000))
  psql_ -c "UPDATE pgbench_accounts SET abalance = abalance + 1
    WHERE aid IN (SELECT (random() * $((n - 1)))::int + 1 FROM generate_series(1, $((n / 100))))"
  dump "$W/second"
}

prepare_app() {
  DB=app
  "$BIN/createdb" "${PG[@]}" "$DB"
  local users=$((APP_SCALE * 2500)) posts=$((APP_SCALE * 5000)) comments=$((APP_SCALE * 20000))
  psql_ <<SQL
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text, created timestamptz);
CREATE TABLE posts (id bigint PRIMARY KEY, author bigint REFERENCES users, title text,
  body text, updated timestamptz);
CREATE TABLE comments (id bigint PRIMARY KEY, post bigint REFERENCES posts, author bigint,
  body text, created timestamptz);
INSERT INTO users SELECT i, 'user' || i || '@example.com', md5(i::text),
  now() - i * interval '1 minute' FROM generate_series(1, $users) i;
-- Bodies of 2-8 KB of varied text: TOASTed (and compressed by PostgreSQL, as real ones are).
INSERT INTO posts SELECT i, 1 + i % $users, 'post ' || md5(i::text),
  (SELECT string_agg(md5((i * 100 + k)::text) || ' ' || (i * k % 9973), ' ')
     FROM generate_series(1, 60 + i % 180) k),
  now() - i * interval '1 minute' FROM generate_series(1, $posts) i;
INSERT INTO comments SELECT i, 1 + i % $posts, 1 + i % $users,
  'comment ' || md5(i::text) || ' ' || repeat(substr(md5((i * 7)::text), 1, 8), 1 + i % 20),
  now() - i * interval '1 second' FROM generate_series(1, $comments) i;
VACUUM ANALYZE;
SQL
  dump "$W/first"
  psql_ <<SQL
INSERT INTO comments SELECT $comments + i, 1 + (i * 31) % $posts, 1 + i % $users,
  'new comment ' || md5((i + 5)::text), now() FROM generate_series(1, $comments / 200) i;
UPDATE posts SET body = body || ' edited ' || md5(id::text), updated = now()
  WHERE id IN (SELECT (random() * ($posts - 1))::int + 1 FROM generate_series(1, $posts / 200));
DELETE FROM comments WHERE id IN
  (SELECT (random() * ($comments - 1))::int + 1 FROM generate_series(1, $comments / 500));
VACUUM FULL comments;
VACUUM ANALYZE;
SQL
  dump "$W/second"
}

run_seeds() { # WORKLOAD: prints one line per seed and a summary
  local name=$1
  local first second bound
  first=$(stat -c %s "$W/first"); second=$(stat -c %s "$W/second")
  zstd -q -1 --long=28 --patch-from="$W/first" "$W/second" -o "$W/patch.zst" -f
  bound=$(stat -c %s "$W/patch.zst")
  echo "== $name: first dump $first bytes, second $second bytes; whole-file bound" \
    "(zstd -1 --long=28 --patch-from) $bound bytes"
  printf "%-5s %12s %12s %8s %12s %10s %8s\n" seed first_stored added delta_blobs delta_bytes whole% xbound
  : > "$W/$name.tsv"
  for ((s = 1; s <= SEEDS; s++)); do
    local r=$W/repo
    rm -rf "$r"
    "$SBK" -q -r "$r" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
    "$SBK" -q -r "$r" snapshot stdin --name db.pgdump < "$W/first" >/dev/null
    local a b
    a=$(du -sb "$r" | cut -f1)
    "$SBK" -q -r "$r" --json snapshot stdin --name db.pgdump < "$W/second" > "$W/out.json" 2>/dev/null
    b=$(du -sb "$r" | cut -f1)
    local added=$((b - a))
    local dblobs dbytes
    dblobs=$(grep -o '"blobs_delta": *[0-9]*' "$W/out.json" | grep -o '[0-9]*$')
    dbytes=$(grep -o '"bytes_delta": *[0-9]*' "$W/out.json" | grep -o '[0-9]*$')
    printf "%-5s %12s %12s %8s %12s %9.2f%% %7.2fx\n" "$s" "$a" "$added" "$dblobs" "$dbytes" \
      "$(echo "100 * $added / $a" | bc -l)" "$(echo "$added / $bound" | bc -l)"
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$s" "$a" "$added" "$dblobs" "$dbytes" "$bound" >> "$W/$name.tsv"
  done
  sort -t$'\t' -k3,3n "$W/$name.tsv" | awk -F'\t' -v n="$SEEDS" '
    { added[NR] = $3; first[NR] = $2; bound = $6 }
    END {
      med = (n % 2) ? added[(n + 1) / 2] : (added[n / 2] + added[n / 2 + 1]) / 2
      printf "   %s seeds: best %.2f%%, median %.2f%%, worst %.2f%% of the first snapshot; worst %.2fx and median %.2fx the whole-file bound (%.2f%%)\n",
        n, 100 * added[1] / first[1], 100 * med / first[1], 100 * added[n] / first[n],
        added[n] / bound, med / bound, 100 * bound / first[1]
    }'
}

workload() { # NAME: the two dumps into $W/first and $W/second, then the seeds
  local saved=${DUMPS:+$DUMPS/$1}
  if [ -n "$saved" ] && [ -f "$saved/first" ] && [ -f "$saved/second" ]; then
    cp "$saved/first" "$saved/second" "$W/"
  else
    start_cluster
    "prepare_$1"
    if [ -n "$saved" ]; then mkdir -p "$saved"; cp "$W/first" "$W/second" "$saved/"; fi
  fi
  run_seeds "$1"
}

case $WORKLOAD in
  pgbench) workload pgbench ;;
  app) workload app ;;
  both) workload pgbench; workload app ;;
  *) echo "WORKLOAD must be pgbench, app or both" >&2; exit 2 ;;
esac
