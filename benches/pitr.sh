#!/usr/bin/env bash
# Point-in-time recovery: sbk beside pgBackRest (Debian's package) on one throwaway cluster.
#
# sbk is measured twice where its WAL options matter: "new" with `wal push --parallel PARALLEL`
# in archive_command and `wal fetch --prefetch 8` (the restore_command `sbk restore --pgdata`
# writes), and "old" with `--parallel 1` and `--prefetch 0` (one repository open per WAL file,
# as before those options existed).
#
# A PostgreSQL cluster (archive_mode = on) gets `pgbench -i -s SCALE` (pgbench_accounts.filler
# made md5 text, then VACUUM FULL, as in the other benches). Its archive_command is a small
# wrapper that pushes each WAL file with the tools the current phase names (sbk, pgBackRest, both
# or none) and logs how long each push took. Every sbk command gets `--cache-dir $W/cache` (where
# pushes ahead leave their markers and fetches ahead their segments). Measured:
#   1. the first base backup: wall time and stored bytes, `sbk snapshot postgres --physical`
#      against `pgbackrest backup --type=full`;
#   2. after ~1% of pgbench_accounts rows change at random: the bytes the second base backup adds,
#      sbk (delta blobs) against `--type=incr` and `--type=diff` (target for sbk: at most 5%);
#   3. a write-heavy pgbench (DURATION s, CLIENTS clients, synchronous_commit = off, right after a
#      CHECKPOINT), once with each archiver alone (sbk old, pgBackRest, sbk new, in that order): WAL written and archived per second,
#      the archive lag sampled every second (finished segments not archived yet: the segment of
#      pg_walfile_name(pg_current_wal_lsn()) minus pg_stat_archiver.last_archived_wal's, minus one;
#      and .ready files in pg_wal/archive_status), the time
#      to drain the backlog once the load ends, and the bytes each archive stored;
#   4. push latency per WAL segment: under that load (timed by the wrapper around the tool's
#      command), and by hand on an idle machine: PUSHES consecutive saved segments, all marked
#      .ready as in a backlog, pushed one call at a time in order into fresh repositories (as the
#      archiver does: .ready becomes .done after each call); then fetched back one call at a time
#      in order (the first call included), as recovery does;
#   5. restore to a point in time T: the restore command, then pg_ctl start and replay until
#      pg_is_in_recovery() is false, for sbk old (the restore_command sbk wrote, with its
#      `--prefetch 8` made `--prefetch 0`), sbk new (as written) and pgBackRest; every restored
#      cluster's checksum against the one taken at T.
#
# pgBackRest runs with a local repo1-path, compress-type=zst at compress-level=1 (the codec and
# level sbk uses for blobs and WAL, so that the comparison is of the tools and not of zstd levels;
# pgBackRest's own default for zst is level 3: PGBR_LEVEL=3), repo1-cipher-type=aes-256-cbc (sbk
# always encrypts) with a throwaway passphrase, process-max=1 (its default; PGBR_PROCESS_MAX=2 to
# give it both cores for backups and restores) and synchronous archive-push
# (archive-async=n, its default; sbk has no asynchronous push: `--parallel` works ahead, but each
# call still returns only once its own file is stored).
# The sbk and pgBackRest commands run as the cluster's owner (`nobody` when run as root), as the
# archive and restore commands do.
#
# Usage: [SCALE=50] [DURATION=60] [CLIENTS=4] [PUSHES=20] [PARALLEL=4] [PGBR_LEVEL=1] [PGBR_PROCESS_MAX=1] \
#        [SBK=path/to/sbk] benches/pitr.sh      (about 7 minutes with the defaults on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-50}
DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-4}
PUSHES=${PUSHES:-20}
PARALLEL=${PARALLEL:-4}
PGBR_LEVEL=${PGBR_LEVEL:-1}
PGBR_PROCESS_MAX=${PGBR_PROCESS_MAX:-1}
for v in SCALE DURATION CLIENTS PUSHES PARALLEL PGBR_LEVEL PGBR_PROCESS_MAX; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
N=$((SCALE * 100000))
JOBS=$(( CLIENTS < 2 ? CLIENTS : 2 ))
T0=$(date +%s)

