#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Block status ("nbdinfo --map") through the plugin.
#
# - Sparse subformats (monolithicSparse, twoGbMaxExtentSparse,
#   streamOptimized): the same map as qemu-nbd, grain by grain.
#
# - Flat subformats: a deliberate difference.  The plugin asks the host
#   file system (SEEK_DATA/SEEK_HOLE) and reports a host hole as
#   "3 hole,zero", where qemu-nbd says "2 zero".  The expectation is
#   therefore built from the flat extent files themselves, as
#   "qemu-img map -f raw" sees them: data where the file has data,
#   "3 hole,zero" where it has holes.  It is also checked against
#   qemu-nbd's map with "2 zero" read as "3 hole,zero".
#
# - Zeroed grains (GTE = 1, qemu-img create -o zeroed_grain=on then
#   qemu-io write -z): the plugin reports them as "2 zero" (allocated
#   zeroes that never fall through to a parent), where qemu-nbd says
#   "3 hole,zero".  Expected: qemu-img map --output=json, whose
#   "present": true, "zero": true entries are the zeroed grains.
#
# For every map, every range called zero really reads as zeroes.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo qemu-img qemu-nbd qemu-io jq cmp fallocate
requires qemu-img --version

make_scratch big
requires_free_space "$scratch" 1024
cd "$scratch"

plugin="$VMDK_PLUGIN"

# plugin_map VMDK > normalized map
plugin_map ()
{
    nbdinfo --map -- [ nbdkit "$plugin" "$1" ] | normalize_map
}

# qemu_nbd_map VMDK > normalized map
qemu_nbd_map ()
{
    nbdinfo --map -- [ qemu-nbd -r -f vmdk "$1" ] | normalize_map
}

# flat_expected_map DESCRIPTOR > normalized map built from the FLAT
# extent files' own allocation: qemu-img map -f raw calls a host hole
# "present, zero" (which qemu_json_to_map makes 2); the plugin's
# expected answer for it is 3, hole,zero.
flat_expected_map ()
{
    local desc="$1" dir access sectors type file offset shift=0
    dir=$(dirname "$desc")
    grep -aE '^(RW|RDONLY) ' "$desc" |
    while read -r access sectors type file offset; do
        test "$type" = FLAT
        test "$offset" = 0
        file="${file//\"/}"
        qemu-img map -f raw --output=json "$dir/$file" |
            jq -c --argjson len $(( sectors * 512 )) \
               '[.[] | select(.start < $len) |
                 .length = ([.length, $len - .start] | min)]' |
            qemu_json_to_map "$shift"
        shift=$(( shift + sectors * 512 ))
    done | awk '{ if ($3 == 2) $3 = 3; print }' | normalize_map
}

for size in $((100 * 1024 * 1024 + 12345 * 512)) \
            $((5 * 1024 * 1024 * 1024 + 12345 * 512)); do
    make_reference ref.raw "$size"

    for sf in monolithicSparse twoGbMaxExtentSparse streamOptimized; do
        dir="$sf-$size"
        mkdir "$dir"
        qemu-img convert -f raw -O vmdk -o subformat="$sf" ref.raw "$dir/disk.vmdk"
        qemu_nbd_map "$dir/disk.vmdk" > expected.map
        plugin_map "$dir/disk.vmdk" > actual.map
        cat actual.map
        diff -u expected.map actual.map
        check_zero_ranges actual.map ref.raw
        # Something of each kind: data and unallocated grains (holes).
        grep -q ' 0$' actual.map
        grep -q ' 3$' actual.map
        # qemu-img never writes zeroed grains here.
        not grep -q ' 2$' actual.map
        rm -rf "$dir"
    done

    for sf in monolithicFlat twoGbMaxExtentFlat; do
        dir="$sf-$size"
        mkdir "$dir"
        qemu-img convert -f raw -O vmdk -o subformat="$sf" ref.raw "$dir/disk.vmdk"
        flat_expected_map "$dir/disk.vmdk" > expected.map
        test -s expected.map
        plugin_map "$dir/disk.vmdk" > actual.map
        cat actual.map
        diff -u expected.map actual.map
        # Same as qemu-nbd, once its "2 zero" is read as "3 hole,zero".
        qemu_nbd_map "$dir/disk.vmdk" | awk '{ if ($3 == 2) $3 = 3; print }' |
            normalize_map > qemu.map
        diff -u qemu.map actual.map
        check_zero_ranges actual.map ref.raw
        grep -q ' 3$' actual.map
        rm -rf "$dir"
    done
    rm -f ref.raw
done

# streamOptimized: unallocated grains are holes, including a disk with
# no data at all and one whose only data is in the last partial grain.
size=$(( 64 * 1024 * 1024 + 512 ))
truncate -s "$size" empty.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized empty.raw empty.vmdk
plugin_map empty.vmdk > actual.map
cat actual.map
test "$(cat actual.map)" = "0 $size 3"
write_random empty.raw $(( size - 512 )) 512
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized empty.raw last.vmdk
plugin_map last.vmdk > actual.map
qemu_nbd_map last.vmdk > expected.map
diff -u expected.map actual.map
test "$(cat actual.map)" = "0 $(( size - 512 )) 3
$(( size - 512 )) 512 0"
rm -f empty.raw empty.vmdk last.vmdk

# Zeroed grains (GTE 1 with the zeroed-grain flag).
qemu-img create -q -f vmdk -o zeroed_grain=on z.vmdk 100M
qemu-io -f vmdk \
        -c 'write -P 0x55 0 3M' \
        -c 'write -z 0 1M' \
        -c 'write -z 2M 64k' \
        -c 'write -z 10M 1M' \
        -c 'write -z 50M 100k' \
        -c 'write -P 0xaa 99M 4k' \
        z.vmdk
qemu-img map --output=json z.vmdk | qemu_json_to_map > expected.map
plugin_map z.vmdk > actual.map
cat actual.map
diff -u expected.map actual.map
# Zeroed grains exist and are "2 zero", not holes.
grep -q '^0 1048576 2$' actual.map
grep -q '^10485760 1048576 2$' actual.map
grep -q '^52428800 65536 2$' actual.map
# Compared with qemu-nbd: identical once our "2 zero" is read as
# qemu-nbd's "3 hole,zero".
qemu_nbd_map z.vmdk > qemu.map
awk '{ if ($3 == 2) $3 = 3; print }' actual.map | normalize_map > actual3.map
diff -u qemu.map actual3.map
# The data reads back the same as through qemu.
qemu-img convert -f vmdk -O raw z.vmdk z.raw
check_zero_ranges actual.map z.raw
nbdkit -U - "$plugin" z.vmdk --run 'nbdcopy --no-extents "$uri" z-out.raw'
compare_raw z.raw z-out.raw
