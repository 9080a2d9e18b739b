#!/usr/bin/env bash
# ctest device_check.cpu: scripts/device-check.sh --cpu --quick on this build, with one step made to
# fail and one to hang past its timeout. Every result file must still be under $OUT, each step must
# have its line in summary.txt, and the steps after the failures must have run. Then a budget too
# small for any step: the step is skipped, and said so.
#   tests/device_check/check.sh BUILD_DIR
set -uo pipefail
build=$1
cd "$(dirname "$0")/../.." || exit 1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }
has() { grep -qE "$2" "$out/$1" || fail "$1 lacks /$2/"; }

OUT=$out OMNIFLUX_DEVICE_CHECK_FAIL="parity-bf16" OMNIFLUX_DEVICE_CHECK_HANG="bench-attention" \
  scripts/device-check.sh --cpu --quick --no-build --build="$build"
rc=$?
[ $rc -eq 1 ] || fail "exit status $rc with a failing step, expected 1"
for f in summary.txt device-check.log parity-fp32.jsonl parity-bf16.jsonl parity-graphs.jsonl; do
  [ -f "$out/$f" ] || fail "no $f under \$OUT"
done
results=$(ls "$out"/*-cpu-check.jsonl 2>/dev/null | head -1)
[ -n "$results" ] || fail "no <date>-cpu-check.jsonl under \$OUT"
has summary.txt '^parity-fp32 +rc=0 '
has summary.txt 'parity fp32: [1-9][0-9]*/[1-9][0-9]* tensors pass'
has summary.txt '^parity-bf16 +rc=1 '
has summary.txt '^bench-attention +TIMEOUT after 2s'
has summary.txt '^parity-graphs +rc=0 '
has summary.txt 'parity fp32, decode graphs: [1-9][0-9]*/[1-9][0-9]* tensors pass'
has summary.txt '^bench-qwen-decode +rc=0 '
has summary.txt '^bench-qwen-decode-graphs +rc=0 '
has summary.txt '^bench-flux-step +rc=0 '
has summary.txt '^bench-flux-step-2ranks +rc=0 '
has summary.txt 'SOME STEPS FAILED'
has parity-fp32.jsonl '"pass":true'
if [ -n "$results" ]; then
  has "$(basename "$results")" '"kind":"header"'
  has "$(basename "$results")" '"case":"lm_decode"'
  has "$(basename "$results")" '"metric":"decode_graph"'
  has "$(basename "$results")" '"case":"flux_dit_forward"'
  has "$(basename "$results")" '"ranks":2'
fi

rm -rf "${out:?}"/*
OUT=$out scripts/device-check.sh --cpu --quick --no-build --build="$build" --budget=5 --only=parity-fp32
rc=$?
[ $rc -eq 1 ] || fail "exit status $rc with a skipped step, expected 1"
has summary.txt '^parity-fp32 +skipped: .* of the 5s budget left'

[ $bad -eq 0 ] && echo "device-check --cpu: every file and step line is there"
exit $bad
