#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Time "vmdk check" on fully allocated monolithicSparse images (issue
# 12: a 2 GiB one in under 1 s, a 2 TiB one in under 10 s with a peak
# RSS under 256 MiB):
#
#   bench/bench-check.sh [--repeat=N] [--keep] [--vmdk=PATH]
#
# Not a test.  Images, made in a scratch directory under $BENCH_DIR
# (default /var/tmp) and removed at the end:
#
#   2G-qemu   qemu-img convert of 2 GiB of non-zero data (every grain
#             allocated, real data: 2 GiB on disk)
#   2G        make-allocated.py: the same layout, every grain allocated,
#             grain data left a hole of the host file (check reads
#             metadata only, so it cannot tell)
#   2T        make-allocated.py, 2 TiB: every grain a 32-bit sector
#             number can reach (the last 4112 cannot: the metadata
#             takes their room); 257 MiB of metadata on disk
#
# Each is checked once to warm the page cache, then N times (default
# 3); the median wall time and the largest peak RSS (GNU time) are
# printed, with qemu-img check's time on the same image for scale
# (it only looks for entries past the end of the file).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)
vmdk=$srcdir/tool/vmdk
repeat=3
keep=false

for arg in "$@"; do
  case $arg in
    --repeat=*) repeat=${arg#*=} ;;
    --keep) keep=true ;;
    --vmdk=*) vmdk=${arg#*=} ;;
    *) echo "usage: $0 [--repeat=N] [--keep] [--vmdk=PATH]" >&2; exit 1 ;;
  esac
done
for c in qemu-img python3 /usr/bin/time; do
  command -v "$c" > /dev/null || { echo "bench-check.sh: needs $c" >&2; exit 1; }
done
[ -x "$vmdk" ] || { echo "bench-check.sh: $vmdk not built" >&2; exit 1; }

scratch=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-check.XXXXXX")
$keep || trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

echo "bench-check.sh: making the images in $scratch" >&2
head -c 2G < <(yes 'nbdkit-vmdk bench-check') > 2G.raw
qemu-img convert -f raw -O vmdk 2G.raw 2G-qemu.vmdk
rm 2G.raw
python3 "$here/make-allocated.py" 2G.vmdk 2
python3 "$here/make-allocated.py" 2T.vmdk 2048

# run CMD...: "SECONDS KIB" of one run (GNU time), the command's
# status is ignored but for 0-3.
run ()
{
  /usr/bin/time -f '%e %M' -o time.out "$@" > /dev/null 2>&1 || true
  cat time.out
}

# median: of the numbers on stdin.
median ()
{
  sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

printf '%-8s %13s %13s %17s  %-19s %s\n' image "vmdk check s" \
  "peak RSS MiB" "qemu-img check s" target grains
for img in 2G-qemu 2G 2T; do
  "$vmdk" check "$img.vmdk" > /dev/null
  grains=$("$vmdk" check --json "$img.vmdk" |
             sed -n 's/.*"allocated-grains": \([0-9]*\).*/\1/p')
  : > times; : > rss; : > qtimes
  for (( i = 0; i < repeat; i++ )); do
    read -r s k < <(run "$vmdk" check "$img.vmdk")
    echo "$s" >> times
    echo "$k" >> rss
    read -r s k < <(run qemu-img check "$img.vmdk")
    echo "$s" >> qtimes
  done
  case $img in
    2T) target="< 10 s, < 256 MiB" ;;
    *) target="< 1 s" ;;
  esac
  printf '%-8s %13s %13s %17s  %-19s %s\n' "$img" \
    "$(median < times)" "$(( $(sort -n rss | tail -n1) / 1024 ))" \
    "$(median < qtimes)" "$target" "$grains"
done
