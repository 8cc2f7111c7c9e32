#!/usr/bin/env bash
# Snapshot and restore throughput on a loopback S3 server beside a local folder, and the S3
# requests per GiB ingested and restored. Servers (SERVER=s3s|seaweedfs|both, default both):
# - s3s: s3s-fs (examples/s3_server.rs), which counts the requests itself;
# - seaweedfs: SeaweedFS (`weed server`: master, volume server, filer and S3 gateway in one
#   process; $SBK_WEED or the one scripts/ci-setup.sh installs), whose requests are the sum of
#   its Prometheus counter SeaweedFS_s3_request_total (every S3 request, HEAD included, counted
#   once by bucket, type and status).
#
# Input: SIZE bytes of dump-like text (examples/gendump.rs). Each figure is the median of RUNS
# runs into fresh repositories; restore is `sbk dump` to /dev/null (S3 with --no-cache, so every
# blob is a ranged GET). Local and S3 runs alternate, per server. Target: S3 throughput at least
# 80% of the local folder's.
#
# PIN=1 runs the server on CPU 1 and every sbk command on CPU 0 (local runs too), as with a
# MinIO on its own host: the figure then compares sbk's own cost on both backends instead of
# sharing two cores between sbk and a server that hashes every byte (MD5 ETags).
#
# FAST_GET=1 has s3s-fs answer ranged GETs with one positioned read instead of s3s-fs's
# 4 KiB steps and whole-object MD5 per GET (see examples/s3_server.rs): restore figures then
# measure sbk rather than s3s-fs. Uploads are s3s-fs's either way; SeaweedFS ignores it.
#
# Binaries come from $CARGO_TARGET_DIR (else ./target) and are copied aside before the runs,
# so a build in the same target folder meanwhile cannot swap them.
#
# Usage: [SERVER=both] [SIZE=1073741824] [CONNECTIONS=8] [PIN=1] [FAST_GET=1] [RUNS=3] benches/s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER=${SERVER:-both}
SIZE=${SIZE:-1073741824}
CONNECTIONS=${CONNECTIONS:-8}
PIN=${PIN:-0}
RUNS=${RUNS:-3}
FAST_GET=${FAST_GET:-0}
case "$SERVER" in
  s3s) SERVERS=(s3s) ;;
  seaweedfs) SERVERS=(seaweedfs) ;;
  both) SERVERS=(s3s seaweedfs) ;;
  *) echo "SERVER must be s3s, seaweedfs or both, not $SERVER" >&2; exit 2 ;;
esac
WEED=${SBK_WEED:-/opt/sbk-test-tools/seaweedfs/bin/weed}
[ -x "$WEED" ] || WEED=$(command -v weed || true)
if [ "$SERVER" != s3s ] && [ ! -x "$WEED" ]; then
  echo "SeaweedFS (weed) is not installed: run scripts/ci-setup.sh, or set SBK_WEED" >&2
  exit 2
fi
cargo build --release --locked --quiet --bin sbk --example gendump --example s3_server
REL=${CARGO_TARGET_DIR:-$PWD/target}/release
ON_SERVER_CPU=()
if [ "$PIN" = 1 ]; then
  ON_SERVER_CPU=(taskset -c 1)
  # Every sbk command below, and the pipelines around it, on CPU 0.
  taskset -pc 0 $$ > /dev/null
fi
W=$(mktemp -d /tmp/sbk-s3-bench.XXXXXX)
SERVER_PID=
# SIGKILL: the server's data is thrown away, and weed may take seconds to stop on SIGTERM.
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
cleanup() { stop_server; rm -rf "$W"; }
trap cleanup EXIT
mkdir "$W/bin"
cp "$REL/sbk" "$REL/examples/gendump" "$REL/examples/s3_server" "$W/bin/"
SBK=$W/bin/sbk

# Test-only keys for the throwaway servers, never real credentials.
AWS_ACCESS_KEY_ID="bench$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_CACHE_DIR=$W/cache SBK_S3_CONNECTIONS=$CONNECTIONS

"$W/bin/gendump" "$SIZE" 7 > "$W/input"

