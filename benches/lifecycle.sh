#!/usr/bin/env bash
# sbk's lifecycle verbs against restic (Debian's package) on the same repeatable dump-like input,
# into local repositories on the same disk:
#  1. check --read-data: a repository holding a first snapshot of GIB GiB (examples/gendump) and
#     two with 1% and 2% of rows changed; each check runs twice and the second (warm page cache
#     for both, as the cache cannot be dropped without root) is reported, as stored MiB read per
#     second (repository size on disk over wall time) and peak RSS.
#  2. prune: SNAPSHOTS snapshots of a MIB MiB input that drifts by 8 scattered 4 KiB stretches of
#     fresh rows per snapshot (cumulative), then forget all but the last 10 and prune; forget and
#     prune are timed apart; wall time, peak RSS and repository size before and after.
# Usage: benches/lifecycle.sh [GiB for the check repository, default 1; fractions such as 0.05
#        are fine] [snapshots, default 100] [MiB per snapshot, default 32; fractions are fine]
# SBK_BIN=path and GENDUMP_BIN=path use those binaries instead of building target/release's.
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1}
SNAPSHOTS=${2:-100}
MIB=${3:-32}
KEEP=10
DRIFT_SPOTS=8 DRIFT_BYTES=4096
BYTES=$(awk -v g="$GIB" 'BEGIN { printf "%d", g * 1073741824 }')
SNAP_BYTES=$(awk -v m="$MIB" 'BEGIN { printf "%d", m * 1048576 }')
((SNAPSHOTS > KEEP)) || { echo "need more than $KEEP snapshots" >&2; exit 2; }
((SNAP_BYTES > 2 * DRIFT_BYTES)) || { echo "MiB per snapshot too small" >&2; exit 2; }
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic >/dev/null; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
build=()
[ -n "${SBK_BIN:-}" ] || build+=(--bin sbk)
[ -n "${GENDUMP_BIN:-}" ] || build+=(--example gendump)
[ ${#build[@]} -eq 0 ] || cargo build --release --locked --quiet "${build[@]}"
SBK=$(realpath "${SBK_BIN:-target/release/sbk}")
GEN=$(realpath "${GENDUMP_BIN:-target/release/examples/gendump}")
W=$(mktemp -d /tmp/sbk-lifecycle.XXXXXX)
trap 'rm -rf "$W"' EXIT
export RESTIC_PASSWORD=bench-only SBK_PASSWORD=bench-only RESTIC_CACHE_DIR=$W/restic-cache
echo "sbk: $SBK ($("$SBK" --version)); $(restic version | cut -d' ' -f1-2)"

# measure NAME CMD...: runs CMD, records wall seconds and peak RSS (KiB).
measure() {
  local name=$1; shift
  sync; /usr/bin/time -f "%e %M" -o "$W/$name.time" "$@" || { echo "$name failed" >&2; exit 1; }
  read -r secs rss < "$W/$name.time"
  echo "$secs $rss" > "$W/$name.res"
}
size() { du -sb "$1" | cut -f1; }
# stamp I FORMAT: a fixed time I hours after 2026-01-01, so snapshot order does not hang on the clock.
stamp() { date -u -d "@$((1767225600 + $1 * 3600))" "+$2"; }
# snap TOOL REPO I: stores standard input as snapshot I of REPO.
snap() {
  case $1 in
    restic) restic -q -r "$2" backup --stdin --stdin-filename dump --time "$(stamp "$3" '%F %T')" >/dev/null ;;
    sbk) "$SBK" -q -r "$2" snapshot stdin --name dump --time "$(stamp "$3" '%FT%TZ')" ;;
  esac
}
init() {
  restic init -q --repository-version 2 -r "$W/restic-$1" >/dev/null
  "$SBK" -q -r "$W/sbk-$1" init
}

### 1. check --read-data
echo "check: $GIB GiB of dump-like rows (examples/gendump), then the same with 1% and with 2% of rows changed"
init check
for i in 1 2 3; do
  for tool in restic sbk; do
    if ((i == 1)); then "$GEN" "$BYTES" 1; else "$GEN" "$BYTES" 1 $(((i - 1) * 10)); fi |
      snap $tool "$W/$tool-check" $i
  done
done
for tool in restic sbk; do
  case $tool in
    restic) cmd=(restic -q -r "$W/restic-check" check --read-data) ;;
    sbk) cmd=("$SBK" -r "$W/sbk-check" --json check --read-data) ;;
  esac
  measure $tool-check-cold "${cmd[@]}" > "$W/$tool-check.out"
  measure $tool-check "${cmd[@]}" > "$W/$tool-check.out"
done
rc=$(size "$W/restic-check"); sc=$(size "$W/sbk-check")

