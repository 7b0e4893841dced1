#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# streamOptimized (compressed grains) end to end.
#
# 1. Images written by qemu-img from random, compressible (text), mixed,
#    explicitly zero and unallocated grains, in several sizes (one
#    sector, one exact grain, a partial last grain, more than one grain
#    table), read byte-identical to "qemu-img convert -O raw": with and
#    without extents, 4 KiB at a time (every grain served from the
#    inflated-grain cache, each inflated once) and at an offset that is
#    not grain aligned (requests straddle grains).  The map equals qemu's: unallocated grains are
#    holes.  Writes are refused.
#
# 2. GD_AT_END: the image rewritten the way VMware streams it (footer
#    marker, footer and end-of-stream marker last) reads the same.
#
# Hostile grain markers, truncated images and broken footers are cases
# of test-malformed-stream.sh.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img qemu-io jq od cmp
requires qemu-img --version
requires_filter offset

make_scratch
cd "$scratch"

plugin="$VMDK_PLUGIN"
G=65536

# ---------------------------------------------------------------------
# Helpers.

seq -f "%012g: some compressible text, the quick brown fox jumps" 1 4000 \
    > text.bin
truncate -s $G text.bin

# fill FILE FIRST LAST: grains FIRST..LAST by kind (grain number mod 8):
# 0,1 random; 2,3 text; 4 explicit zeroes (qemu leaves it unallocated);
# 5 hole; 6 half text, half random; 7 one random sector in zeroes.
fill ()
{
    local f="$1" g
    for (( g = $2; g <= $3; g++ )); do
        case $(( g % 8 )) in
            0|1) write_random "$f" $(( g * G )) $G ;;
            2|3) dd if=text.bin of="$f" bs=$G seek="$g" conv=notrunc \
                    status=none ;;
            4) write_zeroes "$f" $(( g * G )) $G ;;
            5) ;;
            6) dd if=text.bin of="$f" bs=$(( G / 2 )) count=1 \
                  seek=$(( 2 * g )) conv=notrunc status=none
               write_random "$f" $(( g * G + G / 2 )) $(( G / 2 )) ;;
            7) write_random "$f" $(( g * G + 1536 )) 512 ;;
        esac
    done
}

