#!/usr/bin/env bash
# Run one libFuzzer target from build/fuzz/ (built by `make fuzz` / `make fuzz-smoke`).
#
#   tests/fuzz/run.sh fuzz  TARGET SECONDS MAX_LEN [libFuzzer flags...]
#   tests/fuzz/run.sh smoke TARGET SECONDS MAX_LEN [libFuzzer flags...]
#
# smoke first runs the target over every kept crash in tests/fuzz/regressions/TARGET/ (each
# must now pass) and then, like fuzz, fuzzes for SECONDS starting from the seeds in
# tests/fuzz/corpus/TARGET/ plus what earlier runs found in build/fuzz/corpus-TARGET/ (where new
# inputs are written; the repository's seeds are never modified). A crash leaves its input in
# build/fuzz/crash-TARGET/ and fails the run. libFuzzer's output goes to
# build/fuzz/fuzz_TARGET.log; the executions count is printed on success. stdin is /dev/null, so
# a proxy.ini the fuzzer writes with "auth_file = /dev/stdin" cannot hang the run.
set -euo pipefail

mode=$1 target=$2 seconds=$3 max_len=$4
shift 4
dir=build/fuzz
bin=$dir/fuzz_$target
log=$dir/fuzz_$target.log
mkdir -p "$dir/corpus-$target" "$dir/crash-$target"

fail() {
  tail -n 60 "$log" >&2
  echo "fuzz_$target: FAILED ($1); full output in $log, inputs in $dir/crash-$target/" >&2
  exit 1
}

if [ "$mode" = smoke ] && [ -d "tests/fuzz/regressions/$target" ]; then
  mapfile -t regs < <(find "tests/fuzz/regressions/$target" -type f | sort)
  if [ ${#regs[@]} -gt 0 ]; then
    echo "== fuzz_$target: ${#regs[@]} regression input(s)"
    "$bin" -timeout=10 "${regs[@]}" </dev/null >"$log" 2>&1 || fail "a kept regression input fails again"
  fi
fi

dict=()
[ -f "tests/fuzz/$target.dict" ] && dict=(-dict="tests/fuzz/$target.dict")

echo "== fuzz_$target for ${seconds} s"
"$bin" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -print_final_stats=1 \
  "${dict[@]}" -artifact_prefix="$dir/crash-$target/" "$@" \
  "$dir/corpus-$target" "tests/fuzz/corpus/$target" </dev/null >"$log" 2>&1 || fail "crash or timeout"
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*//p' "$log" | tail -n 1)
echo "   fuzz_$target: ${execs:-?} executions, no crash ($cov)"
