#!/usr/bin/env bash
# CPU speed at the medium shapes, 2 threads: omniflux-bench of this build, PyTorch eager on the same
# LibTorch (tools/dev/bench/eager.py), and optionally an older omniflux build (for example one on
# Debian's LibTorch 1.13). Each runs with OpenBLAS's own pool pinned to one thread and unpinned.
#
#   scripts/bench-cpu.sh [BIN_DIR]                  # this build and eager
#   OLD_BIN=DIR OLD_LD=LIBDIRS scripts/bench-cpu.sh  # plus an older build, its libraries in LIBDIRS
#   (Debian's LibTorch 1.13 needs its OpenBLAS first: without it libblas.so.3 may be the reference BLAS)
#
# Prints one JSON line per measurement (with "impl" and "openblas" added) and a summary table.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build/bin}" && pwd)
py=${OMNIFLUX_TORCH_PYTHON:-$(ls -d "${OMNIFLUX_CACHE_DIR:-$HOME/.cache/omniflux}"/torch-*/bin/python 2>/dev/null | tail -1)}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# The medium shapes (issue 13): FLUX DiT D=256 (4x64), 2+4 blocks, 1024 image + 128 text tokens;
# Qwen2 hidden 512, 4 layers, prefill 256, decode 64; SigLIP 256 patches; T5 128 tokens; VAE decode
# of 32x32 latents. eager.py uses the same shapes.
cases=(
  "flux_dit_forward width=512 height=512 txt=128 heads=4 head_dim=64 layers=2 single=4"
  "lm_prefill hidden=512 layers=4 heads=8 kv_heads=2 inter=1408 vocab=4096 prompt=256"
  "lm_decode hidden=512 layers=4 heads=8 kv_heads=2 inter=1408 vocab=4096 prompt=256 new=64"
  "siglip2_vision image=256"
  "flux_text_encoders t5_len=128"
  "flux_vae_decode width=256 height=256"
)

tag() {  # impl openblas: adds both fields to each JSON line on stdin
  python3 -c 'import json,sys
for l in sys.stdin:
    l = l.strip()
    if l.startswith("{"):
        d = json.loads(l); d["impl"] = d.get("impl", sys.argv[1]); d["openblas"] = sys.argv[2]; print(json.dumps(d))' "$1" "$2"
}

for pin in pinned unpinned; do
  if [ $pin = pinned ]; then export OPENBLAS_NUM_THREADS=1; else unset OPENBLAS_NUM_THREADS; fi
  for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    "$bin/omniflux-bench" $c --threads 2 2>/dev/null | tag omniflux "$pin" | tee -a "$out"
    if [ -n "${OLD_BIN:-}" ]; then
      # shellcheck disable=SC2086
      LD_LIBRARY_PATH="${OLD_LD:-}" "$OLD_BIN/omniflux-bench" $c --threads 2 2>/dev/null | tag omniflux-old "$pin" | tee -a "$out"
    fi
  done
  [ -n "$py" ] && "$py" "$root/tools/dev/bench/eager.py" --threads 2 2>/dev/null | tag pytorch-eager "$pin" | tee -a "$out"
done

python3 - "$out" <<'EOF'
import json, sys
rows = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    shape = d.get("shape")
    batch = shape.get("batch", 1) if isinstance(shape, dict) else 1
    key = (d["case"], d.get("metric", "") + ("" if batch == 1 else " b%d" % batch), d.get("unit", ""))
    rows.setdefault(key, {})[(d["impl"], d["openblas"])] = d.get("value")
impls = sorted({i for r in rows.values() for i in r})
print("\n%-22s %-12s %-6s " % ("case", "metric", "unit") + " ".join("%20s" % ("%s/%s" % i) for i in impls))
for (case, metric, unit), r in sorted(rows.items()):
    print("%-22s %-12s %-6s " % (case, metric, unit) + " ".join("%20s" % ("%.2f" % r[i] if r.get(i) is not None else "-") for i in impls))
EOF
