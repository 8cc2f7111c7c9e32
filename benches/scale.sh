#!/usr/bin/env bash
# A year (or several) of backups: repositories of many blobs and many snapshots, built fast by
# examples/scale_build (through sbk's library; not timed), then each maintenance verb timed with
# its peak RSS. Snapshots are of one database every 6 hours; each changes the same number of
# its LIVE chunks (as deltas against keyframes), so trees overlap as a real year's do.
# Usage: [SBK=path/to/sbk] [SCALE_DIR=/work/scale-data] [LIVE=2000] [RESTIC_SIZE=100000/1000]
#        [INPUT_GIB=1] [INDEX_SIZES="300000 600000"] benches/scale.sh [BLOBS/SNAPSHOTS ...]
#        (default sizes: 100000/1000 300000/3000 1000000/10000; a single argument `none` skips them)
# RESTIC_SIZE: restic beside sbk with the same shape, one `restic backup` per snapshot (slow:
# 150 snapshots took 4 minutes on this machine, so the default is none).
# INDEX_SIZES: memory per indexed blob, sbk against restic on equal terms: one snapshot of N full
# blobs (no deltas) in each tool, then a command that loads the index and stores nothing new
# (a one-byte stdin snapshot); the slope between two sizes is the memory per blob.
# Prints one line per step: size, tool, step, wall s, peak RSS MiB; results/summary.tsv too.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000/1000 300000/3000 1000000/10000)
[ "${SIZES[*]}" != none ] || SIZES=()
W=${SCALE_DIR:-/work/scale-data}
LIVE=${LIVE:-2000}
RESTIC_SIZE=${RESTIC_SIZE:-none}
INDEX_SIZES=${INDEX_SIZES:-300000 600000}
INPUT_GIB=${INPUT_GIB:-1}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
if ! command -v restic >/dev/null; then
  apt-get install -y -qq restic >/dev/null || { RESTIC_SIZE=none; INDEX_SIZES=; }
fi
cargo build --release --offline --quiet --bin sbk --example gendump --example scale_build
T=${CARGO_TARGET_DIR:-$PWD/target}/release
SBK=${SBK:-$T/sbk}
mkdir -p "$W"
OUT=$W/summary.tsv
: > "$OUT"
export SBK_PASSWORD=bench-only RESTIC_PASSWORD=bench-only
# The cache folder (sbk's snapshot list cache; local repositories use no other cache): fresh.
export XDG_CACHE_HOME=$W/xdg
rm -rf "$XDG_CACHE_HOME"
"$T/examples/gendump" $((INPUT_GIB * 1024 * 1024 * 1024)) 7 > "$W/input"

# measure SIZE TOOL STEP CMD...: wall seconds and peak RSS (GNU time's maximum resident set).
measure() {
  local size=$1 tool=$2 step=$3; shift 3
  sync
  if ! /usr/bin/time -f "%e %M" -o "$W/time" "$@" > "$W/out" 2> "$W/err"; then
    echo "FAILED: $size $tool $step" >&2; tail -5 "$W/err" >&2
  fi
  read -r secs kib < <(tail -1 "$W/time")
  printf "%s\t%s\t%s\t%s\t%.1f\n" "$size" "$tool" "$step" "$secs" "$(echo "$kib/1024" | bc -l)" | tee -a "$OUT"
}

# The fixed part: unlocking (Argon2id) and an empty index.
"$SBK" -q -r "$W/empty" init
measure 0/0 sbk baseline-snapshots "$SBK" -q -r "$W/empty" snapshots
rm -rf "$W/empty"

for size in "${SIZES[@]}"; do
  blobs=${size%/*}; snaps=${size#*/}
  R=$W/sbk-$snaps
  rm -rf "$R"
  start=$(date +%s)
  last=$("$T/examples/scale_build" "$R" "$blobs" "$snaps" "$LIVE" 2> "$W/build.log")
  tail -1 "$W/build.log"
  echo "# $size built in $(( $(date +%s) - start )) s, $(du -sh "$R" | cut -f1), $(ls "$R/index" | wc -l) index files, $(find "$R/data" -type f | wc -l) packs"
  measure "$size" sbk open-index "$SBK" -q -r "$R" cat tree "$last"
  measure "$size" sbk open-latest "$SBK" -q -r "$R" cat tree latest
  measure "$size" sbk open-latest-warm "$SBK" -q -r "$R" cat tree latest
  measure "$size" sbk snapshots "$SBK" -q -r "$R" snapshots
  measure "$size" sbk check "$SBK" -q -r "$R" check
  measure "$size" sbk check-1% "$SBK" -q -r "$R" check --read-data-subset 1%
  measure "$size" sbk snapshot-${INPUT_GIB}GiB "$SBK" -r "$R" --json snapshot stdin --name dump < "$W/input"
  id=$(grep -o '"id": *"[0-9a-f]\{64\}"' "$W/out" | head -1 | grep -o '[0-9a-f]\{64\}')
  rm -rf "$W/restore"
  measure "$size" sbk restore "$SBK" -q -r "$R" restore "$id" --target "$W/restore"
  cmp -s "$W/input" "$W/restore/dump" || echo "RESTORE DIFFERS" >&2
  rm -rf "$W/restore"
  measure "$size" sbk forget-dry-run "$SBK" -q -r "$R" forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  measure "$size" sbk forget "$SBK" -q -r "$R" forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12
  measure "$size" sbk prune "$SBK" -q -r "$R" prune
  measure "$size" sbk prune-instant "$SBK" -q -r "$R" prune --instant-delete
  measure "$size" sbk check-after "$SBK" -q -r "$R" check
  rm -rf "$R"
