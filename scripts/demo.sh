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
echo "== 4. UniWorld-V1 end to end on tiny random-weight folders (omniflux-tiny writes uniworld-v1/,"
echo "      flux.1-dev/ and siglip2/ in the release layouts; the pictures are noise, the pipeline is real)"
# Kept under build/demo so the pictures can be looked at afterwards.
tiny=build/demo
rm -rf "$tiny" && mkdir -p "$tiny"
"$bin/omniflux-tiny" --out "$tiny" --only uniworld_v1 --only siglip2 --only flux_1_dev
uw=("$bin/omniflux-uniworld" --model "$tiny/uniworld-v1" --flux "$tiny/flux.1-dev" --siglip "$tiny/siglip2")
echo "-- text to image, 256x256, 2 steps"
"${uw[@]}" -p "A lighthouse on a cliff at dusk" -W 256 -H 256 --steps 2 --seed 42 --task image -o "$tiny/t2i.png"
echo "-- editing with that image as the reference (the size snaps to the aspect-ratio table)"
"${uw[@]}" -p "Translate this photo into a Studio Ghibli-style illustration." -i "$tiny/t2i.png" \
  -W 256 -H 256 --steps 2 --task image -o "$tiny/edit.png"
echo "-- a text answer (stdout), routed by --task text"
"${uw[@]}" -p "What is in this picture?" -i "$tiny/t2i.png" --task text --max-new-tokens 8 --quiet
echo "-- parity of the UniWorld pipeline against the official code (tiny fixture)"
"$bin/omniflux-parity" "$fx" --case uniworld_pipeline | grep -E '"output":"(prompt_embeds|final_latents|image_uint8)"'

echo
echo "== 5. X-Omni: prompt -> image codes (autoregressive) -> FLUX decoder -> PNG, then chat about it"
echo "   (tiny random-weight folders written by omniflux-tiny, so the picture and answer are noise)"
xo="$tiny"
"$bin/omniflux-tiny" --out "$xo" --only x_omni > /dev/null
"$bin/omniflux-xomni" generate --model "$xo/x-omni" --flux "$xo/flux.1-dev" -p "a red cube on a wooden table" \
  -W 64 -H 48 --seed 7 --codes-out "$xo/codes.json" -o "$xo/x-omni.png" 2>&1 | tr '\r' '\n' | grep -E "codes|wrote" | tail -n 2
"$bin/omniflux-xomni" chat --model "$xo/x-omni" -i "$xo/x-omni.png" -p "What is in this picture?" \
  --max-new-tokens 8 --quiet | sed 's/^/   answer: /'

echo
echo "== 6. Which reference cases omniflux implements (all 13 fixture cases)"
"$bin/omniflux-parity" "$fx" --list
echo
echo "The pictures are in $tiny/."
