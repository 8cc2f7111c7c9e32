#!/usr/bin/env bash
# sbk against restic (Debian's package) on the same repeatable dump-like input, into local
# repositories on the same disk: throughput, stored bytes and peak RSS for a first snapshot, an
# incremental one after a scattered 1% row change, and a restore.
# Usage: [SBK=path/to/sbk] benches/compare-restic.sh [GiB, default 2]
# (SBK: measure that binary instead of this checkout's, e.g. to compare two commits.)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-2}
BYTES=$((GIB * 1024 * 1024 * 1024))
command -v restic >/dev/null || { apt-get update -qq && apt-get install -y -qq restic >/dev/null; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cargo build --release --locked --quiet --bin sbk --example gendump
SBK=${SBK:-$PWD/target/release/sbk}
GEN=$PWD/target/release/examples/gendump
W=$(mktemp -d /tmp/sbk-vs-restic.XXXXXX)
trap 'rm -rf "$W"' EXIT
export RESTIC_PASSWORD=bench-only SBK_PASSWORD=bench-only RESTIC_CACHE_DIR=$W/restic-cache

echo "input: $GIB GiB of dump-like rows (examples/gendump), then the same with 1% of rows changed"
"$GEN" "$BYTES" 1 > "$W/in1"
"$GEN" "$BYTES" 1 10 > "$W/in2"
cat "$W/in1" "$W/in2" > /dev/null

restic init -q --repository-version 2 -r "$W/restic" >/dev/null
"$SBK" -q -r "$W/sbk" init

# measure NAME CMD...: runs CMD, records wall seconds and peak RSS (KiB).
measure() {
  local name=$1; shift
  sync; /usr/bin/time -f "%e %M" -o "$W/$name.time" "$@"
  read -r secs rss < "$W/$name.time"
  echo "$secs $rss" > "$W/$name.res"
}
size() { du -sb "$1" | cut -f1; }

measure restic-1 sh -c "restic -q -r '$W/restic' backup --stdin --stdin-filename dump < '$W/in1' >/dev/null"
r1=$(size "$W/restic")
measure sbk-1 sh -c "'$SBK' -q -r '$W/sbk' snapshot stdin --name dump < '$W/in1'"
s1=$(size "$W/sbk")
measure restic-2 sh -c "restic -q -r '$W/restic' backup --stdin --stdin-filename dump < '$W/in2' >/dev/null"
r2=$(( $(size "$W/restic") - r1 ))
measure sbk-2 sh -c "'$SBK' -q -r '$W/sbk' snapshot stdin --name dump < '$W/in2'"
s2=$(( $(size "$W/sbk") - s1 ))
measure restic-restore sh -c "restic -q -r '$W/restic' dump latest dump > /dev/null"
measure sbk-restore sh -c "'$SBK' -q -r '$W/sbk' dump latest > /dev/null"

row() { # label restic-file sbk-file restic-bytes sbk-bytes
  read -r rs rr < "$W/$2.res"; read -r ss sr < "$W/$3.res"
  awk -v l="$1" -v rs="$rs" -v rr="$rr" -v ss="$ss" -v sr="$sr" -v rb="$4" -v sb="$5" -v n="$BYTES" 'BEGIN {
    rt = n / rs / 1048576; st = n / ss / 1048576
    printf "%-22s %9.0f %9.0f %6.2fx   %8.0f %8.0f %6.2fx", l, rt, st, st / rt, rr / 1024, sr / 1024, sr / rr
    if (rb != "") printf "   %9.1f %9.1f %6.3fx", rb / 1048576, sb / 1048576, sb / rb
    printf "\n" }'
}
printf "%-22s %9s %9s %7s   %8s %8s %7s   %9s %9s %7s\n" "" "restic" "sbk" "ratio" "restic" "sbk" "ratio" "restic" "sbk" "ratio"
printf "%-22s %27s   %24s   %27s\n" "" "throughput MiB/s" "peak RSS MiB" "stored MiB"
row "first snapshot" restic-1 sbk-1 "$r1" "$s1"
row "1% changed snapshot" restic-2 sbk-2 "$r2" "$s2"
row "restore (dump)" restic-restore sbk-restore "" ""
echo "(ratio = sbk / restic; throughput counts input bytes over wall time; $(nproc) cores)"
