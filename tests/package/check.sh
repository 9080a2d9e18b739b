#!/usr/bin/env bash
# Installs omniflux from BUILD_DIR into a temporary prefix, then configures, builds and runs a
# consumer project that uses find_package(omniflux). Usage: check.sh BUILD_DIR FIXTURES_DIR
set -euo pipefail
build="$1"; fixtures="$2"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$here" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:${LD_LIBRARY_PATH:-}" "$tmp/consumer/consumer" "$fixtures/qwen2_lm"
