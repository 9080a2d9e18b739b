#!/usr/bin/env bash
# The one-call GPU check (docs/gpu.md, "GPU check"), for the H200 machine: python3 with torch 2.11+cu130,
# nvcc 13.0, cmake and ninja, 16 cores, no network and no Debian -dev packages.
#
#   scripts/device-check.sh --fetch-debs   # here, once: the -dev packages as .deb files in .deb/
#   scripts/device-check.sh                # there (carry .deb): everything below, under 10 minutes
#   scripts/device-check.sh --cpu          # anywhere: the same steps on the CPU at small shapes
#
# 1. unpacks .deb/*.deb with dpkg -x into .deb/root and points CMake and pkg-config at it;
# 2. configures against the machine's own torch (python3 -c 'import torch'), CUDA archs 9.0, and
#    builds everything with all cores;
# 3. runs the unit tests (ctest);
# 4. runs every parity case on cuda in fp32 (TF32 off) and in bf16 (the half-precision bounds of
#    tools/dev/parity/main.cpp);
# 5. runs omniflux-bench at the real shapes: the SDPA backend per attention shape, a FLUX.1-dev
#    1024^2 DiT step, Qwen2.5-7B decode at batch 1, a 2048-token Qwen2.5-VL LM prefill, and X-Omni's
#    5184 codes (1152^2) with CFG; writes bench/results/<date>-h200.jsonl;
# 6. (cuda) a 12B FLUX-shaped DiT with fp8 weights from disk: a 1024^2 forward resident and under
#    sequential offload (load and step time, peak RSS), into the same results file.
# Logs and results go to $OUT (the device tool's folder; else build-device/out), at most 8 files.
# Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

debs=(libgtest-dev googletest nlohmann-json3-dev libstb-dev libstb0 libsentencepiece-dev libsentencepiece0
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
      libcpp-httplib-dev libcpp-httplib0.11 libssl-dev zlib1g-dev libbrotli-dev
      libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo libwebp-dev libwebp7 libwebpdemux2 libwebpmux3)

device=cuda
build=build-device
skip_tests=0
for a in "$@"; do
  case "$a" in
    --fetch-debs)
      mkdir -p .deb && cd .deb && apt-get download "${debs[@]}" && ls -l && exit 0 ;;
    --cpu) device=cpu ;;
    --skip-tests) skip_tests=1 ;;
    --build=*) build="${a#--build=}" ;;
    *) echo "usage: scripts/device-check.sh [--fetch-debs] [--cpu] [--skip-tests] [--build=DIR]" >&2; exit 2 ;;
  esac
done

out="${OUT:-$root/$build/out}"
mkdir -p "$out"
log="$out/device-check.log"
summary="$out/summary.txt"
: >"$log"
: >"$summary"
start=$(date +%s)
failed=0
note() { echo "$*" | tee -a "$summary"; }
# step NAME CMD...: runs CMD with its output in the log, notes the time and the status.
step() {
  local name=$1
  shift
  local t0=$(date +%s)
  echo "=== $name: $*" >>"$log"
  "$@" >>"$log" 2>&1
  local rc=$?
  note "$(printf '%-28s rc=%-3s %4ss' "$name" "$rc" "$(($(date +%s) - t0))")"
  [ $rc -eq 0 ] || failed=1
  return $rc
}

jobs=$(nproc)
note "device-check on $(hostname), $(date -u +%FT%TZ), device $device, $jobs cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader >>"$summary" 2>&1 || note "nvidia-smi failed"
fi

# --- 1. the -dev packages ------------------------------------------------------------------------
prefix="$root/.deb/root"
if compgen -G ".deb/*.deb" >/dev/null; then
  rm -rf "$prefix" && mkdir -p "$prefix"
  step unpack-debs bash -c 'for f in .deb/*.deb; do dpkg -x "$f" "$1" || exit 1; done' _ "$prefix"
  # .pc files say prefix=/usr: the sysroot puts the unpacked tree in front of every path.
  export PKG_CONFIG_SYSROOT_DIR="$prefix"
  export PKG_CONFIG_LIBDIR="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig:$prefix/usr/lib/pkgconfig"
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  cmake_prefix="$prefix/usr"
else
  note "no .deb/*.deb: using the system's packages (run --fetch-debs on a machine with apt)"
  cmake_prefix=""
fi

# --- 2. configure and build ----------------------------------------------------------------------
python=${OMNIFLUX_PYTHON:-python3}
torch_dir=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "share", "cmake", "Torch"))' 2>>"$log")
note "torch $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1) at $torch_dir"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
step configure cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$torch_dir" \
  -DOMNIFLUX_CUDA_ARCHS=9.0 ${cmake_prefix:+-DCMAKE_PREFIX_PATH="$cmake_prefix"} || { note "FAILED"; exit 1; }
