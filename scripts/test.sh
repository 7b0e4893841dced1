#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The one command that sets everything up and runs the whole test suite:
#
#   1. install missing Debian packages (scripts/deps.sh);
#   2. build in the source tree with --enable-werror and run make -k check;
#   3. build a copy of the sources in build-sanitizers/ with
#      --enable-sanitizers --enable-werror (ASan + UBSan) and run
#      make -k check-sanitizers there: the lib/ unit tests, and the
#      end-to-end tests that drive the most engine code with hostile
#      input (SANITIZER_E2E_TESTS in tests/Makefile.am), with the plugin
#      loaded into nbdkit with the sanitizer runtimes preloaded
#      (tests/wrappers/nbdkit); VMDK_SANITIZE_ALL=1 runs every test there;
#   4. build a copy in build-fuzz/ with --enable-fuzzing and run the
#      bounded fuzzing check (make -C fuzz check-fuzz, 5 s per target;
#      counted as one test);
#   5. print the failed tests with the tail of their logs, then a summary
#      counted from the automake test-suite.log files.  The last line is
#      always "N passed, M failed, K skipped"; a build or make step that
#      fails without leaving failures in a log counts as one failure.
#
# Exits 1 if anything failed, else 0.  Works from a fresh git clone and
# can be run again (builds are incremental).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/build.sh
source "$here/build.sh"
srcdir=$vmdk_srcdir
sanitizer_dir=$srcdir/build-sanitizers
cd "$srcdir"

# Failures that no test-suite.log records (build errors and the like),
# and results of steps that are not automake test suites (fuzzing).
extra_failures=()
extra_passes=0
extra_skips=0
# The test-suite.log files of this run, with a label for each.
logs=()
labels=()
logdirs=()
# Scratch files, and a time stamp to tell this run's .trs files apart.
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
stamp=$tmpdir/stamp
start_mark=$tmpdir/start
touch "$start_mark"

# Each step's heading says when it started (seconds into the run), so
# a slow step shows in any log.
step ()
{
  echo
  echo "=== test.sh: $* (at ${SECONDS}s) ==="
}

# remove_logs DIR: delete old test-suite.log files so that a step that
# dies before the test harness runs can never be read as a stale pass.
remove_logs ()
{
  find "$1" -path "$1/build-*" -prune -o -path "$1/.git" -prune -o \
    -name test-suite.log -type f -print0 | xargs -0 rm -f
}

# collect_logs DIR LABEL RC: remember DIR's test-suite.log files.  If
# the make step failed (RC != 0) but no log records a failure, count one
# failure for the step.  If make died before writing any test-suite.log
# (e.g. a test listed in TESTS does not exist), count the results of the
# tests that did run from their .trs files (newer than $stamp) instead.
collect_logs ()
{
  local dir=$1 label=$2 rc=$3 f found_log=0 found_failure=0 n
  while IFS= read -r -d '' f; do
    found_log=1
    logs+=("$f")
    labels+=("$label")
    logdirs+=("$(dirname "$f")")
    n=$(count_field "$f" FAIL)
    n=$((n + $(count_field "$f" XPASS) + $(count_field "$f" ERROR)))
    if [ "$n" -gt 0 ]; then found_failure=1; fi
  done < <(find "$dir" -path "$dir/build-*" -prune -o -path "$dir/.git" \
             -prune -o -name test-suite.log -type f -print0 | sort -z)
  if [ "$found_log" -eq 0 ]; then
    f=$tmpdir/$(echo "$label" | tr -c 'a-zA-Z0-9\n' '_').log
    log_from_trs "$dir" > "$f"
    logs+=("$f")
    labels+=("$label")
    logdirs+=("$dir")
    if [ "$rc" -ne 0 ]; then
      extra_failures+=("$label: make exited with status $rc before writing test-suite.log (see the output above)")
    fi
  elif [ "$rc" -ne 0 ] && [ "$found_failure" -eq 0 ]; then
    extra_failures+=("$label: make exited with status $rc (see the output above)")
  fi
}