start_s3s() {
  mkdir -p "$W/s3root"
  SBK_BENCH_FAST_GET=$FAST_GET ${ON_SERVER_CPU[@]+"${ON_SERVER_CPU[@]}"} "$W/bin/s3_server" "$W/s3root" "$W/port" "$W/stats" &
  SERVER_PID=$!
  for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
  PORT=$(cat "$W/port")
  LABEL="s3s-fs (examples/s3_server.rs), FAST_GET=$FAST_GET"
}

# Sets FREE to a loopback port below 45000 whose gRPC twin (+10000, SeaweedFS's convention) is
# free too, neither among TAKEN.
free_port_pair() {
  local p
  while :; do
    p=$((20000 + RANDOM % 15000))
    [[ " ${TAKEN[*]} " == *" $p "* || " ${TAKEN[*]} " == *" $((p + 10000)) "* ]] && continue
    (: < "/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    (: < "/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null && continue
    TAKEN+=("$p" "$((p + 10000))"); FREE=$p; return
  done
}

start_seaweedfs() {
  local master volume filer metrics
  TAKEN=()
  free_port_pair; master=$FREE; free_port_pair; volume=$FREE; free_port_pair; filer=$FREE
  free_port_pair; PORT=$FREE; free_port_pair; metrics=$FREE
  mkdir -p "$W/weed"
  cat > "$W/weed/s3.json" <<JSON
{"identities": [{"name": "bench", "credentials": [{"accessKey": "$AWS_ACCESS_KEY_ID", "secretKey": "$AWS_SECRET_ACCESS_KEY"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  # Each run's bucket is a collection with volumes of its own: room for them (-volume.max), of
  # 1 GiB rather than 30 GiB each.
  (cd "$W/weed" && exec ${ON_SERVER_CPU[@]+"${ON_SERVER_CPU[@]}"} "$WEED" server -dir="$W/weed" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$master" -volume.port="$volume" \
    -filer -filer.port="$filer" -s3 -s3.port="$PORT" -s3.config="$W/weed/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort="$metrics" \
    -master.volumeSizeLimitMB=1024 -volume.max=64 > "$W/weed/weed.log" 2>&1) &
  SERVER_PID=$!
  METRICS=http://127.0.0.1:$metrics/metrics
  # Ready once a repository can be made: sbk retries until the volume server has joined.
  "$SBK" -q --retry-deadline 90s -r "s3:http://127.0.0.1:$PORT/ready" init \
    || { tail -20 "$W/weed/weed.log" >&2; exit 1; }
  LABEL="SeaweedFS $("$WEED" version 2>/dev/null | awk '/version/ {print $3; exit}') (weed server)"
}

requests() {
  case "$1" in
    s3s) sleep 0.25; awk '{ print $2 + $4 + $6 + $8 + $10 }' "$W/stats" ;;
    seaweedfs) curl -sf "$METRICS" | awk '/^SeaweedFS_s3_request_total/ { n += $NF } END { printf "%d\n", n }' ;;
  esac
}
secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
mibs() { echo "scale=1; $SIZE / 1048576 / $1" | bc; }

echo "== sbk S3 benchmark: $SIZE bytes of dump-like text, nproc=$(nproc), --s3-connections $CONNECTIONS, PIN=$PIN, SERVER=$SERVER"
for server in "${SERVERS[@]}"; do
  "start_$server"
  echo "== server: $LABEL"
  ls_t=(); lr_t=(); ss_t=(); sr_t=(); snap_ratio=(); rest_ratio=(); snap_req=0; rest_req=0
  for i in $(seq "$RUNS"); do
    rm -rf "$W/local" "$W/cache"
    "$SBK" -q -r "$W/local" init
    ls_t+=("$(secs "$SBK" -q -r "$W/local" snapshot stdin --name db.pgdump < "$W/input")")
    lr_t+=("$(secs bash -c "'$SBK' -q -r '$W/local' dump latest > /dev/null")")

    repo="s3:http://127.0.0.1:$PORT/bench$i"
    "$SBK" -q -r "$repo" init
    r0=$(requests "$server")
    ss_t+=("$(secs "$SBK" -q -r "$repo" snapshot stdin --name db.pgdump < "$W/input")")
    r1=$(requests "$server")
    sr_t+=("$(secs bash -c "'$SBK' -q --no-cache -r '$repo' dump latest > /dev/null")")
    r2=$(requests "$server")
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
  stop_server
done