step build cmake --build "$build" -j "$jobs" || { note "FAILED"; exit 1; }
bin="$root/$build/bin"
grep -E "CUDA (ON|OFF)" "$log" | tail -1 >>"$summary"
if [ "$device" = cuda ]; then
  ldd "$root/$build/lib/libomniflux.so" | grep -E "torch_cuda|c10_cuda|cudart" >>"$summary" || note "libomniflux does not link the CUDA part of LibTorch"
fi

# --- 3. unit tests -------------------------------------------------------------------------------
if [ $skip_tests -eq 0 ]; then
  step unit-tests ctest --test-dir "$build" -j "$jobs" --timeout 300 --output-on-failure
  cp "$root/$build/Testing/Temporary/LastTest.log" "$out/ctest.log" 2>/dev/null
  grep -E "tests passed|tests failed" "$log" | tail -1 >>"$summary"
fi

# --- 4. parity on the device ---------------------------------------------------------------------
parity() {  # parity DTYPE FILE
  "$bin/omniflux-parity" tests/fixtures --device "$device" --dtype "$1" >"$2"
  local rc=$?
  python3 - "$2" "$1" <<'EOF' >>"$summary"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = [l for l in lines if not l.get("pass")]
print(f"  parity {sys.argv[2]}: {len(lines) - len(bad)}/{len(lines)} tensors pass")
for l in bad:
    print("   FAIL", l.get("case"), l.get("output"), l.get("status", ""), "max_abs", l.get("max_abs_err"),
          "rel_l2", l.get("rel_l2"), "tol", l.get("tolerance"), l.get("tolerance_rel_l2", ""), l.get("detail", ""))
EOF
  return $rc
}
step parity-fp32 parity float32 "$out/parity-fp32.jsonl"
step parity-bf16 parity bfloat16 "$out/parity-bf16.jsonl"

# --- 5. benchmarks at the real shapes ------------------------------------------------------------
mkdir -p bench/results
results="bench/results/$(date -u +%F)-$([ "$device" = cuda ] && echo h200 || echo cpu-check).jsonl"
gpu=$([ "$device" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
printf '{"kind":"header","date":"%s","commit":"%s","device":"%s","gpu":"%s","torch":"%s"}\n' \
  "$(date -u +%FT%TZ)" "$(git rev-parse HEAD 2>/dev/null)" "$device" "$gpu" \
  "$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null)" >"$results"
bench() { "$bin/omniflux-bench" --device "$device" "$@" | tee -a "$results"; }
if [ "$device" = cuda ]; then
  step bench-attention bench attention --dtype bfloat16
  step bench-flux-dit bench flux_dit_forward preset=flux-dev --dtype bfloat16
  step bench-qwen-decode bench lm_decode preset=qwen2.5-7b batch=1 prompt=128 new=128 --dtype bfloat16
  step bench-qwen-prefill bench lm_prefill preset=qwen2.5-7b batch=1 prompt=2048 --dtype bfloat16
  step bench-xomni-codes bench xomni preset=x-omni dit=0 cfg=3 bw_gbs=4800 --warmup 0 --iters 1 --dtype bfloat16
else  # the same cases at their small CPU shapes, to test the script
  step bench-attention bench attention --warmup 1 --iters 2
  step bench-flux-dit bench flux_dit_forward --warmup 1 --iters 2
  step bench-qwen-decode bench lm_decode batch=1 prompt=64 new=16 --warmup 1 --iters 2
  step bench-qwen-prefill bench lm_prefill batch=1 prompt=256 --warmup 1 --iters 2
  step bench-xomni-codes bench xomni dit=0 cfg=3 codes=32 --warmup 0 --iters 1
fi
# --- 6. offload and fp8 at full size ------------------------------------------------------------
# A FLUX.1-dev-shaped DiT with random fp8 weights on local disk: one 1024^2 forward with the whole
# model on the GPU (the fp8 linears through _scaled_mm on sm_89+) and one streamed block by block
# from pinned host memory (sequential offload); each prints load and step time and peak RSS.
ditdir="$build/dit-fp8"
if [ "$device" = cuda ]; then
  [ -d "$ditdir" ] || step dit-write "$bin/omniflux-bench_dit_disk" write "$ditdir" --weights fp8 --threads 0
  for mode in none sequential; do
    step "dit-fp8-$mode" sh -c "'$bin/omniflux-bench_dit_disk' run '$ditdir' --device cuda --offload $mode --size 1024 | tee -a '$results'"
  done
fi

cp "$results" "$out/$(basename "$results")"
python3 - "$results" <<'EOF' >>"$summary"
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("kind") == "header":
        continue
    shape = d.get("shape")
    name = shape.get("name") if isinstance(shape, dict) and "name" in shape else ""
    extra = d.get("backend", "")
    print(f"  {d['case']:<18} {d.get('metric', ''):<14} {name:<26} {d.get('value', 0):>12.3f} {d.get('unit', '')} {extra}")
EOF

note "total $(($(date +%s) - start))s, $([ $failed -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED'); results in $results"
exit $failed
