#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Data equivalence for every subformat qemu-img writes: the bytes the
# plugin serves equal the raw source, read with extents, without extents
# (--no-extents), without structured replies (--no-sr, so .extents is
# never called) and checked in place by --filter=checkwrite.  Sizes: a
# tiny one (less than one grain table), an odd one that is not a
# multiple of the 64 KiB grain, and one over 4 GiB so that the twoGb*
# subformats split into 3 extent files, with data across the 2 GiB
# boundaries and up to the last byte.  Reading leaves the image files
# untouched (the plugin opens them read-write unless readonly=true).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img jq fallocate
requires qemu-img --version
requires_filter checkwrite

make_scratch big
requires_free_space "$scratch" 1024
cd "$scratch"

plugin="$VMDK_PLUGIN"
subformats="monolithicSparse monolithicFlat twoGbMaxExtentSparse
            twoGbMaxExtentFlat streamOptimized"
sizes="$((1024 * 1024 + 512))
       $((100 * 1024 * 1024 + 12345 * 512))
       $((5 * 1024 * 1024 * 1024 + 12345 * 512))"
smallest=$((1024 * 1024 + 512))

start_time=$SECONDS

# read_without_extents VMDK SIZE [NBDKIT-OPTION]: nbdcopy --no-extents
# of the disk, or of the 64 MiB windows around its start, its 2 GiB
# boundaries and its end (where make_reference puts data) when it is
# over 1 GiB, each compared with ref.raw.  With --no-sr the server
# offers no block status at all, so .extents is never called.
read_without_extents ()
{
    local vmdk=$1 size=$2 opt=${3:-} w=$((64 * 1024 * 1024)) b off len win
    local -a windows=()
    if [ "$size" -le $((1024 * 1024 * 1024)) ]; then
        windows=("0 $size")
    else
        windows=("0 $w" "$((size - w)) $w")
        for (( b = 2147483648; b < size; b += 2147483648 )); do
            windows+=("$((b - w / 2)) $w")
        done
    fi
    for win in "${windows[@]}"; do
        read -r off len <<< "$win"
        rm -f out.raw
        nbdkit ${opt:+"$opt"} -U - --filter=offset "$plugin" "$vmdk" offset="$off" \
               range="$len" --run 'nbdcopy --no-extents "$uri" out.raw'
        cmp out.raw <(tail -c +$((off + 1)) ref.raw | head -c "$len")
    done
}

for size in $sizes; do
    make_reference ref.raw "$size"

    for sf in $subformats; do
        dir="$sf-$size"
        mkdir "$dir"
        qemu-img convert -f raw -O vmdk -o subformat="$sf" ref.raw "$dir/disk.vmdk"
        ls -ls "$dir"
        vmdk="$dir/disk.vmdk"

        # twoGb* split at 2 GiB: 5 GiB gives three extent files.
        case "$sf" in
            twoGb*)
                nfiles=$(ls "$dir" | wc -l)
                expected=$(( (size + 2147483647) / 2147483648 + 1 ))
                test "$nfiles" -eq "$expected"
                ;;
        esac

        # Reading must not change the image, even though the plugin
        # opens it read-write by default.
        fingerprint "$dir" > before.sum

        # Size and read-only flag, through socket activation.
        test "$(nbdinfo --size -- [ nbdkit "$plugin" "$vmdk" ])" -eq "$size"
        nbdinfo --is readonly -- [ nbdkit -r "$plugin" file="$vmdk" ]
        nbdinfo --is readonly -- [ nbdkit "$plugin" "$vmdk" readonly=true ]

        # With extents (holes are skipped by nbdcopy).
        rm -f out.raw
        nbdkit -U - "$plugin" "$vmdk" --run 'nbdcopy "$uri" out.raw'
        compare_raw ref.raw out.raw

        # Without extents: every byte is read through .pread (for the
        # 5 GiB disks, every byte of the windows that hold the data:
        # reading 5 GiB of host-file holes through a flat extent takes
        # 15 s here).
        read_without_extents "$vmdk" "$size"

        # Without structured replies the client cannot ask for block
        # status, so .extents is never called.  The reads are those
        # above, so the smallest disk is enough to show that.
        if [ "$size" = "$smallest" ]; then
            read_without_extents "$vmdk" "$size" --no-sr
        fi

        # The server compares what is written to it with what it holds:
        # data ranges by pread, zero ranges of the raw file by checking
        # that the plugin reads zeroes there.
        nbdkit -U - --filter=checkwrite "$plugin" "$vmdk" \
               --run 'nbdcopy ref.raw "$uri"'
        # Reading every hole of a 5 GiB raw file costs ~10 s here: do
        # the full read only for the smaller sizes.
        if [ "$size" -lt $((1024 * 1024 * 1024)) ]; then
            nbdkit -U - --filter=checkwrite "$plugin" "$vmdk" \
                   --run 'nbdcopy --no-extents ref.raw "$uri"'
        fi

        # And read-only, through the plugin's own read-only open.
        rm -f out.raw
        nbdkit -U - "$plugin" "$vmdk" readonly=true \
               --run 'nbdcopy "$uri" out.raw'
        compare_raw ref.raw out.raw

        fingerprint "$dir" > after.sum
        diff -u before.sum after.sum

        rm -rf "$dir" out.raw
    done
    rm -f ref.raw
done

echo "$0: total time $(( SECONDS - start_time )) s"
