#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd build
# -LE fast: unit.fast repeats, in one process, tests the suite runs one by one (ctest -L fast alone is
# the quick loop).
ctest --output-on-failure -j "${OMNIFLUX_TEST_JOBS:-2}" -LE fast "$@"
