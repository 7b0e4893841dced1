#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Benchmark the filter where round trips cost: a streamOptimized image
# behind a server that delays every read, read in full by the filter
# and by qemu-img, in the same run:
#
#   bench/bench-filter.sh [--size=SIZE] [--delay=TIME] [--repeat=N] [OPTIONS]
#
#   lower   nbdkit -r -U LOWER --filter=stats --filter=delay file
#                  file=IMAGE.vmdk statsfile=... delay-read=TIME
#                  (a fresh one per measurement, same socket)
#   filter  nbdkit -r -U TOP nbd socket=LOWER --filter=vmdk, read with
#           nbdcopy nbd+unix:///?socket=TOP OUT.raw
#   qemu    qemu-img convert -f vmdk 'nbd+unix:///?socket=LOWER' -O raw OUT.raw
#
# Both outputs are compared with the raw source afterwards (not timed).
# It prints both throughputs (MB/s, 10^6 bytes), their ratio (target:
# filter >= 5x qemu-img) and how many read requests the lower server
# received per MiB of virtual disk served (from --filter=stats).
#
# Options:
#   --size=SIZE      virtual size of the image (default 2G)
#   --delay=TIME     delay of each read in the lower server (default 2ms)
#   --repeat=N       measure N times, both clients each time (default 1)
#   --filter=PATH    the filter to measure (default: vmdk-filter.so at
#                    the top of the tree; copied first)
#   --keep           keep the scratch directory
#
# The scratch directory is made under $BENCH_DIR (default /var/tmp); it
# needs about 3.5 x SIZE of free space.

set -euo pipefail

# usage, die, random_bytes, compressible_bytes.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
size=2G
delay=2ms
repeat=1
filter="$top/vmdk-filter.so"
keep=no
for arg in "$@"; do
  case "$arg" in
    --size=*) size=${arg#*=} ;;
    --delay=*) delay=${arg#*=} ;;
    --repeat=*) repeat=${arg#*=} ;;
    --filter=*) filter=${arg#*=} ;;
    --keep) keep=yes ;;
    --help|-h) usage 0 ;;
    *) usage 1 >&2 ;;
  esac
done
[ -f "$filter" ] || die "$filter not found: build first (make -j2)"
for t in qemu-img nbdkit nbdcopy nbdinfo python3 awk cmp; do
  command -v "$t" >/dev/null || die "$t is needed"
done
nbdkit --filter=delay --filter=stats null --dump-plugin >/dev/null 2>&1 ||
  die "nbdkit's delay and stats filters are needed"


size_bytes=$(numfmt --from=iec "$size")
scratch=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vmdk-bench-filter.XXXXXX")
cleanup ()
{
  local p
  for p in "$scratch"/*.pid; do
    [ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null || :
  done
  if [ "$keep" = yes ]; then
    echo "kept $scratch" >&2
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
cp "$filter" "$scratch/vmdk-filter.so"

say () { echo "$*" >&2; }

say "-- making a $size streamOptimized image of moderately compressible data"
compressible_bytes "$size_bytes" > "$scratch/disk.raw"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized \
  "$scratch/disk.raw" "$scratch/disk.vmdk"
say "   disk.vmdk: $(( $(stat -c %s "$scratch/disk.vmdk") / 1048576 )) MiB"

# wait_socket PIDFILE SOCKET: a daemonized nbdkit is serving.
wait_socket ()
{
  local i
  for (( i = 0; i < 300; i++ )); do
    if [ -s "$1" ] && [ -S "$2" ]; then return 0; fi
    sleep 0.1
  done
  die "nbdkit did not start ($1)"
}

# stop PIDFILE: SIGTERM, and wait until it has exited.
stop ()
{
  local pid
  pid=$(cat "$1")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$1"
}

lower_sock="$scratch/lower.sock"
top_sock="$scratch/top.sock"

start_lower ()
{
  rm -f "$scratch/stats.txt" "$lower_sock"
  nbdkit -r -P "$scratch/lower.pid" -U "$lower_sock" \
    --filter=stats --filter=delay file file="$scratch/disk.vmdk" \
    statsfile="$scratch/stats.txt" delay-read="$delay"
  wait_socket "$scratch/lower.pid" "$lower_sock"
}

# stop_lower: the number of reads the lower server received.
stop_lower ()
{
  stop "$scratch/lower.pid"
  awk '/^read:/ { print $2 }' "$scratch/stats.txt"
}

# time_it CMD...: run CMD, print its wall time in seconds.
time_it ()
{
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >&2
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

measure_filter ()
{
  start_lower
  rm -f "$top_sock"
  nbdkit -r -P "$scratch/top.pid" -U "$top_sock" \
    nbd socket="$lower_sock" --filter="$scratch/vmdk-filter.so"
  wait_socket "$scratch/top.pid" "$top_sock"
  rm -f "$scratch/out.raw"
  secs=$(time_it nbdcopy "nbd+unix:///?socket=$top_sock" "$scratch/out.raw")
  stop "$scratch/top.pid"
  reads=$(stop_lower)
  cmp "$scratch/disk.raw" "$scratch/out.raw" || die "the filter read wrong data"
  rm -f "$scratch/out.raw"
}

measure_qemu ()
{
  start_lower
  rm -f "$scratch/out.raw"
  secs=$(time_it qemu-img convert -f vmdk "nbd+unix:///?socket=$lower_sock" \
           -O raw "$scratch/out.raw")
  reads=$(stop_lower)
  cmp "$scratch/disk.raw" "$scratch/out.raw" || die "qemu-img read wrong data"
  rm -f "$scratch/out.raw"
}

mib=$(awk -v b="$size_bytes" 'BEGIN { print b / 1048576 }')
mbps () { awk -v b="$size_bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
per_mib () { awk -v n="$1" -v m="$mib" 'BEGIN { printf "%.2f", n / m }'; }

say "-- each read of the lower server is delayed by $delay"
printf '%-7s %-8s %10s %10s %12s %12s %8s\n' \
  round client seconds MB/s lower-reads reads/MiB ratio
for (( r = 1; r <= repeat; r++ )); do
  say "-- round $r of $repeat (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  # Alternate which client goes first.
  if (( r % 2 )); then order=(filter qemu); else order=(qemu filter); fi
  for c in "${order[@]}"; do
    "measure_$c"
    declare "secs_$c=$secs" "reads_$c=$reads"
  done
  for c in filter qemu; do
    s_var="secs_$c"; n_var="reads_$c"
    ratio=-
    if [ "$c" = filter ]; then
      ratio=$(awk -v q="$secs_qemu" -v f="$secs_filter" \
                'BEGIN { printf "%.2fx", q / f }')
    fi
    printf '%-7s %-8s %10s %10s %12s %12s %8s\n' "$r" "$c" "${!s_var}" \
      "$(mbps "${!s_var}")" "${!n_var}" "$(per_mib "${!n_var}")" "$ratio"
  done
done
say "-- target: the filter >= 5x qemu-img's throughput"
