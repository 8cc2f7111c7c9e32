#!/usr/bin/env bash
# What Object Lock costs, on SeaweedFS 4.48 on loopback (docs/object-lock.md): the same
# snapshots and prunes into a bucket without Object Lock and into one made by
# `sbk init --object-lock governance --lock-days 1`, alternating, RUNS times each.
#
# Per run: a first snapshot of SIZE bytes of dump-like text (examples/gendump), a second one of
# the same input with scattered rows changed (deltas), `forget` of the first, then `prune`.
# Reported: median snapshot and prune times for both, and what the locked prune did (files
# whose lock it extended = PutObjectRetention requests; versions it examined).
#
# Usage: [SIZE=268435456] [RUNS=3] benches/object-lock.sh
# SBK_BIN=path and GENDUMP_BIN=path use those binaries instead of building target/release's;
# SBK_WEED=path another weed binary (default: the one scripts/ci-setup.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-268435456}
RUNS=${RUNS:-3}
build=()
[ -n "${SBK_BIN:-}" ] || build+=(--bin sbk)
[ -n "${GENDUMP_BIN:-}" ] || build+=(--example gendump)
[ ${#build[@]} -eq 0 ] || cargo build --release --locked --quiet "${build[@]}"
SBK=${SBK_BIN:-$PWD/target/release/sbk}
GENDUMP=${GENDUMP_BIN:-$PWD/target/release/examples/gendump}
WEED=${SBK_WEED:-/opt/sbk-test-tools/seaweedfs/bin/weed}
[ -x "$WEED" ] || { echo "no weed binary at $WEED: run scripts/ci-setup.sh as root" >&2; exit 2; }

W=$(mktemp -d /tmp/sbk-lock-bench.XXXXXX)
WEED_PID=
cleanup() {
  if [ -n "$WEED_PID" ]; then
    kill "$WEED_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$WEED_PID" 2>/dev/null || true
  fi
  rm -rf "$W"
}
trap cleanup EXIT

# Test-only keys for the throwaway server, never real credentials.
KEY="BENCH$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SECRET="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$W/s3.json" <<EOF
{"identities":[{"name":"admin","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
# HTTP ports below 45000 whose gRPC twins (+10000) are free.
port() { while :; do p=$((20000 + RANDOM % 25000)); (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null \
  || (echo > /dev/tcp/127.0.0.1/$((p + 10000))) 2>/dev/null || { echo $p; return; }; done; }
M=$(port); V=$(port); F=$(port); S=$(port)
mkdir -p "$W/data"
"$WEED" server -dir="$W/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$M" \
  -volume.port="$V" -filer -filer.port="$F" -s3 -s3.port="$S" -s3.config="$W/s3.json" \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=256 -volume.max=100 \
  > "$W/weed.log" 2>&1 &
WEED_PID=$!
disown "$WEED_PID"

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export SBK_PASSWORD="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SBK_NEW_PASSWORD=$SBK_PASSWORD SBK_CACHE_DIR=$W/cache
INIT=(init --kdf-memory-kib 1024 --kdf-iterations 1)
# The gateway listens before a volume server has joined: init until it works.
for i in $(seq 120); do
  "$SBK" -q -r "s3:http://127.0.0.1:$S/plain/ready" "${INIT[@]}" 2>/dev/null && break
  [ "$i" = 120 ] && { echo "SeaweedFS did not start" >&2; tail "$W/weed.log" >&2; exit 1; }
  sleep 0.5
done

"$GENDUMP" "$SIZE" 7 > "$W/a"
# The second input: every 40 000th byte changed (scattered row updates).
python3 - "$W/a" "$W/b" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
for i in range(0, len(d), 40000):
    d[i] ^= 0x55
open(sys.argv[2], "wb").write(d)
EOF

secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
declare -A snap prune
for kind in plain locked; do snap[$kind]=""; prune[$kind]=""; done
echo "== sbk Object Lock cost on SeaweedFS 4.48: $SIZE bytes, $RUNS runs, nproc=$(nproc)"
for i in $(seq "$RUNS"); do
  for kind in plain locked; do
    repo="s3:http://127.0.0.1:$S/$kind/run$i"
    if [ "$kind" = locked ]; then
      "$SBK" -q -r "$repo" "${INIT[@]}" --object-lock governance --lock-days 1
    else
      "$SBK" -q -r "$repo" "${INIT[@]}"
    fi
    t1=$(secs "$SBK" -q -r "$repo" snapshot stdin --name db.pgdump < "$W/a")
    t2=$(secs "$SBK" -q -r "$repo" snapshot stdin --name db.pgdump < "$W/b")
    first=$("$SBK" -q -r "$repo" --json snapshots | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["id"])')
    "$SBK" -q -r "$repo" forget "$first"
    t0=$(date +%s.%N)
    "$SBK" -q -r "$repo" --json prune --instant-delete > "$W/prune-$kind-$i.json"
    tp=$(echo "$(date +%s.%N) - $t0" | bc)
    snap[$kind]+="$(echo "$t1 + $t2" | bc) "
    prune[$kind]+="$tp "
    "$SBK" -q --no-cache -r "$repo" dump latest | cmp - "$W/b"
  done
done
for kind in plain locked; do
  # shellcheck disable=SC2086
  echo "== $kind: two snapshots ${snap[$kind]}s (median $(median ${snap[$kind]})); prune ${prune[$kind]}s (median $(median ${prune[$kind]}))"
done
# shellcheck disable=SC2086
echo "== locked/plain: snapshots $(echo "scale=3; $(median ${snap[locked]}) / $(median ${snap[plain]})" | bc), prune $(echo "scale=3; $(median ${prune[locked]}) / $(median ${prune[plain]})" | bc)"
python3 - "$W/prune-locked-1.json" <<'EOF'
import json, sys
l = json.load(open(sys.argv[1]))["lock"]
p = l["purged"]
print(f"== a locked prune: lock extended on {l['refreshed']['files']} files (one PutObjectRetention each); "
      f"{p['versions_held']} old versions held, {p['versions_removed']} purged")
EOF
echo "   every restore was byte-identical to its input"
