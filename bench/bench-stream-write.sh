#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Benchmark making a streamOptimized image from a raw disk:
#
#   bench/bench-stream-write.sh [--size=SIZE] [--repeat=N] [--level=N] [--keep]
#
# Not a test.  In one run, from the same raw file of moderately
# compressible data (see compressible_bytes in bench/common.sh), warm in
# the page cache:
#
#   vmdk  nbdkit -U SOCK ./vmdk.so file=OUT.vmdk create=true
#           create-type=stream-optimized create-size=SIZE, filled by
#           "nbdcopy RAW $uri"; the time includes the server's start
#           and its stop, which writes the metadata tail and syncs
#   qemu  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized
#
# and reports both throughputs (MB/s of the raw disk), their ratio
# (target: vmdk at least 3x qemu-img), the output sizes (target: vmdk's
# no larger than 1.05x qemu-img's) and the server's peak RSS (target:
# under 256 MiB).  tests/check-stream checks the plugin's output when
# it has been built.  "sync" runs before each conversion (not timed), so
# that neither pays for the writeback of the other's output or of the
# raw file.  Each time ends when the output is on stable storage, as in
# bench-tool.sh: the plugin syncs its output when it stops; qemu-img
# convert (cache mode "unsafe") leaves it in the page cache, so
# "sync OUT" is timed after it.
#
# Options:
#   --size=SIZE    the raw disk (default 2G; K, M, G suffixes)
#   --repeat=N     rounds, alternating which goes first; medians (default 3)
#   --level=N      create-compression-level (default: the plugin's)
#   --plugin=PATH  the plugin (default: vmdk.so at the top of the tree)
#   --keep         keep the scratch directory
#
# The scratch directory is made under $BENCH_DIR (default /var/tmp); it
# needs about 2.5 x SIZE of free space.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)
# shellcheck source=bench/common.sh
source "$here/common.sh"

size=2G
repeat=3
level=
plugin=${VMDK_PLUGIN:-$srcdir/vmdk.so}
keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --size=*) size=${1#--size=} ;;
    --repeat=*) repeat=${1#--repeat=} ;;
    --level=*) level=${1#--level=} ;;
    --plugin=*) plugin=${1#--plugin=} ;;
    --keep) keep=true ;;
    *) echo "bench-stream-write.sh: unknown argument $1" >&2; usage 1 ;;
  esac
  shift
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat: $repeat is not a positive number"
bytes=$(to_bytes "$size")
[[ $bytes =~ ^[0-9]+$ ]] && (( bytes >= 64 << 20 && bytes % 512 == 0 )) ||
  die "--size: $size is not a size of at least 64M, a multiple of 512"
for t in qemu-img nbdkit nbdcopy nbdinfo python3; do
  command -v "$t" >/dev/null || die "$t is needed"
done
[ -e "$plugin" ] || die "$plugin does not exist: build first (make -j2)"

scratch=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nbdkit-vmdk-bench-sw.XXXXXX")
server_pid=
cleanup ()
{
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || :; fi
  if $keep; then echo "kept $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT
cp -L "$plugin" "$scratch/vmdk.so"
sock=$scratch/sock
raw=$scratch/disk.raw

say () { printf '%s\n' "$*" >&2; }
now () { date +%s.%N; }
mbs () { awk -v b="$bytes" -v a="$1" -v z="$2" 'BEGIN { printf "%.1f", b / 1e6 / (z - a) }'; }

# The plugin: a daemon (so that its peak RSS can be read before it
# stops), nbdcopy filling it, then a clean stop.  Prints "MB/s RSS-KiB".
run_vmdk ()
{
  local out=$1 t0 t1 rss i
  rm -f "$out" "$sock" "$scratch/pid"
  sync
  t0=$(now)
  nbdkit -U "$sock" -P "$scratch/pid" "$scratch/vmdk.so" file="$out" \
    create=true create-type=stream-optimized create-size="$bytes" \
    ${level:+create-compression-level=$level} ||
    die "nbdkit did not start"
  for ((i = 0; i < 600; i++)); do
    [ -S "$sock" ] && [ -s "$scratch/pid" ] && break
    sleep 0.05
  done
  server_pid=$(cat "$scratch/pid")
  nbdcopy "$raw" "nbd+unix:///?socket=$sock" || die "nbdcopy failed"
  rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status")
  kill -TERM "$server_pid"
  while kill -0 "$server_pid" 2>/dev/null; do sleep 0.05; done
  server_pid=
  t1=$(now)
  echo "$(mbs "$t0" "$t1") $rss"
}

run_qemu ()
{
  local out=$1 t0 t1
  rm -f "$out"
  sync
  t0=$(now)
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw" "$out"
  sync "$out"
  t1=$(now)
  mbs "$t0" "$t1"
}

median ()
{
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

say "== streamOptimized writing: nbdkit-vmdk vs qemu-img convert"
say "plugin:   $plugin"
say "versions: $(nbdkit --version | head -1), $(qemu-img --version | head -1)"
say "machine:  $(nproc) CPUs, load before: $(uptime | sed 's/.*load average: //')"
say "-- making $size of moderately compressible data"
compressible_bytes "$bytes" > "$raw"
cat "$raw" > /dev/null

v=() q=() ratios=() rss=()
for ((r = 1; r <= repeat; r++)); do
  if ((r % 2)); then
    read -r mv kib <<<"$(run_vmdk "$scratch/out.vmdk")"
    mq=$(run_qemu "$scratch/qemu.vmdk")
  else
    mq=$(run_qemu "$scratch/qemu.vmdk")
    read -r mv kib <<<"$(run_vmdk "$scratch/out.vmdk")"
  fi
  v+=("$mv") q+=("$mq") rss+=("$kib")
  ratios+=("$(awk -v a="$mv" -v b="$mq" 'BEGIN { print a / b }')")
  say "   round $r: vmdk $mv MB/s (peak RSS $((kib / 1024)) MiB), qemu-img $mq MB/s"
done

sv=$(stat -c %s "$scratch/out.vmdk")
sq=$(stat -c %s "$scratch/qemu.vmdk")
checked="tests/check-stream not built"
if [ -x "$srcdir/tests/check-stream" ]; then
  checked=$("$srcdir/tests/check-stream" -o "$scratch/out.vmdk" 2>&1) ||
    die "check-stream rejects the output: $checked"
fi
ratio=$(median "${ratios[@]}")
size_ratio=$(awk -v a="$sv" -v b="$sq" 'BEGIN { printf "%.3f", a / b }')
peak=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
echo
echo "Results ($repeat rounds, medians; load after: $(uptime | sed 's/.*load average: //'))"
printf '%-30s %12s %12s %8s %s\n' "" vmdk qemu-img ratio target
printf '%-30s %12s %12s %7.2fx %s\n' "throughput (MB/s of raw)" \
  "$(median "${v[@]}")" "$(median "${q[@]}")" "$ratio" ">= 3x"
printf '%-30s %12s %12s %7sx %s\n' "output size (bytes)" "$sv" "$sq" \
  "$size_ratio" "<= 1.05x"
printf '%-30s %12s %12s %8s %s\n' "server peak RSS (MiB)" "$((peak / 1024))" \
  - - "< 256"
echo "check-stream -o: $checked"
