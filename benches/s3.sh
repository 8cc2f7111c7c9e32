#!/usr/bin/env bash
# Snapshot and restore throughput on a loopback S3 server (s3s-fs, examples/s3_server.rs)
# beside a local folder, and the S3 requests per GiB ingested and restored.
#
# Input: SIZE bytes of dump-like text (examples/gendump.rs). Each figure is the median of RUNS
# runs into fresh repositories; restore is `sbk dump` to /dev/null (S3 with --no-cache, so every
# blob is a ranged GET). Target: S3 throughput at least 80% of the local folder's.
#
# PIN=1 runs the server on CPU 1 and every sbk command on CPU 0 (local runs too), as with a
# MinIO on its own host: the figure then compares sbk's own cost on both backends instead of
# sharing two cores between sbk and a server that hashes every byte (MD5 ETags).
#
# FAST_GET=1 has the server answer ranged GETs with one positioned read instead of s3s-fs's
# 4 KiB steps and whole-object MD5 per GET (see examples/s3_server.rs): restore figures then
# measure sbk rather than s3s-fs. Uploads are s3s-fs's either way.
#
# Usage: [SIZE=1073741824] [CONNECTIONS=8] [PIN=1] [FAST_GET=1] [RUNS=3] benches/s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
CONNECTIONS=${CONNECTIONS:-8}
PIN=${PIN:-0}
RUNS=${RUNS:-3}
FAST_GET=${FAST_GET:-0}
cargo build --release --locked --quiet --bin sbk --example gendump --example s3_server
SBK=$PWD/target/release/sbk
ON_SERVER_CPU=()
if [ "$PIN" = 1 ]; then
  ON_SERVER_CPU=(taskset -c 1)
  # Every sbk command below, and the pipelines around it, on CPU 0.
  taskset -pc 0 $$ > /dev/null
fi
W=$(mktemp -d /tmp/sbk-s3-bench.XXXXXX)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

# Test-only keys for the throwaway server, never real credentials.
AWS_ACCESS_KEY_ID="bench$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_CACHE_DIR=$W/cache SBK_S3_CONNECTIONS=$CONNECTIONS

mkdir -p "$W/s3root"
SBK_BENCH_FAST_GET=$FAST_GET ${ON_SERVER_CPU[@]+"${ON_SERVER_CPU[@]}"} target/release/examples/s3_server "$W/s3root" "$W/port" "$W/stats" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
PORT=$(cat "$W/port")
target/release/examples/gendump "$SIZE" 7 > "$W/input"

secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
requests() { sleep 0.25; awk '{ print $2 + $4 + $6 + $8 + $10 }' "$W/stats"; }
mibs() { echo "scale=1; $SIZE / 1048576 / $1" | bc; }

echo "== sbk S3 benchmark: $SIZE bytes of dump-like text, nproc=$(nproc), --s3-connections $CONNECTIONS, PIN=$PIN, FAST_GET=$FAST_GET"
ls_t=(); lr_t=(); ss_t=(); sr_t=(); snap_ratio=(); rest_ratio=(); snap_req=0; rest_req=0
for i in $(seq "$RUNS"); do
  rm -rf "$W/local" "$W/cache"
  "$SBK" -q -r "$W/local" init
  ls_t+=("$(secs "$SBK" -q -r "$W/local" snapshot stdin --name db.pgdump < "$W/input")")
  lr_t+=("$(secs bash -c "'$SBK' -q -r '$W/local' dump latest > /dev/null")")

  repo="s3:http://127.0.0.1:$PORT/bench$i"
  "$SBK" -q -r "$repo" init
  r0=$(requests)
  ss_t+=("$(secs "$SBK" -q -r "$repo" snapshot stdin --name db.pgdump < "$W/input")")
  r1=$(requests)
  sr_t+=("$(secs bash -c "'$SBK' -q --no-cache -r '$repo' dump latest > /dev/null")")
  r2=$(requests)
  snap_req=$((r1 - r0)); rest_req=$((r2 - r1))
  # Local and S3 runs alternate, so a drifting machine (disk writeback, neighbours) moves both:
  # the median of each round's ratio is steadier than the ratio of the medians.
  snap_ratio+=("$(echo "scale=3; ${ls_t[-1]} / ${ss_t[-1]}" | bc)")
  rest_ratio+=("$(echo "scale=3; ${lr_t[-1]} / ${sr_t[-1]}" | bc)")
  cmp <("$SBK" -q --no-cache -r "$repo" dump latest) "$W/input" || { echo "S3 restore differs" >&2; exit 1; }
done
LS=$(median "${ls_t[@]}"); LR=$(median "${lr_t[@]}"); SS=$(median "${ss_t[@]}"); SR=$(median "${sr_t[@]}")
GIB=$(echo "scale=6; $SIZE / 1073741824" | bc)
echo "== snapshot: local ${ls_t[*]} s (median $LS, $(mibs "$LS") MiB/s); S3 ${ss_t[*]} s (median $SS, $(mibs "$SS") MiB/s); S3/local throughput $(echo "scale=3; $LS / $SS" | bc)"
echo "== restore:  local ${lr_t[*]} s (median $LR, $(mibs "$LR") MiB/s); S3 ${sr_t[*]} s (median $SR, $(mibs "$SR") MiB/s); S3/local throughput $(echo "scale=3; $LR / $SR" | bc)"
echo "== S3/local throughput per round: snapshot ${snap_ratio[*]} (median $(median "${snap_ratio[@]}")); restore ${rest_ratio[*]} (median $(median "${rest_ratio[@]}"))"
echo "== S3 requests: snapshot $snap_req ($(echo "scale=0; $snap_req / $GIB" | bc) per GiB ingested), restore $rest_req ($(echo "scale=0; $rest_req / $GIB" | bc) per GiB restored)"
echo "   every S3 restore was byte-identical to the input"
