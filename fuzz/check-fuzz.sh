#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Replay the regression inputs of each fuzz target, then fuzz it for a
# bounded time.  Run from the fuzz/ build directory by "make check-fuzz"
# and "make fuzz-long", which set:
#
#   FUZZ_TARGETS      the targets (executables in the current directory)
#   FUZZ_SECONDS      seconds of fuzzing per target (0: replay only)
#   FUZZ_REGRESSIONS  directory of DIR/<target>/* inputs that once failed
#   FUZZ_SEEDS        directory of DIR/<target>/* seeds (make-seeds.sh)
#   FUZZ_CORPUS       directory of DIR/<target>/ evolving corpora
#   FUZZ_ARTIFACTS    where crashes, leaks, timeouts and OOMs are saved
#
# Exits 0 if nothing was found, 1 if a target failed (the failing input
# is named), 77 if the targets are not built.  Extra libFuzzer flags can
# be passed in FUZZ_FLAGS.

set -uo pipefail

targets=${FUZZ_TARGETS:-fuzz-descriptor fuzz-header fuzz-image fuzz-check}
seconds=${FUZZ_SECONDS:-20}
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
regressions=${FUZZ_REGRESSIONS:-$srcdir/regressions}
seeds=${FUZZ_SEEDS:-seeds}
corpus=${FUZZ_CORPUS:-corpus}
artifacts=${FUZZ_ARTIFACTS:-artifacts}
read -r -a extra <<< "${FUZZ_FLAGS:-}"

# Hard limits: a failure is a crash, a leak, a 10 s input or 1 GiB.
common=(-rss_limit_mb=1024 -timeout=10)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# The largest input libFuzzer may generate, per target.
max_len ()
{
  case $1 in
    fuzz-header) echo 1024 ;;
    fuzz-descriptor) echo 65536 ;;
    *) echo 524288 ;;
  esac
}

failed=()
for t in $targets; do
  if [ ! -x "./$t" ]; then
    echo "SKIP: ./$t is not built (configure --enable-fuzzing)"
    exit 77
  fi
done

for t in $targets; do
  mkdir -p "$artifacts/$t"
  log=$artifacts/$t/fuzz.log

  # 1. Every input that once failed must pass now.
  if [ -d "$regressions/$t" ]; then
    n=$(find "$regressions/$t" -type f ! -name '*.md' | wc -l)
    echo "check-fuzz: $t: replaying $n regression inputs"
    if ! find "$regressions/$t" -type f ! -name '*.md' -print0 | sort -z |
         xargs -0 -r "./$t" "${common[@]}" "${extra[@]}" \
           > "$artifacts/$t/regressions.log" 2>&1; then
      echo "FAIL: $t: a regression input fails again:"
      grep -E 'Running:|ERROR|SUMMARY|invariant|after writes|after reopen|map says' \
        "$artifacts/$t/regressions.log" | tail -n 20
      failed+=("$t (regressions)")
      continue
    fi
  fi

  [ "$seconds" -gt 0 ] || continue

  # 2. Fuzz: new inputs go to the corpus (kept between runs), the seeds
  # and regressions are read only.
  mkdir -p "$corpus/$t"
  dirs=("$corpus/$t")
  for d in "$seeds/$t" "$regressions/$t"; do
    [ -d "$d" ] && dirs+=("$d")
  done
  dict=()
  [ -f "$srcdir/$t.dict" ] && dict=(-dict="$srcdir/$t.dict")
  echo "check-fuzz: $t: fuzzing for $seconds s (log: $log)"
  "./$t" "${common[@]}" -max_total_time="$seconds" \
    -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t/" "${dict[@]}" "${extra[@]}" \
    "${dirs[@]}" > "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  echo "check-fuzz: $t: ${execs:-?} executions, exit status $rc"
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: $t: libFuzzer found a problem:"
    grep -E '^==[0-9]+==ERROR|SUMMARY|invariant failed|runtime error|ALARM|out-of-memory|after writes|after reopen|map says|Test unit written' \
      "$log" | head -n 20
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-fuzz: FAILED: ${failed[*]}"
  echo "check-fuzz: minimise an input with ./TARGET -minimize_crash=1" \
       "-runs=10000 INPUT, then save it under fuzz/regressions/TARGET/"
  exit 1
fi
echo "check-fuzz: PASS: $targets"
exit 0
