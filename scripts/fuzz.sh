#!/usr/bin/env bash
# Builds omniflux's libFuzzer targets with clang (ASan + UBSan) and runs each in turn.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 s; every target)
#
# Targets (tests/fuzz/fuzz_<target>.cpp):
#   safetensors_header  the safetensors header parser
#   image               image_size + decode_image (PNG, JPEG, WebP; the refused formats) + read_png_text
#   data_uri            the server's data: URI and base64 decoding
#   multipart           the server's multipart/form-data parser (any split of the body ends alike)
#   api_request         the server's request validation: JSON bodies of every endpoint, edit forms
#   torch_archive       torch.save files: the zip reader and the pickle machine (connector checkpoints)
# Seeds: tests/fuzz/corpus/<target>/ (and the malformed safetensors fixtures). The growing corpus
# is kept in $OMNIFLUX_FUZZ_DIR/corpus/<target>, crashes land in $OMNIFLUX_FUZZ_DIR/crashes/<target>/
# (OMNIFLUX_FUZZ_DIR defaults to build-fuzz). Each run ends with one summary line per target:
# executions, coverage (libFuzzer's cov: and ft:), and the result.
# Exit status: 0 when every target ran clean, 1 on a crash, leak, timeout or build failure, 77 when
# clang with libFuzzer is missing (ctest counts that as skipped). OMNIFLUX_FUZZ_SKIP_SETUP=1 skips
# scripts/setup.sh (the `fuzz` ctest sets it; setup.sh installs clang and libclang-rt-14-dev).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
all_targets=(safetensors_header image data_uri multipart api_request torch_archive)

secs=600
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/fuzz_$t.cpp" ] || { echo "fuzz.sh: unknown target '$t' (known: ${all_targets[*]})" >&2; exit 2; }
done

if [ "${OMNIFLUX_FUZZ_SKIP_SETUP:-0}" != 1 ]; then ./scripts/setup.sh || exit 1; fi
out="${OMNIFLUX_FUZZ_DIR:-$root/build-fuzz}"
mkdir -p "$out"

cxx=${CXX_FUZZ:-clang++}
cc=${CC_FUZZ:-clang}
san=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
if ! command -v "$cxx" >/dev/null || ! command -v "$cc" >/dev/null; then
  echo "fuzz.sh: SKIPPED, no $cxx / $cc (apt-get install clang libclang-rt-14-dev)" >&2
  exit 77
fi
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  >"$out/probe.cpp"
if ! "$cxx" "${san[@]}" "$out/probe.cpp" -o "$out/probe" 2>"$out/probe.log"; then
  echo "fuzz.sh: SKIPPED, $cxx cannot link libFuzzer with ASan/UBSan (apt-get install libclang-rt-14-dev):" >&2
  head -3 "$out/probe.log" >&2
  exit 77
fi

stb=""
for d in /usr/include/stb /usr/include; do [ -f "$d/stb_image_write.h" ] && stb=$d && break; done
image_libs=$(pkg-config --cflags --libs libpng libjpeg libwebp) || { echo "fuzz.sh: libpng/libjpeg/libwebp -dev missing" >&2; exit 1; }

# sources_<target>: what each target compiles (all without LibTorch).
sources_safetensors_header=(src/io/safetensors_header.cpp src/error.cpp)
sources_image=(src/io/image.cpp src/io/image_decode.cpp src/io/paths.cpp src/io/file_write.cpp src/error.cpp)
sources_data_uri=(tools/server/data_uri.cpp tools/server/api_error.cpp)
sources_multipart=(tools/server/multipart.cpp tools/server/api_error.cpp)
sources_torch_archive=(src/io/torch_archive.cpp src/error.cpp)
# api.cpp's headers reach LibTorch's (chat.h); it is compiled against them but links none of it.
sources_api_request=(tools/server/api.cpp tools/server/multipart.cpp tools/server/data_uri.cpp
                     tools/server/api_error.cpp "${sources_image[@]}")

torch_include() {  # the venv's LibTorch headers (scripts/setup.sh)
  local py
  py=$(ls -d "${OMNIFLUX_CACHE_DIR:-$HOME/.cache/omniflux}"/torch-*/bin/python 2>/dev/null | sort -V | tail -1)
  [ -n "$py" ] && "$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))'
}

build() {  # build TARGET: rebuilds build-fuzz/fuzz_TARGET when a source is newer
  local t=$1 bin="$out/fuzz_$1"
  local -n srcs="sources_$t"
  local deps=("tests/fuzz/fuzz_$t.cpp" "${srcs[@]}" include src/io tools/server scripts/fuzz.sh)
  if [ -x "$bin" ] && [ -z "$(find "${deps[@]}" -newer "$bin" -print -quit 2>/dev/null)" ]; then return 0; fi
  echo "fuzz.sh: building fuzz_$t" >&2
  local extra=()
  case $t in
    image|api_request)
      "$cc" -g -O1 -fsanitize=address,undefined,fuzzer-no-link -I"$stb" -c src/io/stb_impl.c -o "$out/stb_impl.o" || return 1
      extra=("$out/stb_impl.o" -I"$stb" $image_libs) ;;&
    api_request)
      local torch_inc
      torch_inc=$(torch_include) || { echo "fuzz.sh: no LibTorch headers (run scripts/setup.sh)" >&2; return 1; }
      extra+=(-Itools/server -isystem "$torch_inc") ;;
    data_uri|multipart) extra=(-Itools/server) ;;
  esac
  "$cxx" -std=c++17 "${san[@]}" -Iinclude -Isrc "tests/fuzz/fuzz_$t.cpp" "${srcs[@]}" "${extra[@]}" -o "$bin.tmp" &&
    mv "$bin.tmp" "$bin"
}

seed() {  # seed TARGET: the checked-in seeds into the working corpus
  local t=$1 dir="$out/corpus/$1"
  mkdir -p "$dir" "$out/crashes/$t"
  [ -d "tests/fuzz/corpus/$t" ] && cp -n tests/fuzz/corpus/"$t"/* "$dir/" 2>/dev/null
  if [ "$t" = safetensors_header ]; then
    cp -n tests/fixtures/bad_safetensors/*.safetensors "$dir/" 2>/dev/null
    cp -n tests/fixtures/flow_match_scheduler/io.safetensors "$dir/seed_valid_scheduler.safetensors" 2>/dev/null
    cp -n tests/fixtures/uniworld_conditioning/config.json "$dir/seed_json_text" 2>/dev/null
  fi
  return 0
}

status=0
summary=()
for t in "${targets[@]}"; do
  if ! build "$t"; then
    summary+=("$(printf '%-20s BUILD FAILED' "$t")")
    status=1
    continue
  fi
  seed "$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  log="$out/fuzz_$t.log"
  echo "fuzz.sh: fuzz_$t for ${secs}s (log: $log)" >&2
  "$out/fuzz_$t" "$out/corpus/$t" "${dict[@]}" -max_total_time="$secs" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$out/crashes/$t/" \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
  result="ok"
  if [ $rc -ne 0 ]; then
    result="FAILED (exit $rc): $(grep -m1 -E 'ERROR: |runtime error|deadly signal|Test unit written' "$log")"
    status=1
  fi
  summary+=("$(printf '%-20s %4ss  execs %-10s cov %-6s ft %-6s corpus %-5s %s' "$t" "$secs" "${execs:-?}" \
    "${cov:-?}" "${ft:-?}" "$(ls "$out/corpus/$t" | wc -l)" "$result")")
done
printf '%s\n' "${summary[@]}"
exit $status
