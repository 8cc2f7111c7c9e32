#!/usr/bin/env bash
# The Storage part of `sbk snapshot supabase` against `rclone copy` of the same buckets, both from
# a loopback S3 server (s3s-fs, examples/s3_server.rs) standing in for Storage's S3 endpoint.
#
# Workload: bucket `small` with SMALL (10,000) objects of 10 KiB in 100 folders, bucket `large`
# with LARGE (20) objects of LARGE_MIB (50) MiB. Contents are base64 of /dev/urandom: random,
# but compressible a little (6 bits of entropy per byte: zstd -3 keeps 75%). They are written to
# local files first, then uploaded with `rclone copy`. A plain PostgreSQL cluster stands in for
# the project's database: it holds only the table storage.buckets with the two buckets, which is
# where sbk learns which buckets exist.
#
# Measured, each the median of RUNS rounds into a fresh repository / fresh target folder:
#   1. `sbk snapshot supabase` (first snapshot): wall time and peak RSS (/usr/bin/time -v);
#      includes the tiny database's pg_dump and roles (their cost alone is printed at the end,
#      from one `--no-storage` snapshot).
#   2. one `rclone copy src: DIR --transfers 8 --checkers 16` of both buckets (the remote's root
#      lists the buckets as folders, as sbk takes every bucket in one run): wall time and peak RSS.
#   3. after CHANGED (10) small objects get new content (re-uploaded by rclone, same size, new
#      time), a second `sbk snapshot supabase` into the same repository: wall time, objects
#      downloaded and reused, the GETs and HEADs the server saw (its listings carry ETags, as
#      S3's and MinIO's do, so sbk reuses an unchanged object from the listing alone; without
#      them it sends a HEAD for each object whose size and time match the parent snapshot), and
#      its time as a share of the first snapshot's.
# Also printed: CPU seconds (user+sys) of the client and of the S3 server per step, since on a
# small machine the two share the cores.
# Targets: sbk no slower than rclone, sbk's peak RSS under 200 MiB, the second snapshot under
# 10% of the first's time.
#
# Every step is run with the page cache warm for the server's files (all fit in memory), and
# after a `sync` so one step's writeback does not land in the next one's time.
#
# Usage: [RUNS=3] [CONNECTIONS=8] [SMALL=10000] [LARGE=20] [LARGE_MIB=50] [CHANGED=10]
#        benches/supabase-storage.sh
# CONNECTIONS is sbk's --s3-connections (parallel GETs); rclone keeps --transfers 8. The server
# takes its settings from the environment (examples/s3_server.rs): SBK_BENCH_LIST_NO_ETAG=1 for
# listings without ETags, SBK_BENCH_S3S_FS_LIST=1 for s3s-fs's own listing (every page stats the
# whole bucket).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-8}
SMALL=${SMALL:-10000}
LARGE=${LARGE:-20}
LARGE_MIB=${LARGE_MIB:-50}
CHANGED=${CHANGED:-10}
FOLDERS=100
for v in RUNS CONNECTIONS SMALL LARGE LARGE_MIB CHANGED; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
PER_FOLDER=$((SMALL / FOLDERS))
[ $((PER_FOLDER * FOLDERS)) = "$SMALL" ] && [ "$PER_FOLDER" -le 1000 ] \
  || { echo "SMALL must be a multiple of $FOLDERS, at most $((FOLDERS * 1000))" >&2; exit 2; }
[ "$CHANGED" -le "$SMALL" ] || { echo "CHANGED must be at most SMALL" >&2; exit 2; }
need_apt() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "missing $1: install it" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
command -v rclone >/dev/null || need_apt rclone
[ -x /usr/bin/time ] || need_apt time
command -v jq >/dev/null || need_apt jq
command -v bc >/dev/null || need_apt bc
pg_bindir() {
  local d
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}
BIN=$(pg_bindir) || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
cargo build --release --locked --quiet --bin sbk --example s3_server
SBK=$PWD/target/release/sbk