# --- tools ---------------------------------------------------------------------------------------
need_apt() { # PACKAGE: install with apt-get (root only)
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "missing $1: install it" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
command -v pgbackrest >/dev/null || need_apt pgbackrest
command -v bc >/dev/null || need_apt bc
pg_bindir() {
  local d
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}
BIN=$(pg_bindir) || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
if [ -z "${SBK:-}" ]; then
  cargo build --release --locked --quiet --bin sbk
  SBK=${CARGO_TARGET_DIR:-$PWD/target}/release/sbk
fi
[ -x "$SBK" ] || { echo "SBK=$SBK is not an executable" >&2; exit 2; }
SBK=$(realpath "$SBK")
PGBR=$(command -v pgbackrest)

# --- work folder, ports, cleanup -----------------------------------------------------------------
W=$(mktemp -d /tmp/sbk-pitr-bench.XXXXXX)
chmod 755 "$W"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$W"; RUN_AS=(runuser -u nobody --); fi
as_owner() { "${RUN_AS[@]}" env HOME="$W/home" "$@"; }
as_owner mkdir -p "$W/home" "$W/cache"
free_port() {
  local p=$((RANDOM % 2000 + 52000))
  while (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
PORT=$(free_port)
PG=(-h 127.0.0.1 -p "$PORT" -U postgres)
SAMPLER=
CLUSTERS=("$W/pgdata")
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  local d
  for d in "${CLUSTERS[@]}"; do
    [ -f "$d/postmaster.pid" ] && "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== sbk PITR benchmark beside pgBackRest: SCALE=$SCALE ($N accounts), DURATION=${DURATION}s, CLIENTS=$CLIENTS, PUSHES=$PUSHES, PARALLEL=$PARALLEL"
echo "   sbk new: wal push --parallel $PARALLEL, wal fetch --prefetch 8; sbk old: --parallel 1, --prefetch 0"
echo "   nproc=$(nproc), $("$BIN/postgres" --version), $("$PGBR" version), sbk $("$SBK" --version 2>/dev/null | awk '{print $2}')"
echo "   pgBackRest: compress-type=zst compress-level=$PGBR_LEVEL, aes-256-cbc, process-max=$PGBR_PROCESS_MAX, synchronous archive-push"
echo "   work folder $W, PostgreSQL on 127.0.0.1:$PORT"

# --- secrets, repositories' settings, archive wrapper -------------------------------------------
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
as_owner sh -c "umask 077; echo 'bench-$(secret)' > '$W/password'"
as_owner mkdir -p "$W/pgbr" "$W/pgbr-log" "$W/pgbr-lock" "$W/pgbr-spool"
as_owner sh -c "umask 077; cat > '$W/pgbackrest.conf'" <<EOF
[global]
repo1-path=$W/pgbr
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-$(secret)
compress-type=zst
compress-level=$PGBR_LEVEL
process-max=$PGBR_PROCESS_MAX
start-fast=y
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
spool-path=$W/pgbr-spool
repo1-retention-full=9999999
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$W/pgdata
pg1-port=$PORT
pg1-socket-path=$W
pg1-user=postgres
EOF
sbk_() { as_owner "$SBK" -q --cache-dir "$W/cache" --password-file "$W/password" "$@"; }
pgbr_() { as_owner "$PGBR" --config="$W/pgbackrest.conf" --stanza=bench "$@"; }

# archive_command: `archive.sh %p`, with a shell comment naming pgbackrest: `pgbackrest backup`
# refuses an archive_command without that word unless archive-check=n, which would also skip
# its check that the backup's WAL reached its archive. The first word of $W/archive-mode names the log of this phase,
# the rest the tools to push with, in order (old: sbk wal push; new: sbk wal push --parallel
# PARALLEL, whose lines go to say-LOG.log; pgbr; none: drop the file, for the data load).
as_owner tee "$W/archive.sh" >/dev/null <<EOF
#!/usr/bin/env bash
read -r log tools < "$W/archive-mode"
for t in \$tools; do
  t0=\$EPOCHREALTIME
  case \$t in
    old) "$SBK" -q -r "$W/sbk" --cache-dir "$W/cache" --password-file "$W/password" wal push "\$1" ;;
    new) "$SBK" -r "$W/sbk" --cache-dir "$W/cache" --password-file "$W/password" wal push --parallel $PARALLEL "\$1" >> "$W/say-\$log.log" ;;
    pgbr) "$PGBR" --config="$W/pgbackrest.conf" --stanza=bench archive-push "\$1" ;;
    none) true ;;
  esac
  rc=\$?
  echo "\$t \${1##*/} \$t0 \$EPOCHREALTIME \$rc" >> "$W/push-\$log.log"
  [ \$rc = 0 ] || exit \$rc
done
EOF
chmod 755 "$W/archive.sh"
mode() { echo "$*" | as_owner tee "$W/archive-mode" >/dev/null; }
mode load none

# --- the cluster ---------------------------------------------------------------------------------
as_owner "$BIN/initdb" -D "$W/pgdata" -A trust -U postgres >/dev/null
as_owner tee -a "$W/pgdata/postgresql.conf" >/dev/null <<EOF
archive_mode = on
archive_command = '$W/archive.sh %p  # sbk wal push and/or pgbackrest archive-push'
max_wal_size = 4GB
EOF
as_owner "$BIN/pg_ctl" -D "$W/pgdata" -l "$W/pg.log" -w \
  -o "-p $PORT -k $W -c listen_addresses=127.0.0.1" start >/dev/null
psql_() { "$BIN/psql" "${PG[@]}" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
"$BIN/createdb" "${PG[@]}" bench
echo "== pgbench -i -s $SCALE; filler = md5(aid); VACUUM FULL (WAL not archived yet)"
"$BIN/pgbench" "${PG[@]}" -q -i -s "$SCALE" bench >"$W/pgbench.log" 2>&1 || { cat "$W/pgbench.log" >&2; exit 1; }
psql_ -d bench -c "UPDATE pgbench_accounts SET filler = md5(aid::text)"
psql_ -d bench -c "VACUUM FULL pgbench_accounts"
psql_ -d bench -c "VACUUM ANALYZE"
echo "   database: $(psql_ -d bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")"

