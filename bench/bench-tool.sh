#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Benchmark "vmdk convert" against "qemu-img convert":
#
#   bench/bench-tool.sh [--size=SIZE] [--repeat=N] [--tool=PATH] [--keep]
#
# Not a test.  On SIZE (default 2G) of the benchmark's moderately
# compressible data (bench/common.sh), in one run, each conversion by
# both tools back to back (the order alternating from one round to the
# next), timed wall-clock:
#
#   raw -> stream   vmdk convert -t stream-optimized SRC DST.vmdk
#                   qemu-img convert -O vmdk -o subformat=streamOptimized
#   raw -> sparse   vmdk convert SRC DST.vmdk
#                   qemu-img convert -O vmdk            (monolithicSparse)
#   stream -> raw   vmdk convert STREAM DST.raw
#                   qemu-img convert -O raw
#
# STREAM is qemu-img's streamOptimized copy of SRC.  Every output is
# compared with SRC (qemu-img compare) once.  The inputs are read once
# (cat > /dev/null) before each conversion, and "sync" runs between
# conversions (not timed), so that neither tool pays for the other's
# dirty pages.  Each time ends when the output is on stable storage
# ("sync OUT", fsync, is timed after each command): vmdk convert
# flushes its output before it exits, qemu-img convert (cache mode
# "unsafe" by default) leaves it in the page cache, and a conversion is
# only done when the disk can be used after a power cut.
#
# Options:
#   --size=SIZE    the size of the source (K, M, G, T suffixes)
#   --repeat=N     rounds; medians are reported (default 3)
#   --tool=PATH    the vmdk command (default tool/vmdk of the tree); it
#                  is copied first, so a rebuild during the run changes
#                  nothing
#   --keep         keep the scratch directory ($BENCH_DIR, default
#                  /var/tmp; it needs about 4 x SIZE of free space)

set -euo pipefail

# usage, die, compressible_bytes, to_bytes, median.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

say ()
{
  printf '%s\n' "$*" >&2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

size=2G
repeat=3
tool=$here/../tool/vmdk
keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --size=*) size=${1#--size=} ;;
    --repeat=*) repeat=${1#--repeat=} ;;
    --tool=*) tool=${1#--tool=} ;;
    --keep) keep=true ;;
    *) echo "bench-tool.sh: unknown argument $1" >&2; usage 1 ;;
  esac
  shift
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat: $repeat is not a positive number"
size_bytes=$(to_bytes "$size")
[ -x "$tool" ] || die "$tool: not built (make -j2)"
for c in qemu-img python3 bc; do
  command -v "$c" >/dev/null || die "$c is needed"
done

scratch=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vmdk-bench-tool.XXXXXX")
if ! $keep; then
  trap 'rm -rf "$scratch"' EXIT
fi
cp "$tool" "$scratch/vmdk"
vmdk=$scratch/vmdk
cd "$scratch"

say "== vmdk convert against qemu-img convert"
say "versions: $(qemu-img --version | head -1), vmdk $("$vmdk" --version)"
say "machine:  $(nproc) CPUs, load before: $(uptime | sed 's/.*load average: //')"
say "size:     $size of moderately compressible data, $repeat round(s)"
compressible_bytes "$size_bytes" > src.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw \
  stream.vmdk
say "   stream.vmdk (qemu-img) $(( $(stat -c %s stream.vmdk) >> 20 )) MiB"

# Each test: name, input, output, the vmdk command, the qemu-img command.
tests=(stream sparse raw)
declare -A title input output vmdk_args qemu_args target
title[stream]="raw -> streamOptimized"
input[stream]=src.raw output[stream]=out.vmdk target[stream]=3
vmdk_args[stream]="convert -t stream-optimized src.raw out.vmdk"
qemu_args[stream]="convert -f raw -O vmdk -o subformat=streamOptimized src.raw out.vmdk"
title[sparse]="raw -> monolithicSparse"
input[sparse]=src.raw output[sparse]=out.vmdk target[sparse]=1
vmdk_args[sparse]="convert src.raw out.vmdk"
qemu_args[sparse]="convert -f raw -O vmdk src.raw out.vmdk"
title[raw]="streamOptimized -> raw"
input[raw]=stream.vmdk output[raw]=out.raw target[raw]=2
vmdk_args[raw]="convert stream.vmdk out.raw"
qemu_args[raw]="convert -f vmdk -O raw stream.vmdk out.raw"

declare -A seconds
# run TEST TOOL ROUND: time one conversion, check its output once.
run ()
{
  local t=$1 who=$2 round=$3 start end args
  rm -f "${output[$t]}"
  sync
  cat "${input[$t]}" > /dev/null
  if [ "$who" = vmdk ]; then args=${vmdk_args[$t]}; cmd=$vmdk
  else args=${qemu_args[$t]}; cmd=qemu-img; fi
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # the arguments are words
  "$cmd" $args
  sync "${output[$t]}"
  end=$(date +%s.%N)
  seconds[$t,$who,$round]=$(echo "$end - $start" | bc)
  if [ "$round" -eq 1 ]; then
    qemu-img compare -q -F raw "${output[$t]}" src.raw ||
      die "$who: ${title[$t]}: the output differs from the source"
  fi
  say "   round $round ${title[$t]} $who: ${seconds[$t,$who,$round]} s"
  rm -f "${output[$t]}"
}

for ((r = 1; r <= repeat; r++)); do
  for t in "${tests[@]}"; do
    if ((r % 2)); then run "$t" vmdk "$r"; run "$t" qemu "$r"
    else run "$t" qemu "$r"; run "$t" vmdk "$r"; fi
  done
done
say "load after: $(uptime | sed 's/.*load average: //')"

echo
echo "Results ($repeat round(s); median seconds; the ratio is the median of"
echo "the per-round ratios qemu-img / vmdk: above 1, vmdk is faster)"
echo
printf '%-26s %10s %10s %8s  %-8s %s\n' test vmdk qemu-img ratio target met
missed=0
for t in "${tests[@]}"; do
  vs=() qs=() rs=()
  for ((r = 1; r <= repeat; r++)); do
    vs+=("${seconds[$t,vmdk,$r]}")
    qs+=("${seconds[$t,qemu,$r]}")
    rs+=("$(echo "${seconds[$t,qemu,$r]} / ${seconds[$t,vmdk,$r]}" | bc -l)")
  done
  ratio=$(median "${rs[@]}")
  met=$(awk -v g="$ratio" -v w="${target[$t]}" 'BEGIN { print (g >= w ? "yes" : "NO") }')
  [ "$met" = yes ] || missed=$((missed + 1))
  printf '%-26s %9.2fs %9.2fs %7.2fx  >= %-5s %s\n' "${title[$t]}" \
    "$(median "${vs[@]}")" "$(median "${qs[@]}")" "$ratio" "${target[$t]}x" \
    "$met"
done
echo
if ((missed == 0)); then
  echo "All targets met."
else
  echo "$missed target(s) missed."
fi
