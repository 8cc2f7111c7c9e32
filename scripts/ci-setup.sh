#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent; needs root for apt-get).
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pg_dump >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt
