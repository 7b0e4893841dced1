#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The one command that sets everything up and runs the whole test suite:
#
#   1. install missing Debian packages (scripts/deps.sh);
#   2. build in the source tree with --enable-werror and run make -k check;
#   3. build a copy of the sources in build-sanitizers/ with
#      --enable-sanitizers --enable-werror (ASan + UBSan) and run the
#      lib/ unit tests there (make -C tests check-unit);
#   4. print the failed tests with the tail of their logs, then a summary
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

# Failures that no test-suite.log records (build errors and the like).
extra_failures=()
# The test-suite.log files of this run, with a label for each.
logs=()
labels=()

step ()
{
  echo
  echo "=== test.sh: $* ==="
}

# remove_logs DIR: delete old test-suite.log files so that a step that
# dies before the test harness runs can never be read as a stale pass.
remove_logs ()
{
  find "$1" -path "$1/build-*" -prune -o -path "$1/.git" -prune -o \
    -name test-suite.log -type f -print0 | xargs -0 rm -f
}

# collect_logs DIR LABEL RC: remember DIR's test-suite.log files; if the
# make step failed (RC != 0) but no log records a failure, count one.
collect_logs ()
{
  local dir=$1 label=$2 rc=$3 f found_failure=0 n
  while IFS= read -r -d '' f; do
    logs+=("$f")
    labels+=("$label")
    n=$(count_field "$f" FAIL)
    n=$((n + $(count_field "$f" XPASS) + $(count_field "$f" ERROR)))
    if [ "$n" -gt 0 ]; then found_failure=1; fi
  done < <(find "$dir" -path "$dir/build-*" -prune -o -path "$dir/.git" \
             -prune -o -name test-suite.log -type f -print0 | sort -z)
  if [ "$rc" -ne 0 ] && [ "$found_failure" -eq 0 ]; then
    extra_failures+=("$label: make exited with status $rc (see the output above)")
  fi
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

# ---------------------------------------------------------------------
step "installing missing packages"
bash "$here/deps.sh"

# ---------------------------------------------------------------------
step "in-tree build (--enable-werror)"
remove_logs "$srcdir"
build_ok=1
if [ -f Makefile ] && ! vmdk_configured_with "$srcdir" --enable-werror; then
  echo "test.sh: the tree is configured without --enable-werror: reconfiguring"
  ./configure --enable-werror || build_ok=0
fi
if [ "$build_ok" -eq 1 ] && vmdk_build "$srcdir"; then
  step "make -k check"
  rc=0
  make -k -j"$(vmdk_jobs)" check || rc=$?
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
  if [ -f "$sanitizer_dir/Makefile" ] &&
     ! vmdk_configured_with "$sanitizer_dir" --enable-sanitizers; then
    rm -f "$sanitizer_dir/Makefile"
  fi
  vmdk_build "$sanitizer_dir" --enable-sanitizers || rc=$?
fi
if [ "$rc" -eq 0 ]; then
  step "make -C build-sanitizers/tests check-unit"
  make -k -j"$(vmdk_jobs)" -C "$sanitizer_dir/tests" check-unit || rc=$?
  collect_logs "$sanitizer_dir" "unit tests (sanitizers)" "$rc"
else
  extra_failures+=("sanitizer build in build-sanitizers/ failed")
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
  printf '%s: %s: PASS %s, XFAIL %s, SKIP %s, FAIL %s, XPASS %s, ERROR %s\n' \
    "${labels[$i]}" "${log#"$srcdir"/}" "$p" "$xf" "$s" "$f" "$xp" "$e"
done

# The failed tests, each with the tail of its own log.
for i in "${!logs[@]}"; do
  log=${logs[$i]}
  dir=$(dirname "$log")
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