### 2. forget and prune
echo "prune: $SNAPSHOTS snapshots of $MIB MiB, each after overwriting $DRIFT_SPOTS scattered $DRIFT_BYTES-byte stretches with fresh rows; then forget all but the last $KEEP and prune"
init prune
"$GEN" "$SNAP_BYTES" 2 > "$W/cur"
RANDOM=7 # repeatable drift
for ((i = 1; i <= SNAPSHOTS; i++)); do
  if ((i > 1)); then
    for ((k = 0; k < DRIFT_SPOTS; k++)); do
      off=$(( ((RANDOM << 30) | (RANDOM << 15) | RANDOM) % (SNAP_BYTES - DRIFT_BYTES) ))
      "$GEN" "$DRIFT_BYTES" $((1000 + i * DRIFT_SPOTS + k)) |
        dd of="$W/cur" bs="$DRIFT_BYTES" count=1 seek="$off" oflag=seek_bytes iflag=fullblock conv=notrunc status=none
    done
  fi
  for tool in restic sbk; do snap $tool "$W/$tool-prune" "$i" < "$W/cur"; done
  ((i % 10 != 0 && i != SNAPSHOTS)) || echo "  $i/$SNAPSHOTS snapshots taken"
done
rm -f "$W/cur"
rb=$(size "$W/restic-prune"); sb=$(size "$W/sbk-prune")
measure restic-forget restic -q -r "$W/restic-prune" forget --keep-last $KEEP > /dev/null
measure sbk-forget "$SBK" -r "$W/sbk-prune" --json forget --keep-last $KEEP --group-by '' > "$W/sbk-forget.out"
measure restic-prune restic -q -r "$W/restic-prune" prune > /dev/null
measure sbk-prune "$SBK" -r "$W/sbk-prune" --json prune --instant-delete > "$W/sbk-prune.out"
ra=$(size "$W/restic-prune"); sa=$(size "$W/sbk-prune")
# Sanity: both kept exactly $KEEP snapshots and still pass a structural check.
rn=$(restic -r "$W/restic-prune" snapshots --json | grep -o '"short_id"' | wc -l)
sn=$("$SBK" -r "$W/sbk-prune" --json snapshots | grep -c '"short_id"')
[ "$rn" -eq $KEEP ] && [ "$sn" -eq $KEEP ] || { echo "kept $rn (restic) and $sn (sbk) snapshots, not $KEEP" >&2; exit 1; }
restic -q -r "$W/restic-prune" check >/dev/null
"$SBK" -q -r "$W/sbk-prune" check

### Summary
# row LABEL RESTIC SBK [DECIMALS]: one line with sbk / restic.
row() {
  awk -v l="$1" -v r="$2" -v s="$3" -v d="${4:-1}" 'BEGIN {
    printf "%-26s %10.*f %10.*f", l, d, r, d, s
    if (r > 0) printf " %8.3fx\n", s / r; else printf " %9s\n", "-" }'
}
res() { cut -d' ' -f"$2" "$W/$1.res"; }
mib() { awk -v b="$1" 'BEGIN { print b / 1048576 }'; }
rate() { awk -v b="$1" -v t="$(res "$2" 1)" 'BEGIN { if (t > 0) print b / 1048576 / t; else print 0 }'; }
rss() { awk -v k="$(res "$1" 2)" 'BEGIN { print k / 1024 }'; }
header() { echo; echo "$1"; printf "%-26s %10s %10s %9s\n" "" "restic" "sbk" "ratio"; }
header "check --read-data, $GIB GiB input x 3 snapshots (second of two runs: page cache warm for both)"
row "stored MiB" "$(mib "$rc")" "$(mib "$sc")"
row "wall s" "$(res restic-check 1)" "$(res sbk-check 1)" 2
row "stored MiB read per s" "$(rate "$rc" restic-check)" "$(rate "$sc" sbk-check)"
row "peak RSS MiB" "$(rss restic-check)" "$(rss sbk-check)"
row "(first run wall s)" "$(res restic-check-cold 1)" "$(res sbk-check-cold 1)" 2
header "forget --keep-last $KEEP of $SNAPSHOTS snapshots x $MIB MiB, then prune (sbk: --instant-delete)"
row "stored MiB before" "$(mib "$rb")" "$(mib "$sb")"
row "stored MiB after" "$(mib "$ra")" "$(mib "$sa")"
row "forget wall s" "$(res restic-forget 1)" "$(res sbk-forget 1)" 2
row "forget peak RSS MiB" "$(rss restic-forget)" "$(rss sbk-forget)"
row "prune wall s" "$(res restic-prune 1)" "$(res sbk-prune 1)" 2
row "prune peak RSS MiB" "$(rss restic-prune)" "$(rss sbk-prune)"
echo "(ratio = sbk / restic; stored = repository size on disk (du); $(nproc) cores)"