# log_from_trs DIR: a stand-in for test-suite.log, made from the .trs
# files under DIR written by this run, in the same format.
log_from_trs ()
{
  local dir=$1 r t name
  declare -A count=([PASS]=0 [SKIP]=0 [XFAIL]=0 [FAIL]=0 [XPASS]=0 [ERROR]=0)
  local sections=()
  while IFS= read -r -d '' t; do
    while IFS= read -r r; do
      if [ -n "${count[$r]+set}" ]; then count[$r]=$((count[$r] + 1)); fi
    done < <(sed -n 's/^:test-result: *\([A-Z]*\).*/\1/p' "$t")
    r=$(sed -n 's/^:global-test-result: *\([A-Z]*\).*/\1/p' "$t" | head -n1)
    case "$r" in
      FAIL|XPASS|ERROR)
        name=${t#"$dir"/}
        sections+=("$r: ${name%.trs}")
        ;;
    esac
  done < <(find "$dir" -path "$dir/build-*" -prune -o -path "$dir/.git" \
             -prune -o -name '*.trs' -type f -newer "$stamp" -print0 | sort -z)
  echo "(no test-suite.log: counted from the .trs files of this run)"
  for r in PASS SKIP XFAIL FAIL XPASS ERROR; do
    echo "# $r: ${count[$r]}"
  done
  for name in "${sections[@]}"; do
    echo
    echo "$name"
    echo "=========="
  done
}

# count_field LOG NAME: the number on the "# NAME: N" line of LOG.
count_field ()
{
  local n
  n=$(sed -n "s/^# $2: *\([0-9][0-9]*\).*/\1/p" "$1" | head -n1)
  echo "${n:-0}"
}

# failed_tests LOG: names of FAIL, XPASS and ERROR tests in LOG, one a
# line.  automake writes a section "RESULT: name" underlined with "="
# for each test that did not pass.
failed_tests ()
{
  awk '
    prev ~ /^(FAIL|XPASS|ERROR): / && /^=+$/ { sub(/^[A-Z]+: /, "", prev); print prev }
    { prev = $0 }
  ' "$1"
}

# Temporary files the tests leave behind in the system's temporary
# directory (nbdkit's socket directories, say) are a failure: every test
# keeps its files in its own scratch directory.
tmp_listing ()
{
  find "${TMPDIR:-/tmp}" -mindepth 1 -maxdepth 1 -name 'nbdkit*' \
       -newer "$start_mark" -printf '%f\n' 2>/dev/null | sort
}

# ---------------------------------------------------------------------
step "installing missing packages"
bash "$here/deps.sh"

# ---------------------------------------------------------------------
step "in-tree build (--enable-werror)"
remove_logs "$srcdir"
touch "$stamp"
build_ok=1
if [ -f Makefile ] && ! vmdk_configured_with "$srcdir" --enable-werror; then
  echo "test.sh: the tree is configured without --enable-werror: reconfiguring"
  ./configure --enable-werror || build_ok=0
fi
if [ "$build_ok" -eq 1 ] && vmdk_build "$srcdir"; then
  step "make -k check"
  rc=0
  make -k -j"$(vmdk_test_jobs)" check || rc=$?
  collect_logs "$srcdir" "make check" "$rc"
else
  extra_failures+=("in-tree build (--enable-werror) failed")
fi

# ---------------------------------------------------------------------
step "sanitizer build in build-sanitizers/ (--enable-sanitizers --enable-werror)"
rc=0
vmdk_mirror "$srcdir" "$sanitizer_dir" || rc=$?
if [ "$rc" -eq 0 ]; then
  remove_logs "$sanitizer_dir"
  touch "$stamp"
  if [ -f "$sanitizer_dir/Makefile" ] &&
     ! vmdk_configured_with "$sanitizer_dir" --enable-sanitizers; then
    rm -f "$sanitizer_dir/Makefile"
  fi
  vmdk_build "$sanitizer_dir" --enable-sanitizers || rc=$?
fi
if [ "$rc" -eq 0 ]; then
  # All the tests: the unit tests are sanitized executables, and every
  # end-to-end test's nbdkit goes through tests/wrappers/nbdkit, which
  # preloads the ASan and UBSan runtimes (the sanitized plugin cannot
  # load otherwise) and works around the exit hang they cause in nbdkit
  # (see LOCPATH there).  The corpus is the one next to the source tree
  # (this copy is one directory deeper).
  target=check-sanitizers
  if [ "${VMDK_SANITIZE_ALL:-0}" = 1 ]; then target=check; fi
  step "make -k $target in build-sanitizers/tests (ASan+UBSan)"
  VMDK_CORPUS=${VMDK_CORPUS:-$srcdir/../shared/corpus} \
    make -k -j"$(vmdk_test_jobs)" -C "$sanitizer_dir/tests" "$target" || rc=$?
  collect_logs "$sanitizer_dir" "make check (sanitizers)" "$rc"
