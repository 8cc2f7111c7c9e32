#!/usr/bin/env bash
# The test suite, as CI runs it: formatting, lints, then every test (the fuzz targets' checks
# run over their seeds as ordinary tests, tests/fuzz_seeds.rs).
# Needs the Rust toolchain; as root it installs the rest first (scripts/ci-setup.sh).
# SBK_FUZZ_SECONDS=N also builds the fuzz targets with cargo-fuzz and fuzzes each for N s.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Fresh machine: install what is missing (no-op when all is there).
if [ "$(id -u)" = 0 ]; then bash scripts/ci-setup.sh; fi
echo "== cargo fmt --check, cargo clippy (a first run compiles every dependency: 10-15 minutes on 2 cores)"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
if [ -n "${SBK_FUZZ_SECONDS:-}" ]; then fuzz/run-smoke.sh "$SBK_FUZZ_SECONDS"; fi
echo "== cargo test (every test binary runs, even after a failure)"
cargo test --locked --no-fail-fast
echo "== all passed in $(( $(date +%s) - start )) s"