# make_image NAME SIZE FIRST LAST [FIRST LAST]...: NAME.raw of SIZE
# bytes with grains filled, the tail of the disk random, and
# NAME.vmdk, qemu-img's streamOptimized copy of it.
make_image ()
{
    local name="$1" size="$2"
    shift 2
    rm -f "$name.raw" "$name.vmdk"
    truncate -s "$size" "$name.raw"
    while [ $# -ge 2 ]; do
        fill "$name.raw" "$1" "$2"
        shift 2
    done
    write_random "$name.raw" $(( size > 1000 ? size - 1000 : 0 )) 1000
    truncate -s "$size" "$name.raw"
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized \
             "$name.raw" "$name.vmdk"
}

# data_grains VMDK: how many grains qemu says are allocated.
data_grains ()
{
    qemu-img map --output=json "$1" |
        jq '[.[] | select(.data) | ((.length + 65535) / 65536 | floor)] | add // 0'
}

# ---------------------------------------------------------------------
# 1. Good images.

good_image ()
{
    local name="$1" size="$2" n
    local vmdk="$name.vmdk"

    qemu-img convert -f vmdk -O raw "$vmdk" qemu.raw
    cmp "$name.raw" qemu.raw

    test "$(nbdinfo --size -- [ nbdkit "$plugin" "$vmdk" ])" -eq "$size"
    # Writable by default (stream images take writes), read-only on
    # request.
    not nbdinfo --is readonly -- [ nbdkit "$plugin" "$vmdk" ]
    nbdinfo --is readonly -- [ nbdkit "$plugin" "$vmdk" readonly=true ]

    for opts in "" "--no-extents"; do
        rm -f out.raw
        nbdkit -U - "$plugin" "$vmdk" \
               --run "nbdcopy $opts \"\$uri\" out.raw"
        cmp qemu.raw out.raw
    done

    # 4 KiB at a time (the blocksize filter splits every request): each
    # allocated grain is inflated whole at most once (a cache miss),
    # after a first read that may have inflated only its start.
    rm -f out.raw cache.log
    nbdkit -f -v -D vmdk.cache=1 -U - --filter=blocksize "$plugin" "$vmdk" \
           maxdata=4096 --run 'nbdcopy --no-extents "$uri" out.raw' \
           2> cache.log
    cmp qemu.raw out.raw
    n=$(data_grains "$vmdk")
    read -r misses prefixes < <(sed -n 's/.*inflated-grain cache: [0-9]* hits, \([0-9]*\) misses, \([0-9]*\) prefix-only reads.*/\1 \2/p' cache.log)
    test "$misses" -le "$n"
    test $(( misses + prefixes )) -ge "$n"

    # Not grain aligned, whole requests and 4 KiB pieces: requests
    # straddle grains, and concurrent requests share grains.
    if [ "$size" -gt 3000 ]; then
        for split in no yes; do
            filter=()
            if [ $split = yes ]; then
                filter=(--filter=blocksize maxdata=4096)
            fi
            rm -f out.raw
            nbdkit -f -v -D vmdk.cache=1 -U - --filter=offset \
                   "$plugin" "$vmdk" "${filter[@]}" \
                   offset=1536 range=$(( size - 3000 )) \
                   --run 'nbdcopy "$uri" out.raw' 2> cache.log
            grep 'inflated-grain cache' cache.log
            cmp out.raw <(tail -c +1537 qemu.raw | head -c $(( size - 3000 )))
        done
    fi

    # The map is qemu's: compressed grains data, the rest holes.
    nbdkit -U - "$plugin" "$vmdk" --run 'nbdinfo --map "$uri"' |
        normalize_map > map.actual
    qemu-img map --output=json "$vmdk" | qemu_json_to_map > map.expected
    diff -u map.expected map.actual

    # A write to a copy reads back, through the plugin and QEMU, and the
    # rest of the disk is unchanged (test-stream-write.sh tests writing).
    cp "$vmdk" written.vmdk
    cp "$name.raw" written.raw
    qemu-io -f raw -c "write -P 0x5a 0 512" written.raw > /dev/null
    nbdkit -U - "$plugin" written.vmdk \
           --run 'qemu-io -f raw -c "write -P 0x5a 0 512" "$uri"' > /dev/null
    qemu-img compare -q -f vmdk -F raw written.vmdk written.raw
    nbdkit -U - "$plugin" written.vmdk readonly=true \
           --run 'nbdcopy "$uri" - | cmp - written.raw'
    rm -f qemu.raw out.raw written.vmdk written.raw
}

make_image one-sector 512 0 0
good_image one-sector 512

make_image one-grain $G 0 0
good_image one-grain $G

make_image tail $(( 32 * G + 3584 )) 0 31
good_image tail $(( 32 * G + 3584 ))

# Past the first grain table (512 grains): 40 MiB plus 3 sectors.
make_image big $(( 640 * G + 1536 )) 0 63 500 540
good_image big $(( 640 * G + 1536 ))

# ---------------------------------------------------------------------
# 2. GD_AT_END: rewrite tail.vmdk the way VMware streams it (header
#    gdOffset = GD_AT_END; footer marker, footer, end-of-stream marker
#    last).  It reads like the original, and qemu agrees.

stream_gd_at_end tail.vmdk atend.vmdk
qemu-img convert -f vmdk -O raw atend.vmdk qemu.raw
cmp tail.raw qemu.raw
rm -f out.raw
nbdkit -U - "$plugin" atend.vmdk --run 'nbdcopy --no-extents "$uri" out.raw'
cmp tail.raw out.raw

# ---------------------------------------------------------------------
# 3. First reads that inflate only a prefix of the grain (a read that
#    ends in the first 5/8 of a grain nobody cached).  The bytes served
#    are the grain's; the marker is checked in full; the stream is
#    checked up to the end of the read, so a grain that inflates short
#    of it fails, while damage past it is found by the reads that reach
#    it (documented in README.md, "streamOptimized reads").

# prefix_read VMDK OFFSET LENGTH: the first and only read of a fresh
# server, into prefix.out; its status is the read's, its log prefix.log.
# (Served with -U -, not socket activation: nbdcopy exits on a failed
# read without closing, which would leave libnbd's socket directory in
# /tmp.)
prefix_read ()
{
    rm -f prefix.out
    nbdkit -U - -v -D vmdk.cache=1 --filter=offset \
           "$plugin" "$1" offset="$2" range="$3" \
           --run 'nbdcopy --no-extents "$uri" prefix.out' > prefix.log 2>&1
}

# tail.vmdk: grains 0 and 1 random, 2 and 3 text, 32 the 3584-byte tail.
m2=$(grain_marker tail.vmdk 2)
m3=$(grain_marker tail.vmdk 3)
mt=$(grain_marker tail.vmdk 32)
csize2=$(u32 tail.vmdk $(( m2 + 8 )))
csizet=$(u32 tail.vmdk $(( mt + 8 )))

# Good grains, starting at and inside the grain (random and text).
for at in 0 1536 8192 $(( 2 * G + 12288 )) $(( 6 * G + 30000 )); do
    prefix_read tail.vmdk "$at" 4096
    cmp prefix.out <(tail -c +$(( at + 1 )) tail.raw | head -c 4096)
    grep "inflated-grain cache: 0 hits, 0 misses, 1 prefix-only reads" \
         prefix.log
done
# The short last grain, read up to its end.
prefix_read tail.vmdk $(( 32 * G )) 3584
cmp prefix.out <(tail -c 3584 tail.raw)

# A wrong lba fails even a prefix read.
cp tail.vmdk bad.vmdk; put_le bad.vmdk "$m2" 8 384
not prefix_read bad.vmdk $(( 2 * G )) 4096
grep "lba field is 384, expected 256" prefix.log
# Grain 3 holding the tail grain's data (3584 bytes) fails a 4 KiB
# prefix, and serves the 3584 bytes it does have... only as far as a
# prefix read goes: the whole grain fails.
cp tail.vmdk bad.vmdk
dd if=tail.vmdk of=bad.vmdk bs=1 skip=$(( mt + 8 )) seek=$(( m3 + 8 )) \
   count=$(( 4 + csizet )) conv=notrunc status=none
not prefix_read bad.vmdk $(( 3 * G )) 4096
grep "data inflates to 3584 bytes, expected 65536" prefix.log
prefix_read bad.vmdk $(( 3 * G )) 2048
cmp prefix.out <(tail -c 3584 tail.raw | head -c 2048)
not prefix_read bad.vmdk $(( 3 * G )) $G
grep "data inflates to 3584 bytes, expected 65536" prefix.log
# Compressed data cut to half its size: the first 4 KiB still inflate;
# a read reaching the cut fails.
cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 8 )) 4 $(( csize2 / 2 ))
prefix_read bad.vmdk $(( 2 * G )) 4096
cmp prefix.out <(tail -c +$(( 2 * G + 1 )) tail.raw | head -c 4096)
not prefix_read bad.vmdk $(( 2 * G )) $G
grep "end before the zlib stream does\|not valid zlib data" prefix.log
