#!/usr/bin/env bash
# The GPU check (docs/gpu.md, "GPU check") for a lent H100 or H200 machine: python3 with torch
# 2.11+cu130, nvcc 13.0, cmake and ninja, 16 cores, no network and no Debian -dev packages. It is
# made so that a call cut off at its time limit still returns what it measured: every step writes
# its results under $OUT as it finishes, runs under its own timeout, and the steps share a time
# budget (--budget) that ends the script before the caller's limit.
#
#   scripts/device-check.sh --fetch-debs   # here, once: the -dev packages as .deb files in .deb/
#   scripts/device-check.sh                # there, first call (carry .deb): the cheap, decisive steps
#   scripts/device-check.sh --long         # there, second call: the long benches
#   scripts/device-check.sh --cpu          # anywhere: the same steps on the CPU at small shapes
#
# First call, in order: gpu (nvidia-smi, measured copy bandwidth), unpack-debs, configure, build,
# parity-fp32, parity-bf16, parity-graphs (the LM cases decoded through decode graphs),
# bench-attention (the kernel per shape), bench-qwen-decode (Qwen2.5-7B, batch 1, 64 new tokens),
# bench-flux-step (one FLUX.1-dev DiT step at 1024^2),
# bench-qwen-decode-graphs (the Qwen decode through decode graphs), with several GPUs
# bench-flux-step-Nranks (the same step split over N = 2, 4, 8 GPUs over NCCL) and distributed-nccl
# (the distributed tests on the GPUs), unit-tests (ctest). --long: configure and build again (a no-op on a warm machine), then bench-qwen-prefill
# (2048 tokens), bench-flux-28 (28 DiT steps at 1024^2), bench-xomni-codes (5184 codes at 1152^2,
# CFG), then the 12B fp8 DiT from disk: dit-write, dit-fp8-none, dit-fp8-sequential, and last
# bench-xomni-codes-graphs (the X-Omni bench through decode graphs, on what the budget leaves).
#
# Options: --cpu, --long, --quick (CPU: skip the unit tests, one parity case, 1 timed run per bench),
# --no-build (use the build folder as it is), --skip-tests, --build=DIR (default build-device),
# --jobs=N (compile jobs; default all cores), --budget=SECONDS (default 540 on the GPU, none with
# --cpu), --only=STEP[,STEP] (run only these steps, and the build before them).
# Environment: OUT (the result folder; default DIR/out), OMNIFLUX_BW_GBS (the GPU's memory bandwidth
# in GB/s when its name is not in the table below), OMNIFLUX_DEVICE_CHECK_FAIL="STEP ..." (those
# steps fail at once) and OMNIFLUX_DEVICE_CHECK_HANG="STEP ..." (those steps sleep until their
# timeout, 2 s), used by the ctest device_check.cpu to check that a failing step loses nothing.
#
# Files under $OUT (at most 8, as the device tool returns): summary.txt (one line per step, written
# when it ends), device-check.log (every command's output, as it runs), ctest.log, parity-fp32.jsonl,
# parity-bf16.jsonl, parity-graphs.jsonl and <date>-<gpu>.jsonl (the bench lines, named after the GPU or "cpu-check").
# Exit status: 0 when every step that ran passed, 1 otherwise, 2 on a usage error.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)

# The -dev packages the build needs, the runtime libraries they link (used only where the machine
# lacks them), and pkgconf (CMake finds cpp-httplib and the decoders through pkg-config).
debs=(libgtest-dev googletest nlohmann-json3-dev libstb-dev libstb0 libsentencepiece-dev libsentencepiece0
      libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
      libcpp-httplib-dev libcpp-httplib0.11 libssl-dev libssl3 zlib1g-dev zlib1g libbrotli-dev libbrotli1
      libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo libwebp-dev libwebp7 libwebpdemux2 libwebpmux3
      libgloo-dev pkgconf pkgconf-bin libpkgconf3)