sbk_ -r "$W/sbk" init >/dev/null
pgbr_ stanza-create

settle() { sync; sleep 3; }
now() { date +%s.%N; }
secs_since() { echo "$(now) - $1" | bc; }
segno() { # WAL file name (or history/backup file name starting with one) -> segment number
  local n=${1:0:24}
  [ ${#n} = 24 ] || { echo 0; return; }
  echo $(( 16#${n:8:8} * 256 + 16#${n:16:8} ))
}
# Waits until pg_wal/archive_status has no .ready file (the archiver has caught up).
drained() { ! compgen -G "$W/pgdata/pg_wal/archive_status/*.ready" >/dev/null; }
switch_and_wait() { # switch to a new segment; wait until the old one is archived
  local last
  last=$(psql_ -d postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
  until [ "$(psql_ -d postgres -c "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do
    sleep 0.2
  done
}
size() { { du -sb "$@" 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}'; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
pct() { echo "scale=2; 100 * $1 / $2" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }

# --- 3. write-heavy load, once per archiver ------------------------------------------------------
# Run first, while each tool's archive is still empty: each load is archived by one archiver
# only, so the others' archives have a gap there; base backups and PITR come afterwards.
# sbk old and new share one repository (each has its own load's segments).
declare -A TPS WALMB ARCH_SEGS LAG_MAX READY_MAX DRAIN STORED ARCH_DURING SERIES
load() { # TOOL
  local tool=$1 lsn0 lsn1 a0 a1 t0 t1 pid
  mode "load-$tool" "$tool"
  psql_ -d bench -c CHECKPOINT
  switch_and_wait
  settle
  lsn0=$(psql_ -d postgres -c "SELECT pg_current_wal_lsn()")
  a0=$(psql_ -d postgres -c "SELECT archived_count FROM pg_stat_archiver")
  local before=$(size "$W/sbk/wal" "$W/pgbr/archive")
  t0=$(now)
  # Sampler: elapsed, current segment, last archived, lag in segments, .ready files.
  (
    set +e
    while :; do
      read -r cur last < <(psql_ -F' ' -d postgres -c \
        "SELECT pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, '') FROM pg_stat_archiver")
      ready=$(compgen -G "$W/pgdata/pg_wal/archive_status/*.ready" | wc -l || true)
      lag=$(( $(segno "$cur") - $(segno "$last") - 1 ))
      echo "$(secs_since "$t0") $cur $last $(( lag > 0 ? lag : 0 )) $ready"
      sleep 1
    done
  ) > "$W/lag-$tool.log" 2>/dev/null &
  SAMPLER=$!
  PGOPTIONS="-c synchronous_commit=off" "$BIN/pgbench" "${PG[@]}" -n -c "$CLIENTS" -j "$JOBS" -T "$DURATION" bench \
    > "$W/pgbench-$tool.log" 2>&1 || { cat "$W/pgbench-$tool.log" >&2; exit 1; }
  lsn1=$(psql_ -d postgres -c "SELECT pg_current_wal_lsn()")
  local t_end a_end; t_end=$(now)
  a_end=$(psql_ -d postgres -c "SELECT archived_count FROM pg_stat_archiver")
  # Drain: everything written during the load archived (the current segment is switched out).
  switch_and_wait
  until drained; do sleep 0.2; done
  t1=$(now)
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  a1=$(psql_ -d postgres -c "SELECT archived_count FROM pg_stat_archiver")
  TPS[$tool]=$(awk '/^tps/ {printf "%.0f", $3}' "$W/pgbench-$tool.log")
  WALMB[$tool]=$(psql_ -d postgres -c "SELECT round(pg_wal_lsn_diff('$lsn1', '$lsn0') / 1048576.0 / $DURATION, 1)")
  ARCH_SEGS[$tool]=$((a1 - a0))
  DRAIN[$tool]=$(echo "scale=1; ($t1 - $t_end) / 1" | bc)
  LAG_MAX[$tool]=$(awk 'BEGIN {m = 0} $4 > m {m = $4} END {print m}' "$W/lag-$tool.log")
  READY_MAX[$tool]=$(awk 'BEGIN {m = 0} $5 > m {m = $5} END {print m}' "$W/lag-$tool.log")
  # The lag every DURATION/6 seconds (the first sample at or after each mark).
  SERIES[$tool]=$(awk -v step="$(( (DURATION + 5) / 6 ))" '$1 >= mark {printf "%s%d", sep, $4; sep = " "; mark += step}' "$W/lag-$tool.log")
  ARCH_DURING[$tool]=$((a_end - a0))
  STORED[$tool]=$(( $(size "$W/sbk/wal" "$W/pgbr/archive") - before ))
  echo "   $tool: ${TPS[$tool]} tps, ${WALMB[$tool]} MiB/s of WAL, ${ARCH_SEGS[$tool]} files archived in $(echo "scale=1; ($t1 - $t0) / 1" | bc) s" \
    "(drained ${DRAIN[$tool]} s after the load), lag max ${LAG_MAX[$tool]} segments, .ready max ${READY_MAX[$tool]}"
  echo "      lag (finished segments not archived) every $(( (DURATION + 5) / 6 )) s: ${SERIES[$tool]}"
}
echo "== 3. write-heavy load: pgbench -c $CLIENTS -j 2 -T $DURATION (TPC-B, synchronous_commit=off), one archiver at a time"
load old
load pgbr
load new
# How the new pushes went: calls answered from a marker, files pushed ahead by other calls.
AHEAD_ANSWERED=$(grep -c "archived ahead by an earlier push" "$W/say-load-new.log" || true)
AHEAD_PUSHED=$(awk '/more ready files ahead/ {n += $2} END {print n + 0}' "$W/say-load-new.log")
echo "   new: $AHEAD_ANSWERED calls answered from a marker; $AHEAD_PUSHED files pushed ahead by other calls"

# --- 4. push latency: under load (from the wrapper), and by hand on saved segments ---------------
latency() { # LOGFILE TOOL -> "n mean p50 p95 max" in ms, WAL segments only
  awk -v t="$2" '$1 == t && length($2) == 24 && $2 ~ /^[0-9A-F]+$/ && $5 == 0 {print ($4 - $3) * 1000}' "$1" | sort -n |
    awk '{v[NR] = $1; s += $1} END {
      if (NR == 0) { print "0 - - - -"; exit }
      i50 = int(NR * 0.5 + 0.999); i95 = int(NR * 0.95 + 0.999)
      printf "%d %.0f %.0f %.0f %.0f\n", NR, s / NR, v[i50], v[i95], v[NR] }'
}
total_s() { # LOGFILE TOOL -> seconds from the first call's start to the last call's end
  awk -v t="$2" '$1 == t {if (a == "") a = $3; b = $4} END {printf "%.2f", b - a}' "$1"
}
declare -A LAT_LOAD LAT_IDLE LAT_FETCH IDLE_BYTES IDLE_TOTAL FETCH_TOTAL
for t in old new pgbr; do LAT_LOAD[$t]=$(latency "$W/push-load-$t.log" "$t"); done
# PUSHES consecutive segments of the old sbk load, fetched back from its archive, pushed again
# into fresh repositories one call at a time on an idle machine, then fetched back.
as_owner mkdir -p "$W/saved/pg_wal/archive_status"
mapfile -t SAVED < <(awk '$1 == "old" && length($2) == 24 && $2 ~ /^[0-9A-F]+$/ && $5 == 0 {print $2}' "$W/push-load-old.log" | head -n "$PUSHES")
for ((i = 1; i < ${#SAVED[@]}; i++)); do
  [ $(( $(segno "${SAVED[i]}") - $(segno "${SAVED[i - 1]}") )) = 1 ] ||
    { echo "saved segments not consecutive: ${SAVED[i - 1]} then ${SAVED[i]}" >&2; exit 1; }
done
for s in "${SAVED[@]}"; do sbk_ -r "$W/sbk" wal fetch "$s" "$W/saved/pg_wal/$s"; done
sbk_ -r "$W/sbk-idle-old" init >/dev/null
sbk_ -r "$W/sbk-idle-new" init >/dev/null
# What every sbk invocation pays before any work: opening the repository (the Argon2id key
# derivation). `sbk snapshots` on the empty repository, median of five.
OPEN_MS=$(for i in 1 2 3 4 5; do
  t0=$EPOCHREALTIME; sbk_ -r "$W/sbk-idle-old" snapshots >/dev/null; echo "($EPOCHREALTIME - $t0) * 1000" | bc
done | sort -n | sed -n 3p | cut -d. -f1)
as_owner mkdir -p "$W/pgbr-idle"
pgbr_ --repo1-path="$W/pgbr-idle" stanza-create
settle
# A backlog: every saved segment marked .ready; each call archives the oldest, which then
# becomes .done (what the archiver does; only sbk new looks at the other .ready files).
: > "$W/push-idle.log"; : > "$W/say-idle.log"
for t in old pgbr new; do
  for s in "${SAVED[@]}"; do as_owner touch "$W/saved/pg_wal/archive_status/$s.ready"; done
  for s in "${SAVED[@]}"; do
    t0=$EPOCHREALTIME
    case $t in
      old) sbk_ -r "$W/sbk-idle-old" wal push "$W/saved/pg_wal/$s" ;;
      new) as_owner "$SBK" --cache-dir "$W/cache" --password-file "$W/password" -r "$W/sbk-idle-new" \
             wal push --parallel "$PARALLEL" "$W/saved/pg_wal/$s" >> "$W/say-idle.log" ;;
      pgbr) pgbr_ --repo1-path="$W/pgbr-idle" archive-push "$W/saved/pg_wal/$s" ;;
    esac
    echo "$t $s $t0 $EPOCHREALTIME 0" >> "$W/push-idle.log"
    as_owner mv "$W/saved/pg_wal/archive_status/$s.ready" "$W/saved/pg_wal/archive_status/$s.done"
  done
  rm -f "$W/saved/pg_wal/archive_status/"*
  LAT_IDLE[$t]=$(latency "$W/push-idle.log" "$t"); IDLE_TOTAL[$t]=$(total_s "$W/push-idle.log" "$t")
done
IDLE_ANSWERED=$(grep -c "archived ahead by an earlier push" "$W/say-idle.log" || true)
# The same segments fetched back one call at a time, in order, the first call included (what
# restore_command does during replay): sbk old with --prefetch 0, new with --prefetch 8.
as_owner mkdir -p "$W/fetched"
: > "$W/fetch-idle.log"; : > "$W/say-fetch.log"
for t in old pgbr new; do
  for s in "${SAVED[@]}"; do
    t0=$EPOCHREALTIME
    case $t in
      old) sbk_ -r "$W/sbk-idle-old" wal fetch "$s" "$W/fetched/$s" ;;
      new) as_owner "$SBK" --cache-dir "$W/cache" --password-file "$W/password" -r "$W/sbk-idle-new" \
             wal fetch --prefetch 8 "$s" "$W/fetched/$s" >> "$W/say-fetch.log" ;;
      pgbr) pgbr_ --repo1-path="$W/pgbr-idle" archive-get "$s" "$W/fetched/$s" ;;
    esac
    echo "$t $s $t0 $EPOCHREALTIME 0" >> "$W/fetch-idle.log"
    cmp -s "$W/fetched/$s" "$W/saved/pg_wal/$s" || { echo "$t: fetched $s differs from the pushed segment" >&2; exit 1; }
    rm -f "$W/fetched/$s"
  done
  LAT_FETCH[$t]=$(latency "$W/fetch-idle.log" "$t"); FETCH_TOTAL[$t]=$(total_s "$W/fetch-idle.log" "$t")
done
FETCH_AHEAD=$(grep -c "(fetched ahead)" "$W/say-fetch.log" || true)
FETCH_LEFT=$(find "$W/cache/wal" -path '*/fetched/*' -type f 2>/dev/null | wc -l)
IDLE_BYTES[old]=$(size "$W/sbk-idle-old/wal"); IDLE_BYTES[new]=$(size "$W/sbk-idle-new/wal"); IDLE_BYTES[pgbr]=$(size "$W/pgbr-idle/archive")
echo "== 4. WAL push and fetch latency per call, ms (n mean p50 p95 max)"
for t in old new pgbr; do
  echo "   $t: push under load ${LAT_LOAD[$t]}; push idle ${LAT_IDLE[$t]} (${IDLE_TOTAL[$t]} s in all); fetch idle ${LAT_FETCH[$t]} (${FETCH_TOTAL[$t]} s in all)"
done
echo "   new, idle: $IDLE_ANSWERED of ${#SAVED[@]} pushes answered from a marker; $FETCH_AHEAD of ${#SAVED[@]} fetches answered from the segments fetched ahead; $FETCH_LEFT left in the fetch-ahead folder"
echo "   sbk snapshots on an empty repository (opening it: key derivation, listing): ${OPEN_MS} ms (median of 5)"
[ "${#SAVED[@]}" -gt 0 ] &&
  echo "   stored per 16 MiB segment (idle pushes): sbk old $(( IDLE_BYTES[old] / ${#SAVED[@]} )), new $(( IDLE_BYTES[new] / ${#SAVED[@]} )), pgBackRest $(( IDLE_BYTES[pgbr] / ${#SAVED[@]} )) bytes"
rm -rf "$W/saved" "$W/fetched" "$W/sbk-idle-old" "$W/sbk-idle-new" "$W/pgbr-idle"
# --- 1. first base backups -----------------------------------------------------------------------
mode backup new pgbr
sbk_data() { du -sb --exclude=wal "$W/sbk" | cut -f1; }   # the repository without its WAL archive
pgbr_data() { size "$W/pgbr/backup"; }
echo "== 1. first base backup (archive_command pushes with sbk new and pgBackRest from here on)"
psql_ -d postgres -c CHECKPOINT; settle
s0=$(sbk_data); t0=$(now)
sbk_ -r "$W/sbk" snapshot postgres --physical "postgresql://postgres@127.0.0.1:$PORT/postgres" >/dev/null
B1_T_SBK=$(secs_since "$t0"); B1_SBK=$(( $(sbk_data) - s0 ))
psql_ -d postgres -c CHECKPOINT; settle
p0=$(pgbr_data); t0=$(now)
pgbr_ backup --type=full
B1_T_PGBR=$(secs_since "$t0"); B1_PGBR=$(( $(pgbr_data) - p0 ))
DBSIZE=$(psql_ -d postgres -c "SELECT sum(pg_database_size(datname)) FROM pg_database")
printf "   cluster %s MiB; sbk %.2f s, %s MiB stored; pgBackRest full %.2f s, %s MiB stored\n" \
  "$(mib "$DBSIZE")" "$B1_T_SBK" "$(mib "$B1_SBK")" "$B1_T_PGBR" "$(mib "$B1_PGBR")"

# --- 2. second base backups after ~1% of rows changed --------------------------------------------
echo "== 2. UPDATE of ~1% of pgbench_accounts rows at random, then a second base backup"
RELSIZE="SELECT pg_relation_size('pgbench_accounts') || ' ' || pg_relation_size('pgbench_accounts_pkey')"
read -r heap0 idx0 < <(psql_ -d bench -c "$RELSIZE")
psql_ -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1
  WHERE aid IN (SELECT (random() * $((N - 1)))::int + 1 FROM generate_series(1, $((N / 100))))"
read -r heap1 idx1 < <(psql_ -d bench -c "$RELSIZE")
echo "   pgbench_accounts grew from $(mib "$heap0") to $(mib "$heap1") MiB (new row versions), its primary key from $(mib "$idx0") to $(mib "$idx1") MiB"
psql_ -d postgres -c CHECKPOINT; settle
s0=$(sbk_data); t0=$(now)
sbk_ -r "$W/sbk" --json snapshot postgres --physical "postgresql://postgres@127.0.0.1:$PORT/postgres" > "$W/b2.json"
B2_T_SBK=$(secs_since "$t0"); B2_SBK=$(( $(sbk_data) - s0 ))
if command -v jq >/dev/null; then
  jq -r '.summary // . | "   sbk summary: read \(.bytes_in) bytes; \(.blobs_new) new blobs of \(.blobs_total), \(.blobs_delta) of them deltas (\(.bytes_delta) bytes); \(.bytes_added) bytes added"' "$W/b2.json" || true
fi
psql_ -d postgres -c CHECKPOINT; settle
p0=$(pgbr_data); t0=$(now)
pgbr_ backup --type=incr
B2_T_INCR=$(secs_since "$t0"); B2_INCR=$(( $(pgbr_data) - p0 ))
psql_ -d postgres -c CHECKPOINT; settle
p0=$(pgbr_data); t0=$(now)
pgbr_ backup --type=diff
B2_T_DIFF=$(secs_since "$t0"); B2_DIFF=$(( $(pgbr_data) - p0 ))
printf "   sbk %.2f s, +%s bytes (%s%% of its first); pgBackRest incr %.2f s, +%s bytes (%s%%); diff %.2f s, +%s bytes (%s%%)\n" \
  "$B2_T_SBK" "$B2_SBK" "$(pct "$B2_SBK" "$B1_SBK")" "$B2_T_INCR" "$B2_INCR" "$(pct "$B2_INCR" "$B1_PGBR")" \
  "$B2_T_DIFF" "$B2_DIFF" "$(pct "$B2_DIFF" "$B1_PGBR")"

# --- 5. restore to a point in time T -------------------------------------------------------------
# Writes after the base backups (replayed by both restores), the checksum and time T, then writes
# that must not come back.
WRITES=$(( DURATION / 4 > 5 ? DURATION / 4 : 5 ))
LSN_B=$(psql_ -d postgres -c "SELECT pg_current_wal_lsn()")
echo "== 5. pgbench -T $WRITES after the base backups; checksum at T; more writes; restore to T"
"$BIN/pgbench" "${PG[@]}" -n -c "$CLIENTS" -j "$JOBS" -T "$WRITES" bench > "$W/pgbench-pitr.log" 2>&1 || { cat "$W/pgbench-pitr.log" >&2; exit 1; }
SUM="SELECT (SELECT md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts)
  || '/' || (SELECT count(*) || ':' || coalesce(sum(delta), 0) FROM pgbench_history)
  || '/' || (SELECT sum(bbalance) FROM pgbench_branches) || '/' || (SELECT sum(tbalance) FROM pgbench_tellers)"
AT_T=$(psql_ -d bench -c "$SUM")
read -r T_RFC LSN_T < <(psql_ -F' ' -d postgres -c "SELECT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_current_wal_lsn()")
T_PG=$(echo "$T_RFC" | sed 's/T/ /; s/Z$/+00/')
sleep 1.1
psql_ -d bench -c "UPDATE pgbench_accounts SET abalance = abalance - 1000 WHERE aid % 100 = 0"
psql_ -d bench -c "DELETE FROM pgbench_history WHERE mtime > '$T_PG'::timestamptz - interval '1 hour'"
[ "$(psql_ -d bench -c "$SUM")" != "$AT_T" ] || { echo "the writes after T changed nothing" >&2; exit 1; }
switch_and_wait
until drained; do sleep 0.2; done
REPLAY_MB=$(psql_ -d postgres -c "SELECT round(pg_wal_lsn_diff('$LSN_T', '$LSN_B') / 1048576.0, 1)")
declare -A R_RESTORE R_REPLAY R_TOTAL R_OK
restore() { # old, new or pgbr
  local tool=$1 dir=$W/restored-$1 port t0 t1 t2 got
  port=$(free_port)
  psql_ -d postgres -c CHECKPOINT; settle
  CLUSTERS+=("$dir")
  t0=$(now)
  if [ "$tool" != pgbr ]; then
    sbk_ -r "$W/sbk" restore latest --pgdata "$dir" --target-time "$T_RFC" >/dev/null
    grep -q "^restore_command = .* wal fetch --prefetch 8 %f %p'$" "$dir/postgresql.auto.conf" ||
      { grep restore_command "$dir/postgresql.auto.conf" >&2; echo "sbk restore wrote no --prefetch 8" >&2; exit 1; }
    # old: the same command, fetching one segment per call.
    [ "$tool" = old ] && as_owner sed -i 's/ wal fetch --prefetch 8 %f %p/ wal fetch --prefetch 0 %f %p/' "$dir/postgresql.auto.conf"
  else
    as_owner mkdir -m 700 "$dir"
    pgbr_ --pg1-path="$dir" --type=time --target="$T_PG" --target-action=promote restore
  fi
  t1=$(now)
  as_owner "$BIN/pg_ctl" -D "$dir" -l "$W/restored-$tool.log" -w -t 600 \
    -o "-p $port -k $W -c listen_addresses=127.0.0.1 -c archive_mode=off" start >/dev/null
  until [ "$("$BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -X -At -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    if awk -v a="$(now)" -v b="$t1" 'BEGIN { exit !(a - b > 600) }'; then
      tail -20 "$W/restored-$tool.log" >&2; echo "$tool: recovery did not end within 600 s" >&2; exit 1
    fi
    sleep 0.1
  done
  t2=$(now)
  got=$("$BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -X -At -d bench -c "$SUM")
  R_RESTORE[$tool]=$(echo "$t1 - $t0" | bc); R_REPLAY[$tool]=$(echo "$t2 - $t1" | bc); R_TOTAL[$tool]=$(echo "$t2 - $t0" | bc)
  if [ "$got" = "$AT_T" ]; then R_OK[$tool]=OK; else R_OK[$tool]=MISMATCH; fi
  grep -h "restore_command" "$dir/postgresql.auto.conf" | sed "s|$W|\$W|g; s/^/   $tool: /"
  printf "   %s: restore %.2f s, start + replay %.2f s, total %.2f s; checksum at T %s\n" \
    "$tool" "${R_RESTORE[$tool]}" "${R_REPLAY[$tool]}" "${R_TOTAL[$tool]}" "${R_OK[$tool]}"
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  rm -rf "$dir"
}
echo "   T = $T_RFC; WAL written between the second base backups and T: $REPLAY_MB MiB (plus what the backups themselves need)"
restore old
restore new
restore pgbr
FETCH_LEFT_PITR=$(find "$W/cache/wal" -path '*/fetched/*' -type f 2>/dev/null | wc -l)
echo "   segments left in the fetch-ahead folder after the restores: $FETCH_LEFT_PITR"

# --- summary -------------------------------------------------------------------------------------
lat() { echo "$1" | awk -v f="$2" '{print $f}'; }
mps() { lat "$1" 2; }   # the mean of a latency line
lat4() { echo "$(lat "$1" 2) / $(lat "$1" 3) / $(lat "$1" 4) ($(lat "$1" 1))"; }
row() { # MEASURE NEW OLD PGBR [NEW_NUMBER OLD_NUMBER PGBR_NUMBER]: ratios new / pgbr and old / pgbr
  local rn="" ro=""
  if [ $# -ge 7 ]; then rn=$(ratio "$5" "$7"); [ -n "$6" ] && ro=$(ratio "$6" "$7"); fi
  printf "| %s | %s | %s | %s | %s | %s |\n" "$1" "$2" "$3" "$4" "$rn" "$ro"
}
f2() { printf "%.2f" "$1"; }
per_seg() { echo "scale=2; ${STORED[$1]} / ${ARCH_SEGS[$1]} / 1048576" | bc; }
echo
echo "== summary (MiB = 2^20 bytes; new = sbk wal push --parallel $PARALLEL, wal fetch --prefetch 8; old = --parallel 1, --prefetch 0;"
echo "   ratio = sbk / pgBackRest; one run, 2 cores)"
{
  printf "| measure | sbk new | sbk old | pgBackRest | new / pgBR | old / pgBR |\n"
  printf "|---|---:|---:|---:|---:|---:|\n"
  row "1. full base backup, s" "$(f2 "$B1_T_SBK")" "" "$(f2 "$B1_T_PGBR")" "$B1_T_SBK" "" "$B1_T_PGBR"
  row "1. full base backup stored, MiB (cluster $(mib "$DBSIZE") MiB)" "$(mib "$B1_SBK")" "" "$(mib "$B1_PGBR")" "$B1_SBK" "" "$B1_PGBR"
  row "2. second base backup, s (pgBackRest incr)" "$(f2 "$B2_T_SBK")" "" "$(f2 "$B2_T_INCR")" "$B2_T_SBK" "" "$B2_T_INCR"
  row "2. second backup added, MiB (incr)" "$(mib "$B2_SBK")" "" "$(mib "$B2_INCR")" "$B2_SBK" "" "$B2_INCR"
  row "2. second backup added, % of first (incr)" "$(pct "$B2_SBK" "$B1_SBK")%" "" "$(pct "$B2_INCR" "$B1_PGBR")%"
  row "2. pgBackRest diff: s, MiB, % of first" "" "" "$(f2 "$B2_T_DIFF") s, $(mib "$B2_DIFF") MiB, $(pct "$B2_DIFF" "$B1_PGBR")%"
  row "3. pgbench tps during the load" "${TPS[new]}" "${TPS[old]}" "${TPS[pgbr]}" "${TPS[new]}" "${TPS[old]}" "${TPS[pgbr]}"
  row "3. WAL written, MiB/s" "${WALMB[new]}" "${WALMB[old]}" "${WALMB[pgbr]}"
  row "3. WAL archived during the load, MiB/s (files x 16 MiB / DURATION)" \
    "$(echo "scale=1; ${ARCH_DURING[new]} * 16 / $DURATION" | bc)" "$(echo "scale=1; ${ARCH_DURING[old]} * 16 / $DURATION" | bc)" \
    "$(echo "scale=1; ${ARCH_DURING[pgbr]} * 16 / $DURATION" | bc)"
  row "3. archive lag max, segments (.ready max)" "${LAG_MAX[new]} (${READY_MAX[new]})" "${LAG_MAX[old]} (${READY_MAX[old]})" "${LAG_MAX[pgbr]} (${READY_MAX[pgbr]})"
  row "3. backlog drained after the load, s" "${DRAIN[new]}" "${DRAIN[old]}" "${DRAIN[pgbr]}"
  row "3. archive stored per segment, MiB" "$(per_seg new)" "$(per_seg old)" "$(per_seg pgbr)" "$(per_seg new)" "$(per_seg old)" "$(per_seg pgbr)"
  row "4. push under load, ms per call, mean / p50 / p95 (n)" "$(lat4 "${LAT_LOAD[new]}")" "$(lat4 "${LAT_LOAD[old]}")" "$(lat4 "${LAT_LOAD[pgbr]}")" \
    "$(mps "${LAT_LOAD[new]}")" "$(mps "${LAT_LOAD[old]}")" "$(mps "${LAT_LOAD[pgbr]}")"
  row "4. push idle, a backlog of ${#SAVED[@]} ready segments, ms per call (n)" "$(lat4 "${LAT_IDLE[new]}")" "$(lat4 "${LAT_IDLE[old]}")" "$(lat4 "${LAT_IDLE[pgbr]}")" \
    "$(mps "${LAT_IDLE[new]}")" "$(mps "${LAT_IDLE[old]}")" "$(mps "${LAT_IDLE[pgbr]}")"
  row "4. the same backlog, s in all" "${IDLE_TOTAL[new]}" "${IDLE_TOTAL[old]}" "${IDLE_TOTAL[pgbr]}" "${IDLE_TOTAL[new]}" "${IDLE_TOTAL[old]}" "${IDLE_TOTAL[pgbr]}"
  row "4. fetch idle, ${#SAVED[@]} consecutive segments, ms per call (n)" "$(lat4 "${LAT_FETCH[new]}")" "$(lat4 "${LAT_FETCH[old]}")" "$(lat4 "${LAT_FETCH[pgbr]}")" \
    "$(mps "${LAT_FETCH[new]}")" "$(mps "${LAT_FETCH[old]}")" "$(mps "${LAT_FETCH[pgbr]}")"
  row "4. the same fetches, s in all" "${FETCH_TOTAL[new]}" "${FETCH_TOTAL[old]}" "${FETCH_TOTAL[pgbr]}" "${FETCH_TOTAL[new]}" "${FETCH_TOTAL[old]}" "${FETCH_TOTAL[pgbr]}"
  row "4. one archiver's capacity under load, MiB/s (16 MiB / mean push)" \
    "$(echo "scale=1; 16000 / $(mps "${LAT_LOAD[new]}")" | bc)" "$(echo "scale=1; 16000 / $(mps "${LAT_LOAD[old]}")" | bc)" \
    "$(echo "scale=1; 16000 / $(mps "${LAT_LOAD[pgbr]}")" | bc)"
  row "5. restore, s" "$(f2 "${R_RESTORE[new]}")" "$(f2 "${R_RESTORE[old]}")" "$(f2 "${R_RESTORE[pgbr]}")" "${R_RESTORE[new]}" "${R_RESTORE[old]}" "${R_RESTORE[pgbr]}"
  row "5. start + replay to T, s" "$(f2 "${R_REPLAY[new]}")" "$(f2 "${R_REPLAY[old]}")" "$(f2 "${R_REPLAY[pgbr]}")" "${R_REPLAY[new]}" "${R_REPLAY[old]}" "${R_REPLAY[pgbr]}"
  row "5. restore to T in all, s" "$(f2 "${R_TOTAL[new]}")" "$(f2 "${R_TOTAL[old]}")" "$(f2 "${R_TOTAL[pgbr]}")" "${R_TOTAL[new]}" "${R_TOTAL[old]}" "${R_TOTAL[pgbr]}"
  row "5. checksum at T" "${R_OK[new]}" "${R_OK[old]}" "${R_OK[pgbr]}"
}
echo
echo "== total $(( $(date +%s) - T0 )) s"
for t in old new pgbr; do
  [ "${R_OK[$t]}" = OK ] || { echo "MISMATCH: a restored cluster ($t) differs from the cluster at T" >&2; exit 1; }
done