W=$(mktemp -d /tmp/sbk-supabase-storage-bench.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown nobody "$W"; RUN_AS=(runuser -u nobody --); fi
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

# Test-only keys for the throwaway server, never real credentials.
KEY="bench$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SECRET="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# No SBK_CACHE_DIR: sbk caches no blobs for a local repository unless asked to (with a cache,
# every new blob is also written to a file of its own there).
unset SBK_CACHE_DIR
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# Every endpoint is loopback HTTP; a CA bundle from the environment only makes rclone's AWS SDK
# fail ("unable to load custom CA bundle").
unset AWS_CA_BUNDLE

# The database: a throwaway cluster with storage.buckets only.
PGPORT=$((55330 + RANDOM % 500))
while (echo >"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; do PGPORT=$((PGPORT + 1)); done
"${RUN_AS[@]}" "$BIN/initdb" -D "$W/pgdata" -A trust -U postgres --no-sync >/dev/null
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$W/pgdata" -l "$W/pg.log" -w \
  -o "-p $PGPORT -k $W -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
"$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE SCHEMA storage;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text, public boolean,
                              file_size_limit bigint, allowed_mime_types text[]);
INSERT INTO storage.buckets VALUES ('small', 'small', false, NULL, NULL),
                                   ('large', 'large', false, NULL, NULL);
SQL
DB="postgresql://postgres@127.0.0.1:$PGPORT/postgres"

# The S3 server.
mkdir -p "$W/s3root"
AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET \
  target/release/examples/s3_server "$W/s3root" "$W/port" "$W/stats" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
S3PORT=$(cat "$W/port")
export RCLONE_CONFIG=$W/rclone.conf
: > "$RCLONE_CONFIG"
export RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Other
export RCLONE_CONFIG_SRC_ENDPOINT=http://127.0.0.1:$S3PORT RCLONE_CONFIG_SRC_REGION=us-east-1
export RCLONE_CONFIG_SRC_ACCESS_KEY_ID=$KEY RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY=$SECRET
export RCLONE_CONFIG_SRC_FORCE_PATH_STYLE=true

# The objects: local files first (f00/o000 ... f99/o099 in small, obj01 ... in large).
SMALL_RAW=7680                               # base64 makes 10240 bytes of it
LARGE_RAW=$((LARGE_MIB * 1048576 * 3 / 4))   # and LARGE_MIB MiB of this
for f in $(seq 0 $((FOLDERS - 1))); do
  d=$W/gen/small/$(printf 'f%02d' "$f")
  mkdir -p "$d"
  head -c $((PER_FOLDER * SMALL_RAW)) /dev/urandom | base64 -w 0 | split -b 10240 -a 3 -d - "$d/o"
done
mkdir -p "$W/gen/large"
for j in $(seq "$LARGE"); do
  head -c "$LARGE_RAW" /dev/urandom | base64 -w 0 > "$W/gen/large/$(printf 'obj%02d' "$j")"
done
rclone copy -q "$W/gen/small" src:small --transfers 8 --checkers 16
rclone copy -q "$W/gen/large" src:large --transfers 8 --checkers 16
TOTAL_OBJECTS=$((SMALL + LARGE))
TOTAL_BYTES=$((SMALL * 10240 + LARGE * LARGE_MIB * 1048576))

secs() { printf '%.2f\n' "$(echo "$2 - $1" | bc)"; }
ratio() { printf '%.3f\n' "$(echo "scale=4; $1 / $2" | bc)"; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
# Requests by method so far (the server rewrites the file every 100 ms).
count() { sleep 0.25; awk -v m="$1" '{ for (i = 1; i < NF; i += 2) if ($i == m) print $(i + 1) }' "$W/stats"; }
# CPU seconds (user + sys) the server has used so far.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$SERVER_PID/stat"; }
rss_mib() { awk '/Maximum resident set size/ { printf "%.1f\n", $NF / 1024 }' "$1"; }
cpu_of() { awk '/User time|System time/ { s += $NF } END { printf "%.2f\n", s }' "$1"; }
snapshot() { # REPO OUT TIMEFILE [extra args]: one timed `sbk snapshot supabase`
  local repo=$1 out=$2 tf=$3; shift 3
  SBK_REPOSITORY=$repo SUPABASE_S3_ACCESS_KEY_ID=$KEY SUPABASE_S3_SECRET_ACCESS_KEY=$SECRET \
    /usr/bin/time -v -o "$tf" "$SBK" --json --s3-connections "$CONNECTIONS" snapshot supabase \
    --db "$DB" --storage-endpoint "http://127.0.0.1:$S3PORT" --storage-region us-east-1 \
    --no-functions "$@" > "$out"
}

echo "== sbk snapshot supabase (Storage) against rclone copy: $SMALL x 10 KiB + $LARGE x $LARGE_MIB MiB" \
  "($(echo "scale=1; $TOTAL_BYTES / 1048576" | bc) MiB), nproc=$(nproc), sbk $(git rev-parse --short HEAD)," \
  "$(rclone version | head -1), --s3-connections $CONNECTIONS, RUNS=$RUNS"
s1_t=(); s1_rss=(); s1_cpu=(); s1_srv=(); rc_t=(); rc_rss=(); rc_cpu=(); rc_srv=(); ratios=()
s2_t=(); s2_share=(); s2_get=(); s2_head=(); s2_dl=(); s2_reused=(); s2_cpu=(); s2_srv=(); s2_rss=()
rc_get=(); rc_head=(); s1_get=(); s1_head=()
for i in $(seq "$RUNS"); do
  repo=$W/repo$i
  rm -rf "$W/repo$((i - 1))"
  SBK_REPOSITORY=$repo "$SBK" -q init --kdf-memory-kib 1024 --kdf-iterations 1

  # 1. First snapshot.
  sync
  g0=$(count GET); h0=$(count HEAD); c0=$(server_cpu); t0=$(now)
  snapshot "$repo" "$W/snap1.json" "$W/time1"
  t1=$(now); c1=$(server_cpu); g1=$(count GET); h1=$(count HEAD)
  s1_t+=("$(secs "$t0" "$t1")"); s1_rss+=("$(rss_mib "$W/time1")"); s1_cpu+=("$(cpu_of "$W/time1")")
  s1_srv+=("$(secs "$c0" "$c1")"); s1_get+=($((g1 - g0))); s1_head+=($((h1 - h0)))
  objs=$(jq '.supabase.storage.objects' "$W/snap1.json"); bytes=$(jq '.supabase.storage.bytes' "$W/snap1.json")
  [ "$objs" = "$TOTAL_OBJECTS" ] && [ "$bytes" = "$TOTAL_BYTES" ] \
    || { echo "first snapshot took $objs objects, $bytes bytes" >&2; exit 1; }

  # 2. rclone copy of both buckets into a fresh folder.
  rm -rf "$W/copy"; sync
  g0=$(count GET); h0=$(count HEAD); c0=$(server_cpu); t0=$(now)
  /usr/bin/time -v -o "$W/time-rclone" rclone copy -q src: "$W/copy" --transfers 8 --checkers 16
  t1=$(now); c1=$(server_cpu); g1=$(count GET); h1=$(count HEAD)
  rc_t+=("$(secs "$t0" "$t1")"); rc_rss+=("$(rss_mib "$W/time-rclone")"); rc_cpu+=("$(cpu_of "$W/time-rclone")")
  rc_srv+=("$(secs "$c0" "$c1")"); rc_get+=($((g1 - g0))); rc_head+=($((h1 - h0)))
  n=$(find "$W/copy" -type f | wc -l); b=$(find "$W/copy" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
  [ "$n" = "$TOTAL_OBJECTS" ] && [ "$b" = "$TOTAL_BYTES" ] \
    || { echo "rclone copied $n files, $b bytes" >&2; exit 1; }
  rm -rf "$W/copy"
  ratios+=("$(ratio "${s1_t[-1]}" "${rc_t[-1]}")")

  # 3. CHANGED small objects get new content of the same size (spread over the folders; other
  # objects each round), then the second snapshot.
  : > "$W/changed"
  for c in $(seq 0 $((CHANGED - 1))); do
    k=$(( (c * SMALL / CHANGED + i) % SMALL ))
    p=$(printf 'f%02d/o%03d' $((k / PER_FOLDER)) $((k % PER_FOLDER)))
    head -c "$SMALL_RAW" /dev/urandom | base64 -w 0 > "$W/gen/small/$p"
    echo "$p" >> "$W/changed"
  done
  rclone copy -q --files-from "$W/changed" --ignore-times "$W/gen/small" src:small
  sync
  g0=$(count GET); h0=$(count HEAD); c0=$(server_cpu); t0=$(now)
  snapshot "$repo" "$W/snap2.json" "$W/time2"
  t1=$(now); c1=$(server_cpu); g1=$(count GET); h1=$(count HEAD)
  s2_t+=("$(secs "$t0" "$t1")"); s2_rss+=("$(rss_mib "$W/time2")"); s2_cpu+=("$(cpu_of "$W/time2")")
  s2_srv+=("$(secs "$c0" "$c1")"); s2_get+=($((g1 - g0))); s2_head+=($((h1 - h0)))
  s2_dl+=("$(jq '.supabase.storage.downloaded' "$W/snap2.json")")
  s2_reused+=("$(jq '.supabase.storage.reused' "$W/snap2.json")")
  s2_share+=("$(ratio "${s2_t[-1]}" "${s1_t[-1]}")")
  echo "   round $i: first snapshot ${s1_t[-1]} s (${s1_rss[-1]} MiB), rclone ${rc_t[-1]} s (${rc_rss[-1]} MiB)," \
    "second snapshot ${s2_t[-1]} s (${s2_dl[-1]} downloaded, ${s2_reused[-1]} reused," \
    "${s2_get[-1]} GET, ${s2_head[-1]} HEAD); sbk's own duration_secs:" \
    "$(jq '.summary.duration_secs' "$W/snap1.json"), $(jq '.summary.duration_secs' "$W/snap2.json")"
done

# The database part alone (pg_dump, roles, manifest): what the sbk figures carry besides Storage.
SBK_REPOSITORY=$W/repo-db "$SBK" -q init --kdf-memory-kib 1024 --kdf-iterations 1
t0=$(now); snapshot "$W/repo-db" /dev/null "$W/time3" --no-storage; t1=$(now)
DBONLY=$(secs "$t0" "$t1")

S1=$(median "${s1_t[@]}"); RC=$(median "${rc_t[@]}"); S2=$(median "${s2_t[@]}")
echo
echo "| | median | rounds |"
echo "|---|---|---|"
echo "| sbk first snapshot, s | $S1 | ${s1_t[*]} |"
echo "| rclone copy (both buckets), s | $RC | ${rc_t[*]} |"
echo "| sbk / rclone (per round) | $(median "${ratios[@]}") | ${ratios[*]} |"
echo "| sbk first snapshot peak RSS, MiB | $(median "${s1_rss[@]}") | ${s1_rss[*]} |"
echo "| rclone peak RSS, MiB | $(median "${rc_rss[@]}") | ${rc_rss[*]} |"
echo "| sbk second snapshot ($CHANGED changed), s | $S2 | ${s2_t[*]} |"
echo "| second / first snapshot (per round) | $(median "${s2_share[@]}") | ${s2_share[*]} |"
echo "| second snapshot: objects downloaded / reused | $(median "${s2_dl[@]}") / $(median "${s2_reused[@]}") | ${s2_dl[*]} / ${s2_reused[*]} |"
echo "| second snapshot: GETs / HEADs | $(median "${s2_get[@]}") / $(median "${s2_head[@]}") | ${s2_get[*]} / ${s2_head[*]} |"
echo "| second snapshot peak RSS, MiB | $(median "${s2_rss[@]}") | ${s2_rss[*]} |"
echo "| first snapshot: GETs / HEADs | $(median "${s1_get[@]}") / $(median "${s1_head[@]}") | ${s1_get[*]} / ${s1_head[*]} |"
echo "| rclone copy: GETs / HEADs | $(median "${rc_get[@]}") / $(median "${rc_head[@]}") | ${rc_get[*]} / ${rc_head[*]} |"
echo "| CPU s (user+sys) sbk first / rclone / sbk second | $(median "${s1_cpu[@]}") / $(median "${rc_cpu[@]}") / $(median "${s2_cpu[@]}") | |"
echo "| server CPU s during sbk first / rclone / sbk second | $(median "${s1_srv[@]}") / $(median "${rc_srv[@]}") / $(median "${s2_srv[@]}") | |"
echo "| sbk snapshot with --no-storage (database part only), s | $DBONLY | |"
echo
echo "targets: sbk no slower than rclone: $( [ "$(echo "$S1 <= $RC" | bc)" = 1 ] && echo met || echo MISSED);" \
  "sbk peak RSS < 200 MiB: $( [ "$(echo "$(median "${s1_rss[@]}") < 200" | bc)" = 1 ] && echo met || echo MISSED);" \
  "second snapshot < 10% of the first: $( [ "$(echo "$S2 < 0.1 * $S1" | bc)" = 1 ] && echo met || echo MISSED)"
