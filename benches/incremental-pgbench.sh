#!/usr/bin/env bash
# Incremental backups of a changing PostgreSQL database: the benchmark of delta blobs.
#
# A throwaway PostgreSQL cluster gets pgbench data (filler made less compressible); then, RUNS
# times, ~1% of pgbench_accounts rows change at random, the database is dumped once
# (pg_dump --format=custom --compress=0) and that same dump file is snapshotted into three local
# repositories on the same disk: sbk (delta blobs on), sbk --no-delta, and restic (Debian's
# package). Measured per run: wall seconds, ingest MiB/s, peak RSS, bytes each repository grows
# by; then restore time (sbk dump) of delta snapshots against a --no-delta one, with an md5 check
# of every restored dump against the original.
#
# Usage: [SCALE=30] [RUNS=28] [KEEP=1] [SBK=path/to/sbk] benches/incremental-pgbench.sh
# (SBK: measure that binary instead of building this checkout, e.g. to compare two commits.)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-30}
RUNS=${RUNS:-28}
[[ $SCALE =~ ^[1-9][0-9]*$ && $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "SCALE and RUNS must be positive integers" >&2; exit 2; }
[ "$RUNS" -ge 2 ] || { echo "RUNS must be at least 2" >&2; exit 2; }
N=$((SCALE * 100000))
T0=$(date +%s)

# --- tools ---------------------------------------------------------------------------------------
need_apt() { # PACKAGE: install with apt-get (root only)
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "missing $1: install it" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
command -v restic >/dev/null || need_apt restic
[ -x /usr/bin/time ] || need_apt time
pg_bindir() {
  local d
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}
BIN=$(pg_bindir) || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
if [ -z "${SBK:-}" ]; then
  cargo build --release --locked --quiet --bin sbk
  SBK=$PWD/target/release/sbk
fi
[ -x "$SBK" ] || { echo "SBK=$SBK is not an executable" >&2; exit 2; }

# --- throwaway cluster ---------------------------------------------------------------------------
W=$(mktemp -d /tmp/sbk-incr-pgbench.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$W"; RUN_AS=(runuser -u nobody --); fi
PORT=$((54330 + RANDOM % 500))
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
PG=(-h 127.0.0.1 -p "$PORT" -U postgres)
cleanup() {
  if [ -f "$W/pgdata/postmaster.pid" ]; then
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  # KEEP=1 leaves the repositories for profiling.
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W (SBK_PASSWORD=$SBK_PASSWORD)"; else rm -rf "$W"; fi
}
trap cleanup EXIT

echo "== sbk incremental benchmark: pgbench database, ~1% of pgbench_accounts rows changed per run"
echo "   measured: per run, one pg_dump --format=custom --compress=0 file snapshotted into"
echo "   sbk (delta blobs), sbk --no-delta and restic $(restic version | awk '{print $2}') (repository v2):"
echo "   wall seconds, ingest MiB/s, peak RSS, bytes added to each local repository; then restore"
echo "   time (sbk dump > /dev/null) of delta snapshots against a --no-delta one, md5-checked"
echo "   SCALE=$SCALE ($N accounts) RUNS=$RUNS nproc=$(nproc) PostgreSQL $("$BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //')"
echo "   work folder $W, PostgreSQL on 127.0.0.1:$PORT"

"${RUN_AS[@]}" "$BIN/initdb" -D "$W/pgdata" -A trust -U postgres >/dev/null
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -l "$W/pg.log" -w \
  -o "-p $PORT -k $W -c listen_addresses=127.0.0.1" start >/dev/null
psql_() { "$BIN/psql" "${PG[@]}" -X -q -v ON_ERROR_STOP=1 -d bench "$@"; }
"$BIN/createdb" "${PG[@]}" bench
echo "== pgbench -i -s $SCALE; filler = md5(aid); VACUUM FULL"
"$BIN/pgbench" "${PG[@]}" -q -i -s "$SCALE" bench >"$W/pgbench.log" 2>&1 || { cat "$W/pgbench.log" >&2; exit 1; }
psql_ -c "UPDATE pgbench_accounts SET filler = md5(aid::text)"
psql_ -c "VACUUM FULL pgbench_accounts"
psql_ -c "VACUUM ANALYZE"

# --- repositories --------------------------------------------------------------------------------
SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_PASSWORD RESTIC_PASSWORD=$SBK_PASSWORD RESTIC_CACHE_DIR=$W/cache
"$SBK" -q -r "$W/sbk" init
"$SBK" -q -r "$W/sbk-nodelta" init
restic -q init --repository-version 2 -r "$W/restic" >/dev/null
TOOLS=(sbk nodelta restic)
declare -A REPO=([sbk]=$W/sbk [nodelta]=$W/sbk-nodelta [restic]=$W/restic)
declare -A LABEL=([sbk]="sbk" [nodelta]="sbk --no-delta" [restic]="restic")
size() { du -sb "$1" | cut -f1; }
declare -A PREV
for t in "${TOOLS[@]}"; do PREV[$t]=$(size "${REPO[$t]}"); done

# timed NAME CMD...: runs CMD (stdin passed through) under GNU time; sets SECS and RSS (KiB).
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/$name.time" "$@"
  read -r SECS RSS < "$W/$name.time"
}

# Per-run results, one line each in $W/results: run dumpbytes md5 then per tool: secs rss added size
: > "$W/results"
for ((n = 0; n < RUNS; n++)); do
  if [ "$n" -gt 0 ]; then
    psql_ -c "UPDATE pgbench_accounts SET abalance = abalance + 1
      WHERE aid IN (SELECT (random() * $((N - 1)))::int + 1 FROM generate_series(1, $((N / 100))))"
  fi
  rm -f "$W/dump"
  "$BIN/pg_dump" "${PG[@]}" --format=custom --compress=0 -f "$W/dump" bench
  bytes=$(stat -c %s "$W/dump")
  md5=$(md5sum < "$W/dump" | cut -d' ' -f1)
  line="$n $bytes $md5"
  msg=""
  timed sbk "$SBK" -q -r "$W/sbk" snapshot stdin --name bench.pgdump < "$W/dump"
  s=$(size "$W/sbk"); line+=" $SECS $RSS $((s - PREV[sbk])) $s"; msg+=" sbk +$((s - PREV[sbk]))"; PREV[sbk]=$s
  timed nodelta "$SBK" -q -r "$W/sbk-nodelta" snapshot stdin --name bench.pgdump --no-delta < "$W/dump"
  s=$(size "$W/sbk-nodelta"); line+=" $SECS $RSS $((s - PREV[nodelta])) $s"; msg+=" sbk-nodelta +$((s - PREV[nodelta]))"; PREV[nodelta]=$s
  timed restic restic -q -r "$W/restic" backup --stdin --stdin-filename bench.pgdump < "$W/dump" >/dev/null
  s=$(size "$W/restic"); line+=" $SECS $RSS $((s - PREV[restic])) $s"; msg+=" restic +$((s - PREV[restic]))"; PREV[restic]=$s
  echo "$line" >> "$W/results"
  if [ "$n" -le 1 ]; then
    echo "   run $n: dump $bytes bytes; bytes added:$msg"
  else
    echo "   run $n done ($(( $(date +%s) - T0 )) s elapsed)"
  fi
done
rm -f "$W/dump"

# --- table and summary ---------------------------------------------------------------------------
echo
echo "== per run (MiB = 2^20 bytes; added = growth of the repository folder, du -sb)"
awk 'BEGIN {
  M = 1048576
  printf "%3s %8s |%38s |%38s |%38s\n", "", "", "sbk (delta)", "sbk --no-delta", "restic"
  printf "%3s %8s", "run", "dump MiB"
  for (i = 0; i < 3; i++) printf " |%7s %7s %10s %10s", "s", "MiB/s", "added MiB", "repo MiB"
  printf "\n"
}
{
  printf "%3d %8.1f", $1, $2 / M
  for (i = 0; i < 3; i++) {
    b = 4 + 4 * i
    printf " |%7.2f %7.1f %10.2f %10.1f", $b, $2 / M / ($b > 0 ? $b : 0.01), $(b + 2) / M, $(b + 3) / M
  }
  printf "\n"
}' "$W/results"

echo
echo "== summary"
awk -v labels="sbk|sbk --no-delta|restic" 'BEGIN { M = 1048576; split(labels, L, "|") }
{
  for (i = 0; i < 3; i++) {
    b = 4 + 4 * i
    if ($1 == 0) first[i] = $(b + 2)
    if ($1 == 1) second[i] = $(b + 2)
    last[i] = $(b + 3)
    if ($(b + 1) > rss[i]) rss[i] = $(b + 1)
    if ($1 >= 1) { rate[i] += $2 / M / ($b > 0 ? $b : 0.01); runs[i]++; secs[i] += $b; bytes[i] += $2 }
  }
}
END {
  printf "second snapshot added, as %% of the first snapshot'"'"'s stored bytes:\n"
  for (i = 0; i < 3; i++) printf "  %-16s %10.3f%%  (%.2f MiB of %.1f MiB)\n", L[i + 1], 100 * second[i] / first[i], second[i] / M, first[i] / M
  printf "repository size after %d runs, as a multiple of the first snapshot'"'"'s stored size:\n", NR
  for (i = 0; i < 3; i++) printf "  %-16s %10.3fx  (%.1f MiB)\n", L[i + 1], last[i] / first[i], last[i] / M
  printf "ingest MiB/s, runs 1..%d (mean of per-run rates; total bytes / total seconds):\n", NR - 1
  for (i = 0; i < 3; i++) printf "  %-16s %8.1f  %8.1f\n", L[i + 1], rate[i] / runs[i], bytes[i] / M / secs[i]
  printf "  sbk / sbk --no-delta: %.3fx (mean rate)\n", (rate[0] / runs[0]) / (rate[1] / runs[1])
  printf "peak RSS of a snapshot, max over runs:\n"
  for (i = 0; i < 3; i++) printf "  %-16s %8.1f MiB\n", L[i + 1], rss[i] / 1024
}' "$W/results"

snapshot_ids() { # REPO: snapshot IDs, oldest first
  if command -v jq >/dev/null; then
    "$SBK" -r "$1" --json snapshots | jq -r '.[].id'
  else
    "$SBK" -r "$1" --json snapshots | grep -o '"id": *"[0-9a-f]*"' | sed 's/.*"\([0-9a-f]*\)"$/\1/'
  fi
}
mapfile -t IDS < <(snapshot_ids "$W/sbk")
mapfile -t IDS_ND < <(snapshot_ids "$W/sbk-nodelta")
[ "${#IDS[@]}" = "$RUNS" ] && [ "${#IDS_ND[@]}" = "$RUNS" ] ||
  { echo "expected $RUNS snapshots per sbk repository, got ${#IDS[@]} and ${#IDS_ND[@]}" >&2; exit 1; }
if command -v jq >/dev/null; then
  echo "sbk delta blobs per snapshot (blobs_delta / blobs_new, from sbk snapshots --json):"
  "$SBK" -r "$W/sbk" --json snapshots | jq -r 'to_entries[] | "  run \(.key): \(.value.summary.blobs_delta) / \(.value.summary.blobs_new)"' |
    awk -v r="$RUNS" 'NR <= 3 || NR == r'
fi

# --- restore check -------------------------------------------------------------------------------
echo
echo "== restore: sbk dump <id> > /dev/null, median of 5 timings; then sbk dump <id> | md5sum against the original dump"
mapfile -t MD5S < <(awk '{print $3}' "$W/results")
bad=0
restore_check() { # LABEL REPO RUN ID
  local label=$1 repo=$2 run=$3 id=$4 got verdict i times=()
  # Restores take a few tenths of a second: the median of five runs, with its peak RSS.
  for i in 1 2 3 4 5; do
    timed restore "$SBK" -q -r "$repo" dump "$id" > /dev/null
    times+=("$SECS $RSS")
  done
  read -r SECS RSS < <(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
  got=$("$SBK" -q -r "$repo" dump "$id" | md5sum | cut -d' ' -f1)
  if [ "$got" = "${MD5S[$run]}" ]; then verdict=OK; else verdict=MISMATCH; bad=1; fi
  R_SECS=$SECS
  printf "  %-16s run %3d  %-8s %7.2f s  %7.1f MiB/s  peak RSS %6.1f MiB  md5 %s\n" "$label" "$run" "${id:0:8}" \
    "$SECS" "$(awk -v b="$(awk -v r="$run" '$1 == r {print $2}' "$W/results")" -v s="$SECS" 'BEGIN { print b / 1048576 / (s > 0 ? s : 0.01) }')" \
    "$(awk -v k="$RSS" 'BEGIN { print k / 1024 }')" "$verdict"
}
restore_check "sbk --no-delta" "$W/sbk-nodelta" $((RUNS - 1)) "${IDS_ND[$((RUNS - 1))]}"
BASE=$R_SECS
declare -A seen
RATIOS=()
for p in 1 2 $((RUNS / 2)) $((RUNS - 1)); do
  [ "$p" -lt "$RUNS" ] && [ -z "${seen[$p]:-}" ] || continue
  seen[$p]=1
  restore_check "sbk" "$W/sbk" "$p" "${IDS[$p]}"
  RATIOS+=("run $p: $(awk -v a="$R_SECS" -v b="$BASE" 'BEGIN { printf "%.2fx", a / (b > 0 ? b : 0.01) }')")
done
echo "restore time of delta snapshots relative to the --no-delta restore of run $((RUNS - 1)) (${BASE} s):"
for r in "${RATIOS[@]}"; do echo "  $r"; done

echo
echo "== total $(( $(date +%s) - T0 )) s"
if [ "$bad" != 0 ]; then echo "MISMATCH: a restored dump differs from the original" >&2; exit 1; fi
