#!/usr/bin/env bash
# The test suite, as CI runs it: formatting, lints, fuzz smoke runs, then every test.
# Needs the Rust toolchain; as root it installs the rest first (scripts/ci-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Fresh machine: install what is missing (no-op when all is there).
if [ "$(id -u)" = 0 ]; then bash scripts/ci-setup.sh; fi
cargo fmt --all -- --check
cargo clippy --locked --all-targets --quiet -- -D warnings
if [ -x fuzz/run-smoke.sh ]; then fuzz/run-smoke.sh "${SBK_FUZZ_SECONDS:-5}"; fi
cargo test --locked
