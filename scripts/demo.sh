#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: what omniflux can do today on the tiny
# reference models in tests/fixtures (no download needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
bin=build/bin
fx=tests/fixtures

echo "== 1. Inspect and validate a checkpoint (a tiny Qwen2 LM in the Hugging Face layout)"
"$bin/omniflux-inspect" "$fx/qwen2_lm" | sed -n '/tensors in/,$p'

echo
echo "== 2. A malformed checkpoint is rejected with a precise error"
"$bin/omniflux-inspect" "$fx/bad_safetensors/overlap.safetensors" || true

echo
echo "== 3. Reference parity: the FLUX.1-dev flow-match schedule against diffusers"
"$bin/omniflux-parity" "$fx" --case flow_match_scheduler | sed -n 1,4p
echo "   ..."

echo
echo "== 4. Which reference cases omniflux implements so far"
"$bin/omniflux-parity" "$fx" --list

echo
echo "== 5. X-Omni: prompt -> image codes (autoregressive) -> FLUX decoder -> PNG, then chat about it"
echo "   (tiny random-weight folders written by omniflux-tiny, so the picture and answer are noise)"
xo=$(mktemp -d)
trap 'rm -rf "$xo"' EXIT
"$bin/omniflux-tiny" --out "$xo" --only x_omni --only flux_1_dev > /dev/null
"$bin/omniflux-xomni" generate --model "$xo/x-omni" --flux "$xo/flux.1-dev" -p "a red cube on a wooden table" \
  -W 64 -H 48 --seed 7 --codes-out "$xo/codes.json" -o "$xo/x-omni.png" 2>&1 | tr '\r' '\n' | grep -E "codes|wrote"
"$bin/omniflux-xomni" chat --model "$xo/x-omni" -i "$xo/x-omni.png" -p "What is in this picture?" \
  --max-new-tokens 8 --quiet | sed 's/^/   answer: /'