done

# restic beside sbk: the same shape as files (LIVE files of 512 bytes, one blob each; each
# backup changes the same share of them), one `restic backup` per snapshot, 6 hours apart.
if [ "$RESTIC_SIZE" != none ]; then
  blobs=${RESTIC_SIZE%/*}; snaps=${RESTIC_SIZE#*/}
  per=$(( (blobs - LIVE - 2 * snaps) / (snaps - 1) ))
  R=$W/restic-$snaps D=$W/restic-src
  export RESTIC_CACHE_DIR=$W/restic-cache
  rm -rf "$R" "$D" "$RESTIC_CACHE_DIR"; mkdir -p "$D/app"
  restic init -q --repository-version 2 -r "$R" >/dev/null
  python3 - "$D/app" "$LIVE" "$snaps" "$per" "$R" <<'EOF'
import os, random, subprocess, sys, datetime
d, live, snaps, per, repo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rnd = random.Random(7)
for p in range(live):
    with open(f"{d}/{p:05}", "wb") as f: f.write(rnd.randbytes(512))
t0 = datetime.datetime.now() - datetime.timedelta(hours=6 * (snaps - 1))
for s in range(snaps):
    if s:
        for p in rnd.sample(range(live), per):
            with open(f"{d}/{p:05}", "r+b") as f: f.seek(rnd.randrange(504)); f.write(rnd.randbytes(8))
    t = (t0 + datetime.timedelta(hours=6 * s)).strftime("%Y-%m-%d %H:%M:%S")
    subprocess.run(["restic", "-q", "-r", repo, "backup", "--host", "backup-host", "--time", t, d], check=True)
    if (s + 1) % 100 == 0: print(f"restic: {s + 1} snapshots", file=sys.stderr)
EOF
  size=$RESTIC_SIZE
  echo "# restic $size: $(restic -r "$R" --no-lock list blobs 2>/dev/null | wc -l) blobs, $(du -sh "$R" | cut -f1)"
  last=$(restic -r "$R" --no-lock snapshots --json latest | grep -o '"id":"[0-9a-f]\{64\}"' | head -1 | grep -o '[0-9a-f]\{64\}')
  measure "$size" restic open-index restic -q -r "$R" ls "$last"
  measure "$size" restic open-latest restic -q -r "$R" ls latest
  measure "$size" restic snapshots restic -q -r "$R" snapshots
  measure "$size" restic check restic -q -r "$R" check
  measure "$size" restic check-1% restic -q -r "$R" check --read-data-subset 1%
  measure "$size" restic snapshot-${INPUT_GIB}GiB restic -q -r "$R" backup --stdin --stdin-filename dump < "$W/input"
  measure "$size" restic restore restic -q -r "$R" dump latest dump
  measure "$size" restic forget-dry-run restic -q -r "$R" forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  measure "$size" restic forget restic -q -r "$R" forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12
  measure "$size" restic prune restic -q -r "$R" prune
  measure "$size" restic check-after restic -q -r "$R" check
  rm -rf "$R" "$D" "$RESTIC_CACHE_DIR"
fi
# Memory per indexed blob, full blobs only, in both tools.
for n in $INDEX_SIZES; do
  R=$W/sbk-index-$n
  rm -rf "$R"
  "$T/examples/scale_build" "$R" $((n + 2)) 2 "$n" 2> /dev/null > /dev/null
  printf x > "$W/one-byte"
  measure "$n/1" sbk index-load "$SBK" -q -r "$R" snapshot stdin --name one-byte < "$W/one-byte"
  rm -rf "$R"
  R=$W/restic-index-$n D=$W/restic-index-src
  export RESTIC_CACHE_DIR=$W/restic-cache
  rm -rf "$R" "$D" "$RESTIC_CACHE_DIR"; mkdir -p "$D"
  python3 -c "
import os, sys, random
r = random.Random(1)
for i in range(int(sys.argv[2])):
    d = f'{sys.argv[1]}/{i // 1000:04}'
    os.makedirs(d, exist_ok=True)
    open(f'{d}/{i % 1000:03}', 'wb').write(r.randbytes(512))" "$D" "$n"
  restic init -q --repository-version 2 -r "$R" >/dev/null
  restic -q -r "$R" backup "$D" >/dev/null
  echo "# restic index $n: $(restic -r "$R" --no-lock list blobs 2>/dev/null | wc -l) blobs"
  measure "$n/1" restic index-load restic -q -r "$R" backup --stdin --stdin-filename one-byte < "$W/one-byte"
  rm -rf "$R" "$D" "$RESTIC_CACHE_DIR"
done
rm -f "$W/input" "$W/one-byte" "$W/out" "$W/err" "$W/time"
echo "(results in $OUT; $(nproc) cores)"
