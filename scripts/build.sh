#!/usr/bin/env bash
# Configures and builds omniflux into build/ (binaries in build/bin). At most 2 compile jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
"./scripts/setup.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE="${OMNIFLUX_BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build build -j "${OMNIFLUX_JOBS:-2}"
