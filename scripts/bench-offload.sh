#!/usr/bin/env bash
# Peak RSS and wall time of a UniWorld-V1 edit and an X-Omni generation on the CPU, for each offload
# mode (none, model, sequential) and each weight type (fp32, bf16, fp8, int8), on the medium
# random-weight folders (omniflux-tiny --preset medium, about 1 GB per pipeline).
#
#   scripts/bench-offload.sh [WORK_DIR] [BIN_DIR]
#
# Writes the folders and their quantised copies under WORK_DIR (default /tmp/omniflux-bench-offload,
# kept for reruns) and prints one line per run: task, weights, offload, peak RSS (MiB), seconds.
# Every run uses 2 threads; the outputs of the three modes are compared byte for byte.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/omniflux-bench-offload}
bin=$(cd "${2:-$root/build/bin}" && pwd)
mkdir -p "$work"
cd "$work"

if [ ! -d medium ]; then
  "$bin/omniflux-tiny" --out medium.partial --preset medium --seed 1 --tokenizers "$root/tests/fixtures/tokenizers" >/dev/null
  mv medium.partial medium
fi
for w in fp8 int8 bf16; do
  for m in uniworld-v1 x-omni flux.1-dev; do
    [ -d "$w/$m" ] || { mkdir -p "$w"; "$bin/omniflux-quantize" "medium/$m" "$w/$m" --weights "$w" --quiet; }
  done
done
ln -sfn medium fp32
[ -f ref.png ] || python3 - <<'EOF'
import struct, zlib
w = h = 256
raw = b"".join(b"\0" + bytes(((x * 7 + y * 3 + c * 50) % 256) for x in range(w) for c in range(3)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open("ref.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOF

run() {  # task weights offload -- command...
  local task=$1 w=$2 mode=$3
  shift 4
  local t=$(mktemp)
  /usr/bin/time -f "%M %e" -o "$t" "$@" --offload "$mode" --threads 2 --quiet >/dev/null
  read -r kb s <"$t"
  rm -f "$t"
  printf '%-16s %-5s %-11s %8.0f MiB %7.1f s\n' "$task" "$w" "$mode" "$(awk "BEGIN{print $kb/1024}")" "$s"
}

printf '%-16s %-5s %-11s %12s %9s\n' task weights offload "peak RSS" wall
for w in fp32 bf16 fp8 int8; do
  for mode in none model sequential; do
    run uniworld-edit "$w" "$mode" -- "$bin/omniflux-uniworld" --model "$w/uniworld-v1" --flux "$w/flux.1-dev" \
      --siglip medium/siglip2 -p "Make it snow" -i ref.png -W 256 -H 256 --steps 2 --task image -o "edit-$w-$mode.png"
  done
  cmp -s "edit-$w-none.png" "edit-$w-model.png" && cmp -s "edit-$w-none.png" "edit-$w-sequential.png" ||
    { echo "uniworld-edit $w: the offload modes differ" >&2; exit 1; }
  for mode in none model sequential; do
    run xomni-generate "$w" "$mode" -- "$bin/omniflux-xomni" generate --model "$w/x-omni" --flux "$w/flux.1-dev" \
      -p "a lighthouse at dawn" -W 256 -H 256 --cfg 2 --decoder-steps 2 -o "gen-$w-$mode.png"
  done
  cmp -s "gen-$w-none.png" "gen-$w-model.png" && cmp -s "gen-$w-none.png" "gen-$w-sequential.png" ||
    { echo "xomni-generate $w: the offload modes differ" >&2; exit 1; }
done