else
  extra_failures+=("sanitizer build in build-sanitizers/ failed")
fi

# ---------------------------------------------------------------------
# A short, bounded fuzzing run: replays every saved regression input,
# then fuzzes each libFuzzer target for 5 s.  Only fuzz/ is built there
# (its rules compile lib/ with clang for the targets).  It needs clang's
# libFuzzer; without it the step is counted as skipped.
step "fuzzing in build-fuzz/ (libFuzzer, bounded run)"
fuzz_dir=$srcdir/build-fuzz
rc=0
vmdk_mirror "$srcdir" "$fuzz_dir" || rc=$?
if [ "$rc" -eq 0 ] &&
   ! { vmdk_configure "$fuzz_dir" --enable-fuzzing &&
       make -C "$fuzz_dir/fuzz" -j"$(vmdk_jobs)"; }; then
  echo "test.sh: cannot build the fuzz targets (clang/libFuzzer?): skipped"
  rc=77
fi
if [ "$rc" -eq 0 ]; then
  make -C "$fuzz_dir/fuzz" check-fuzz FUZZ_CHECK_SECONDS=5 || rc=$?
fi
case "$rc" in
  0) extra_passes=$((extra_passes + 1)) ;;
  77) extra_skips=$((extra_skips + 1)) ;;
  *) extra_failures+=("fuzzing (make -C build-fuzz/fuzz check-fuzz) failed") ;;
esac

# ---------------------------------------------------------------------
leftovers=$(tmp_listing)
if [ -n "$leftovers" ]; then
  extra_failures+=("the tests left $(echo "$leftovers" | wc -l) nbdkit* entries in ${TMPDIR:-/tmp}: $(echo "$leftovers" | head -n 5 | tr '\n' ' ')")
fi

# ---------------------------------------------------------------------
step "results"
passed=0 failed=0 skipped=0
failed_names=()
for i in "${!logs[@]}"; do
  log=${logs[$i]}
  p=$(count_field "$log" PASS)
  xf=$(count_field "$log" XFAIL)
  s=$(count_field "$log" SKIP)
  f=$(count_field "$log" FAIL)
  xp=$(count_field "$log" XPASS)
  e=$(count_field "$log" ERROR)
  passed=$((passed + p + xf))
  skipped=$((skipped + s))
  failed=$((failed + f + xp + e))
  case "$log" in
    "$tmpdir"/*) where="no test-suite.log, counted from .trs files" ;;
    *) where=${log#"$srcdir"/} ;;
  esac
  printf '%s: %s: PASS %s, XFAIL %s, SKIP %s, FAIL %s, XPASS %s, ERROR %s\n' \
    "${labels[$i]}" "$where" "$p" "$xf" "$s" "$f" "$xp" "$e"
done

# The failed tests, each with the tail of its own log.
for i in "${!logs[@]}"; do
  log=${logs[$i]}
  dir=${logdirs[$i]}
  while IFS= read -r name; do
    [ -n "$name" ] || continue
    failed_names+=("${labels[$i]}: $name")
    echo
    echo "--- FAILED: ${labels[$i]}: $name ---"
    for l in "$dir/$name.log" "$dir/${name%.*}.log"; do
      if [ -f "$l" ]; then
        echo "(last 30 lines of ${l#"$srcdir"/})"
        tail -n 30 "$l"
        break
      fi
    done
  done < <(failed_tests "$log")
done
for x in "${extra_failures[@]}"; do
  failed=$((failed + 1))
  failed_names+=("$x")
done
passed=$((passed + extra_passes))
skipped=$((skipped + extra_skips))

if [ "${#failed_names[@]}" -gt 0 ]; then
  echo
  echo "Failed:"
  for x in "${failed_names[@]}"; do
    echo "  $x"
  done
fi
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$failed" -gt 0 ]; then
  exit 1
fi
exit 0
