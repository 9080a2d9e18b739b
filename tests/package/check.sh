#!/usr/bin/env bash
# Installs omniflux from BUILD_DIR into a temporary prefix, then configures, builds and runs a
# consumer project that uses find_package(omniflux), and compiles every installed header against
# the install tree alone. Usage: check.sh BUILD_DIR FIXTURES_DIR
set -euo pipefail
build="$1"; fixtures="$2"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
inc="$tmp/prefix/include"
headers=$(cd "$inc" && find omniflux -name '*.h' | sort)
[ -n "$headers" ] || { echo "check.sh: no headers installed" >&2; exit 1; }
# The private headers (src/) stay out of the install.
if echo "$headers" | grep -q '^omniflux/nn/'; then echo "check.sh: private headers installed (nn/)" >&2; exit 1; fi
printf '#include "%s"\n' $headers >"$tmp/all_headers.cpp"
cmake -S "$here" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DOMNIFLUX_ALL_HEADERS="$tmp/all_headers.cpp" >/dev/null
# Only the install tree may be on the consumer's include path, never this checkout's include/ or src/.
if grep -Eq -- "-I *$root/(include|src)|-isystem *$root/(include|src)" "$tmp/consumer/compile_commands.json"; then
  echo "check.sh: the consumer sees the source tree's headers" >&2; exit 1
fi
cmake --build "$tmp/consumer" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
echo "$(echo "$headers" | wc -l) installed headers compile on their own install tree"
LD_LIBRARY_PATH="$tmp/prefix/lib:${LD_LIBRARY_PATH:-}" "$tmp/consumer/consumer" "$fixtures/qwen2_lm"
