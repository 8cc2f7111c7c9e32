#!/usr/bin/env bash
# Smoke-fuzz every target: build them all, then run each for N seconds (default 10).
#
#   fuzz/run-smoke.sh [SECONDS]
#
# Works on the stable toolchain: targets are built with `cargo fuzz build -s none`, which uses
# only stable rustc flags (SanitizerCoverage through -Cpasses=sancov-module and -Cllvm-args),
# no AddressSanitizer. Exits non-zero if any target crashes (panic, failed assertion, timeout,
# out-of-memory); the crashing input is in fuzz/artifacts/<target>/ and printed in hex.
#
# Environment: FUZZ_TIMEOUT (seconds one input may take, default 10), FUZZ_TARGETS (space-
# separated subset), FUZZ_ARGS (extra libFuzzer flags for every target).
set -euo pipefail

secs="${1:-10}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir/.."

# Pinned cargo-fuzz version, installed only when `cargo fuzz` is missing.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo fuzz not found: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "== $(cargo fuzz --version), $(rustc --version)"

start=$(date +%s)
echo "== building all fuzz targets (-s none: no sanitizer, works on stable)"
cargo fuzz build -s none --fuzz-dir "$fuzz_dir"
built=$(date +%s)
echo "== build took $((built - start)) s"

targets="${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz_dir")}"
logs="$fuzz_dir/target/smoke-logs"
mkdir -p "$logs"
failed=()
for t in $targets; do
    corpus="$fuzz_dir/corpus/$t"
    mkdir -p "$corpus"
    seeds=()
    [ -d "$fuzz_dir/seeds/$t" ] && seeds=("$fuzz_dir/seeds/$t")
    extra=()
    # The chunker needs streams longer than twice its 1 KiB maximum chunk to refill its buffer.
    [ "$t" = chunker ] && extra=(-max_len=16384)
    log="$logs/$t.log"
    t0=$(date +%s)
    # New inputs go to the first directory (corpus/, not committed); seeds/ is only read.
    # shellcheck disable=SC2086
    if cargo fuzz run -s none --fuzz-dir "$fuzz_dir" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
        -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        echo "ok    $t: ${runs:-?} runs in $(( $(date +%s) - t0 )) s, ${cov:-cov: ?}"
    else
        failed+=("$t")
        echo "CRASH $t (log: $log)"
        # The panic and its message (up to the backtrace), or libFuzzer's own report.
        sed -n "/panicked at/,/^stack backtrace:/p" "$log" | grep -v '^stack backtrace:' | head -12 | sed 's/^/    /'
        grep -E "ERROR: libFuzzer|^SUMMARY" "$log" | head -4 | sed 's/^/    /' || true
        for a in $(grep -o 'Test unit written to [^ ]*' "$log" | awk '{print $NF}'); do
            echo "    input $a ($(wc -c <"$a") bytes), hex:"
            echo "    $(od -An -tx1 -v "$a" | tr -d ' \n')"
            echo "    reproduce: cargo fuzz run -s none --fuzz-dir fuzz $t $a"
        done
    fi
done
end=$(date +%s)
echo "== total $((end - start)) s (build $((built - start)) s, fuzzing $((end - built)) s)"
if [ ${#failed[@]} -ne 0 ]; then
    echo "== crashes in: ${failed[*]}"
    exit 1
fi
echo "== no crashes in: $(echo $targets)"
