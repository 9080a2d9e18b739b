#!/usr/bin/env bash
# Builds the libFuzzer target for the safetensors header parser with clang (ASan + UBSan) and runs
# it. Usage: scripts/fuzz.sh [SECONDS]   (default 600). Crashes land in build-fuzz/crashes/.
set -euo pipefail
cd "$(dirname "$0")/.."
OMNIFLUX_FUZZ=1 ./scripts/setup.sh
secs="${1:-600}"
out=build-fuzz
mkdir -p "$out/corpus" "$out/crashes"
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude tests/fuzz/fuzz_safetensors_header.cpp src/io/safetensors_header.cpp src/error.cpp \
  -o "$out/fuzz_safetensors_header"
# Seeds: the malformed corpus and small valid files from the fixtures.
cp tests/fixtures/bad_safetensors/*.safetensors "$out/corpus/" 2>/dev/null || true
cp tests/fixtures/flow_match_scheduler/io.safetensors "$out/corpus/seed_valid_scheduler.safetensors"
cp tests/fixtures/uniworld_conditioning/config.json "$out/corpus/seed_json_text"
"$out/fuzz_safetensors_header" "$out/corpus" -dict=tests/fuzz/safetensors.dict \
  -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1