usage="usage: scripts/device-check.sh [--fetch-debs] [--cpu] [--long] [--quick] [--no-build] [--skip-tests] [--build=DIR] [--jobs=N] [--budget=S] [--only=STEP,...]"
device=cuda
build="build-device"
skip_tests=0
no_build=0
long=0
quick=0
budget=""
only=""
jobs=${OMNIFLUX_JOBS:-$(nproc)}
for a in "$@"; do
  case "$a" in
    --fetch-debs)
      mkdir -p .deb && cd .deb && apt-get download "${debs[@]}" && ls -l && exit 0
      exit 1 ;;
    --cpu) device=cpu ;;
    --long) long=1 ;;
    --quick) quick=1 ;;
    --no-build) no_build=1 ;;
    --skip-tests) skip_tests=1 ;;
    --build=*) build="${a#--build=}" ;;
    --jobs=*) jobs="${a#--jobs=}" ;;
    --budget=*) budget="${a#--budget=}" ;;
    --only=*) only=",${a#--only=}," ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
for n in "$jobs" ${budget:+"$budget"}; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
done
[ -z "$budget" ] && [ "$device" = cuda ] && budget=540
case "$build" in /*) ;; *) build="$root/$build" ;; esac

out="${OUT:-$build/out}"
mkdir -p "$out"
log="$out/device-check.log"
summary="$out/summary.txt"
: >"$log"
: >"$summary"
start=$(date +%s)
failed=0
note() { echo "$*" | tee -a "$summary"; }
trap 'note "interrupted after $(($(date +%s) - start))s"; exit 1' INT TERM

# step NAME TIMEOUT [--stdout FILE] CMD...: runs CMD under `timeout`, its output in the log (stdout
# appended to FILE instead when given), and notes the status and time in the summary at once. A step
# is skipped when --only leaves it out or the budget cannot give it 15 s.
in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
step() {
  local name=$1 limit=$2
  shift 2
  local stdout=""
  if [ "${1:-}" = --stdout ]; then stdout=$2; shift 2; fi
  case "$name" in gpu | unpack-debs | configure | build) ;;  # what every other step needs
    *) if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then return 0; fi ;;
  esac
  if [ -n "$budget" ]; then
    local left=$((budget - ($(date +%s) - start) - 10))
    if [ $left -lt 15 ]; then
      note "$(printf '%-22s skipped: %ss of the %ss budget left' "$name" "$((left + 10))" "$budget")"
      failed=1
      return 1
    fi
    [ $left -lt "$limit" ] && limit=$left
  fi
  if in_list "$name" "${OMNIFLUX_DEVICE_CHECK_FAIL:-}"; then set -- false
  elif in_list "$name" "${OMNIFLUX_DEVICE_CHECK_HANG:-}"; then set -- sleep 3600; limit=2
  fi
  local t0 rc
  t0=$(date +%s)
  echo "=== $name (timeout ${limit}s): $*" >>"$log"
  if [ -n "$stdout" ]; then
    timeout -k 10 "$limit" "$@" >>"$stdout" 2>>"$log"
  else
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  fi
  rc=$?
  local what="rc=$rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMEOUT after ${limit}s"
  note "$(printf '%-22s %-22s %5ss' "$name" "$what" "$(($(date +%s) - t0))")"
  [ $rc -eq 0 ] || failed=1
  return $rc
}
have_bin() {
  [ -x "$bin/$1" ] && return 0
  note "$(printf '%-22s skipped: no %s in %s' "$2" "$1" "$bin")"
  failed=1
  return 1
}

python=${OMNIFLUX_PYTHON:-python3}
note "device-check on $(hostname), $(date -u +%FT%TZ), device $device, $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $([ $long -eq 1 ] && echo long || echo first) call${budget:+, budget ${budget}s}"

# --- the GPU: name, memory and bandwidth ---------------------------------------------------------
# Spec-sheet bandwidth (GB/s) by nvidia-smi's name; the bench floors (bytes / bandwidth) use it.
gpu_name=cpu-check
bw_gbs=0
if [ "$device" = cuda ]; then
  gpu_csv=$(nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv,noheader 2>>"$log" | head -1)
  note "gpu: ${gpu_csv:-nvidia-smi failed}"
  gpu_name=${gpu_csv%%,*}
  case "$gpu_name" in
    *H200*) bw_gbs=4800 ;;
    *H100*NVL*) bw_gbs=3900 ;;
    *H100*PCIe*) bw_gbs=2000 ;;
    *H100*) bw_gbs=3350 ;;   # H100 SXM5 80GB HBM3
    *A100*80GB*) bw_gbs=2039 ;;
    *A100*) bw_gbs=1555 ;;
    *L40S*) bw_gbs=864 ;;
    *4090*) bw_gbs=1008 ;;
  esac
  bw_gbs=${OMNIFLUX_BW_GBS:-$bw_gbs}
  note "bandwidth used for the bench floors: ${bw_gbs} GB/s ($([ -n "${OMNIFLUX_BW_GBS:-}" ] && echo OMNIFLUX_BW_GBS || echo 'spec sheet, by name'); 0 = unknown)"
  # Measured device-to-device copy (bytes read + written), for comparison with the spec figure.
  step gpu 60 "$python" -c '
import torch, time
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): y.copy_(x)
torch.cuda.synchronize(); s = (time.perf_counter() - t) / 20
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}: {p.name}, "
      f"sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB; "
      f"copy {2 * x.numel() / s / 1e9:.0f} GB/s read+write")'
  grep -E "^torch .* GB/s" "$log" | tail -1 | sed 's/^/  /' >>"$summary"
fi
slug=$(echo "$gpu_name" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+//; s/-+$//')
results="$out/$(date -u +%F)-${slug:-unknown-gpu}$([ $long -eq 1 ] && echo -long).jsonl"
printf '{"kind":"header","date":"%s","commit":"%s","device":"%s","gpu":"%s","bw_gbs":%s,"call":"%s"}\n' \
  "$(date -u +%FT%TZ)" "$(git rev-parse HEAD 2>/dev/null)" "$device" "$gpu_name" "$bw_gbs" \
  "$([ $long -eq 1 ] && echo long || echo first)" >"$results"

# --- the -dev packages ---------------------------------------------------------------------------
prefix="$root/.deb/root"
cmake_extra=()
if [ $no_build -eq 0 ] && compgen -G ".deb/*.deb" >/dev/null; then
  rm -rf "$prefix" && mkdir -p "$prefix"
  step unpack-debs 120 bash -c 'for f in .deb/*.deb; do dpkg -x "$f" "$1" || exit 1; done' _ "$prefix"
  # .pc files say prefix=/usr: the sysroot puts the unpacked tree in front of every path.
  export PKG_CONFIG_SYSROOT_DIR="$prefix"
  export PKG_CONFIG_LIBDIR="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig:$prefix/usr/lib/pkgconfig"
  # Runtime libraries only where the machine has none of that name: a folder of links in front of
  # the loader's path, so python3, cmake and the rest keep the machine's own OpenSSL and zlib.
  fallback="$root/.deb/lib"
  rm -rf "$fallback" && mkdir -p "$fallback"
  have=$(ldconfig -p 2>/dev/null | awk 'NR > 1 {print $1}')
  for f in "$prefix"/usr/lib/x86_64-linux-gnu/*.so.* "$prefix"/lib/x86_64-linux-gnu/*.so.*; do
    [ -e "$f" ] || continue
    b=$(basename "$f")
    grep -qxF "$b" <<<"$have" || ln -sf "$f" "$fallback/$b"
  done
  note "runtime libraries carried because the machine lacks them: $(ls "$fallback" | tr '\n' ' ')"
  export LD_LIBRARY_PATH="$fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ! command -v pkg-config >/dev/null; then
    cmake_extra+=(-DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf")
    note "pkg-config: the carried pkgconf"
  fi
  cmake_extra+=(-DCMAKE_PREFIX_PATH="$prefix/usr")
  # The .pc files name only usr/include; the multiarch headers (jconfig.h, opensslconf.h) sit in
  # usr/include/x86_64-linux-gnu, where the compiler otherwise finds the machine's own. On the first
  # H100 run that mixed Ubuntu's jconfig.h (libjpeg 8) with the carried libjpeg62: "Wrong JPEG
  # library version: library is 62, caller expects 80" in every JPEG test.
  cmake_extra+=(-DCMAKE_CXX_FLAGS="-isystem $prefix/usr/include/x86_64-linux-gnu"
                -DCMAKE_C_FLAGS="-isystem $prefix/usr/include/x86_64-linux-gnu")
elif [ $no_build -eq 0 ]; then
  note "no .deb/*.deb: using the machine's packages (run --fetch-debs where apt works and carry .deb)"
fi

# --- configure and build -------------------------------------------------------------------------
bin="$build/bin"
if [ $no_build -eq 0 ]; then
  torch_dir=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "share", "cmake", "Torch"))' 2>>"$log")
  note "torch $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1) at $torch_dir"
  generator=()
  command -v ninja >/dev/null && [ ! -f "$build/Makefile" ] && generator=(-G Ninja)
  built=0
  step configure 180 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$torch_dir" \
    -DOMNIFLUX_CUDA_ARCHS=9.0 "${cmake_extra[@]}" &&
    step build 420 cmake --build "$build" -j "$jobs" && built=1
  grep -E "CUDA (ON|OFF)" "$log" | tail -1 | sed 's/^/  /' >>"$summary"
  if [ "$device" = cuda ] && [ -f "$build/lib/libomniflux.so" ]; then
    ldd "$build/lib/libomniflux.so" | grep -qE "torch_cuda" || note "libomniflux does not link the CUDA part of LibTorch"
  fi
  [ $built -eq 1 ] || { note "total $(($(date +%s) - start))s, the build FAILED: nothing else can run"; exit 1; }
fi
threads=$([ "$device" = cuda ] && echo "$(nproc)" || echo "${OMNIFLUX_THREADS:-2}")
rtflags=(--device "$device" --threads "$threads")

# --- parity on the device ------------------------------------------------------------------------
parity_summary() {  # FILE DTYPE: one line per failing tensor into the summary
  "$python" - "$1" "$2" <<'EOF' >>"$summary" 2>&1
import json, sys
lines = []
for l in open(sys.argv[1]):
    if l.startswith("{"):
        try: lines.append(json.loads(l))
        except ValueError: pass
bad = [l for l in lines if not l.get("pass")]
print(f"  parity {sys.argv[2]}: {len(lines) - len(bad)}/{len(lines)} tensors pass")
for l in bad:
    print("   FAIL", l.get("case"), l.get("output"), l.get("status", ""), "max_abs", l.get("max_abs_err"),
          "rel_l2", l.get("rel_l2"), "tol", l.get("tolerance"), l.get("tolerance_rel_l2", ""), l.get("detail", ""))
EOF
}
if [ $long -eq 0 ] && have_bin omniflux-parity parity; then
  cases=()
  [ $quick -eq 1 ] && cases=(--case qwen2_lm)
  for dt in fp32 bf16; do
    f="$out/parity-$dt.jsonl"
    : >"$f"
    step "parity-$dt" 180 --stdout "$f" "$bin/omniflux-parity" tests/fixtures "${rtflags[@]}" \
      --dtype "$([ $dt = fp32 ] && echo float32 || echo bfloat16)" "${cases[@]}"
    parity_summary "$f" "$dt"
  done
  # The LM cases' greedy decoding through decode graphs (--decode-graphs), in fp32 against the same
  # references: that a captured graph decodes correctly, which the decode-graph bench cannot see.
  f="$out/parity-graphs.jsonl"
  : >"$f"
  gcases=(--case qwen2_lm --case qwen2_5_vl --case xomni_lm)
  [ $quick -eq 1 ] && gcases=(--case qwen2_lm)
  step parity-graphs 120 --stdout "$f" "$bin/omniflux-parity" tests/fixtures "${rtflags[@]}" --dtype float32 \
    --decode-graphs "${gcases[@]}"
  parity_summary "$f" "fp32, decode graphs"
fi

# --- benchmarks ----------------------------------------------------------------------------------
# Each bench's JSON lines are appended to the results file as they are printed.
bench() {  # NAME TIMEOUT ARGS...
  local name=$1 limit=$2
  shift 2
  step "$name" "$limit" --stdout "$results" "$bin/omniflux-bench" "${rtflags[@]}" "$@"
}
if have_bin omniflux-bench benches; then
  if [ "$device" = cuda ] && [ $long -eq 0 ]; then
    bench bench-attention 120 attention --dtype bfloat16
    bench bench-qwen-decode 150 lm_decode preset=qwen2.5-7b batch=1 prompt=128 new=64 bw_gbs="$bw_gbs" \
      --warmup 1 --iters 3 --dtype bfloat16
    bench bench-flux-step 150 flux_dit_forward preset=flux-dev --warmup 1 --iters 3 --dtype bfloat16
    # After the FLUX step, so that a slow build makes the budget cut this one rather than that.
    bench bench-qwen-decode-graphs 150 lm_decode preset=qwen2.5-7b batch=1 prompt=128 new=64 bw_gbs="$bw_gbs" \
      --warmup 1 --iters 3 --dtype bfloat16 --decode-graphs
  elif [ "$device" = cuda ]; then
    bench bench-qwen-prefill 150 lm_prefill preset=qwen2.5-7b batch=1 prompt=2048 --warmup 1 --iters 3 --dtype bfloat16
    bench bench-flux-28 240 flux_dit_forward preset=flux-dev --warmup 1 --iters 28 --dtype bfloat16
    bench bench-xomni-codes 300 xomni preset=x-omni dit=0 cfg=3 bw_gbs="$bw_gbs" --warmup 0 --iters 1 --dtype bfloat16
  else  # the same cases at their small CPU shapes, to test the script
    it=(--warmup 1 --iters 2)
    [ $quick -eq 1 ] && it=(--warmup 0 --iters 1)
    if [ $long -eq 0 ]; then
      bench bench-attention 120 attention "${it[@]}"
      bench bench-qwen-decode 120 lm_decode batch=1 prompt=32 new=8 "${it[@]}"
      bench bench-flux-step 120 flux_dit_forward "${it[@]}"
      bench bench-qwen-decode-graphs 120 lm_decode batch=1 prompt=32 new=8 "${it[@]}" --decode-graphs
    else
      bench bench-qwen-prefill 120 lm_prefill batch=1 prompt=256 "${it[@]}"
      bench bench-flux-28 300 flux_dit_forward --warmup 1 --iters 28
      bench bench-xomni-codes 300 xomni dit=0 cfg=3 codes=32 --warmup 0 --iters 1
      bench bench-xomni-codes-graphs 300 xomni dit=0 cfg=3 codes=32 --warmup 0 --iters 1 --decode-graphs
    fi
  fi
fi

# --- several ranks (docs/distributed.md) ----------------------------------------------------------
# One FLUX DiT step split over 2, 4 and 8 ranks (sequence parallelism): NCCL between the machine's
# GPUs when it has several (first call), Gloo between processes with --cpu; then the distributed
# tests' comparisons (1 rank against 2 and 4) on the GPUs in fp32. Skipped on a one-GPU machine.
if [ $long -eq 0 ] && have_bin omniflux-bench ranks; then
  if [ "$device" = cuda ]; then
    ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    for n in 2 4 8; do
      [ "$n" -le "$ngpu" ] && bench "bench-flux-step-${n}ranks" 150 --nproc "$n" flux_dit_forward preset=flux-dev \
        --warmup 1 --iters 3 --dtype bfloat16
    done
    if [ "$ngpu" -ge 2 ] && [ -x "$bin/omniflux_distributed_tests" ]; then
      step distributed-nccl 240 env OMNIFLUX_DIST_TEST_DEVICE=cuda OMNIFLUX_DIST_TEST_MAX_RANKS="$ngpu" \
        "$bin/omniflux_distributed_tests" --gtest_filter='Distributed.Flux*:Distributed.UniWorld*:Distributed.XOmni*'
    fi
    [ "$ngpu" -ge 2 ] || note "one GPU: the NCCL steps need several (docs/distributed.md)"
  else
    it=(--warmup 1 --iters 2)
    [ $quick -eq 1 ] && it=(--warmup 0 --iters 1)
    bench bench-flux-step-2ranks 120 --nproc 2 flux_dit_forward "${it[@]}"
  fi
fi

# --- unit tests ----------------------------------------------------------------------------------
# Last in the first call: they run on the machine's CPU, so they say the least about the GPU, and
# the budget should cut them rather than a GPU step.
if [ $long -eq 0 ] && [ $skip_tests -eq 0 ] && [ $quick -eq 0 ]; then
  # Left out: CPU-only checks that CI covers and that need what the GPU machine lacks or would only
  # cost time there (clang for the fuzz targets, chromium, the OpenAI client, an install tree), and
  # this script's own CPU test.
  step unit-tests 300 ctest --test-dir "$build" -j "$jobs" --timeout 120 --output-on-failure \
    -E '^(probe|fuzz|server\.browser|server\.openai_client|package\.find_package|device_check\.cpu)$'
  cp "$build/Testing/Temporary/LastTest.log" "$out/ctest.log" 2>/dev/null
  grep -E "tests passed|tests failed" "$log" | tail -1 | sed 's/^/  /' >>"$summary"
fi

# --- offload and fp8 at full size (--long, GPU) -------------------------------------------------
# A FLUX.1-dev-shaped DiT with random fp8 weights on local disk: one 1024^2 forward with the whole
# model on the GPU (the fp8 linears through _scaled_mm on sm_89+) and one streamed block by block
# from pinned host memory (sequential offload); each prints load and step time and peak RSS.
if [ "$device" = cuda ] && [ $long -eq 1 ] && have_bin omniflux-bench_dit_disk dit-fp8; then
  ditdir="$build/dit-fp8"
  [ -f "$ditdir/.complete" ] ||
    { step dit-write 240 "$bin/omniflux-bench_dit_disk" write "$ditdir" --weights fp8 --threads 0 &&
      touch "$ditdir/.complete"; }
  for mode in none sequential; do
    [ -f "$ditdir/.complete" ] &&
      step "dit-fp8-$mode" 180 --stdout "$results" "$bin/omniflux-bench_dit_disk" run "$ditdir" --device cuda \
        --offload "$mode" --size 1024
  done
fi
# Last in the second call, on what the budget leaves: X-Omni's codes through decode graphs, to set
# against bench-xomni-codes.
if [ "$device" = cuda ] && [ $long -eq 1 ] && have_bin omniflux-bench benches; then
  bench bench-xomni-codes-graphs 300 xomni preset=x-omni dit=0 cfg=3 bw_gbs="$bw_gbs" --warmup 0 --iters 1 \
    --dtype bfloat16 --decode-graphs
fi

"$python" - "$results" <<'EOF' >>"$summary" 2>&1
import json, sys
for l in open(sys.argv[1]):
    try: d = json.loads(l)
    except ValueError: continue
    if d.get("kind") == "header":
        continue
    shape = d.get("shape")
    if isinstance(shape, dict):
        name = shape.get("name") or " ".join(f"{k}={v}" for k, v in shape.items())
    else:
        name = str(shape or "")
    print(f"  {d.get('case', ''):<18} {d.get('metric', ''):<10} {name[:40]:<40} {d.get('value', 0):>12.3f} "
          f"{d.get('unit', '')} {d.get('backend', '')}")
EOF

note "total $(($(date +%s) - start))s, $([ $failed -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED'); files in $out"
exit $failed
