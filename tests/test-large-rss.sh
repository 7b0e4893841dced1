#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Big disks, small server: a 2 TiB monolithicSparse (65536 grain
# tables in one file) and a 2 TiB twoGbMaxExtentSparse (1024 extent
# files, so 1025 open files) each
#   - open in a few seconds (printed; only > 60 s fails),
#   - give the exact expected map for data written with qemu-io at the
#     start, across the first 2 GiB extent boundary, in the middle and
#     at the very end,
#   - survive a copy of the whole disk with extents (which visits every
#     grain table) and random reads all over the disk, with the data
#     checked,
# and the daemon's peak RSS (VmHWM), read before it is killed, stays
# under 96 MiB: grain tables (128 MiB of them here) must be cached
# within the budget, not all held in memory (not checked under ASan,
# whose shadow memory and quarantine count in the RSS).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img qemu-io
requires qemu-img --version
requires test -r /proc/self/status
# Peak RSS means nothing under valgrind (its own memory is counted).
if [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then
    echo "$0: SKIP: RSS is not measurable under valgrind"
    exit 77
fi
# Under ASan the RSS includes shadow memory, redzones and the quarantine
# of freed blocks, so the budget is not checked (only printed); the rest
# (opening, maps, whole copy, random reads) runs as usual.
check_rss=yes
if [ "${SANITIZERS:-no}" = yes ]; then
    check_rss=no
fi

make_scratch big
requires_free_space "$scratch" 2048
cd "$scratch"
plugin="$VMDK_PLUGIN"

G=$(( 1024 * 1024 * 1024 ))
T=$(( 1024 * G ))
size=$(( 2 * T ))
grain=65536
max_rss_kib=$(( 96 * 1024 ))
max_open_s=60

# The writes: OFFSET LENGTH BYTE.
writes="0 $grain 17
        $(( 2 * G - 4096 )) 8192 68
        $(( T + 12345 * 512 )) 102400 34
        $(( size - grain )) $grain 51"

# The map they give, in 64 KiB grains.
cat > expected.map <<EOF
0 $grain 0
$grain $(( 2 * G - 2 * grain )) 3
$(( 2 * G - grain )) $(( 2 * grain )) 0
$(( 2 * G + grain )) $(( T + 96 * grain - 2 * G - grain )) 3
$(( T + 96 * grain )) $(( 3 * grain )) 0
$(( T + 99 * grain )) $(( size - grain - T - 99 * grain )) 3
$(( size - grain )) $grain 0
EOF

# qemu-io commands: check the written data, the zeroes just around it,
# then random reads (fixed seed) all over the disk, checked for zeroes
# where nothing was written.
{
    while read -r off len byte; do
        echo "-c"; echo "read -P $byte $off $len"
    done <<<"$writes"
    echo "-c"; echo "read -P 0 $grain 4096"
    echo "-c"; echo "read -P 0 $(( 2 * G - 8192 )) 4096"
    echo "-c"; echo "read -P 0 $(( T + 12345 * 512 - 512 )) 512"
    echo "-c"; echo "read -P 0 $(( T + 12345 * 512 + 102400 )) 512"
    echo "-c"; echo "read -P 0 $(( size - grain - 512 )) 512"
    awk -v size="$size" -v w="$writes" 'BEGIN {
        srand(12345)
        n = split(w, f, /[ \t\n]+/)
        for (i = 0; i < 300; i++) {
            off = int(rand() * (size - 65536))
            len = 1 + int(rand() * 65536)
            p = 0
            for (j = 1; j + 2 <= n; j += 3)
                if (f[j] != "" && off < f[j] + f[j + 1] + 0 && f[j] + 0 < off + len)
                    p = -1
            if (p == 0) printf "-c\nread -P 0 %.0f %d\n", off, len
            else printf "-c\nread %.0f %d\n", off, len
        }
    }'
} > reads.cmds
mapfile -t qemu_io_args < reads.cmds

for sf in monolithicSparse twoGbMaxExtentSparse; do
    mkdir "$sf"
    qemu-img create -q -f vmdk -o subformat="$sf" "$sf/disk.vmdk" 2T
    while read -r off len byte; do
        qemu-io -f vmdk -c "write -P $byte $off $len" "$sf/disk.vmdk" >/dev/null
    done <<<"$writes"
    ls "$sf" | wc -l
    du -sh "$sf"

    start=$(date +%s.%N)
    start_nbdkit -P "$sf.pid" -U "$sf.sock" "$plugin" "$sf/disk.vmdk"
    end=$(date +%s.%N)
    open_s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    echo "$0: $sf: 2 TiB opened in $open_s s"
    awk -v t="$open_s" -v m="$max_open_s" 'BEGIN { exit !(t <= m) }'
    uri="nbd+unix:///?socket=$scratch/$sf.sock"

    test "$(nbdinfo --size "$uri")" -eq "$size"

    # The whole map.
    nbdinfo --map "$uri" | normalize_map > "$sf.map"
    diff -u expected.map "$sf.map"

    # A whole copy with extents: block status over every grain table,
    # then reads of the data grains.
    time nbdcopy "$uri" null:

    # Random reads everywhere, and the data.
    qemu-io -r -f raw "$uri" "${qemu_io_args[@]}" > "$sf.reads"
    not grep -i 'fail' "$sf.reads"
    test "$(grep -c '^read ' "$sf.reads")" -eq 309

    rss=$(nbdkit_peak_rss_kib "$sf.pid")
    echo "$0: $sf: nbdkit peak RSS (VmHWM) $rss KiB"
    if [ "$check_rss" = yes ]; then
        test "$rss" -lt "$max_rss_kib"
    else
        echo "$0: $sf: RSS budget not checked under sanitizers"
    fi

    kill_nbdkit "$sf.pid"
    rm -rf "$sf"
done
