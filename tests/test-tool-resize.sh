#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "vmdk resize": the image keeps its data and reads as zeroes in the
# new tail (qemu-img check and compare against the raw disk grown with
# truncate), for
#
# - monolithic-sparse: directory entries added in place, and a
#   directory moved to the end of the file when it has no room (qemu
#   then writes into the new tail, and the plugin reads what it wrote);
#   images of qemu-img and of vmdk convert;
# - split-sparse: the last extent grows to 2047 MiB and new extent
#   files follow;
# - monolithic-flat and split-flat;
# - a delta link (its parent is not touched);
# - what lay past the old end reads as zeroes: a grain-table entry
#   beyond the capacity, a partial last grain's tail, bytes past a flat
#   extent's end;
# - refusals: shrinking, stream-optimized, vmfs-sparse, a bad size, a
#   leftover extent file of an interrupted resize (nothing changed).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_tool
requires_cmds qemu-img qemu-io jq cmp
requires qemu-img --version

make_scratch big
requires_free_space "$scratch" 512
cd "$scratch"

M=$((1024 * 1024))
G=65536
make_reference ref.raw $((80 * M))

# grows WHAT IMAGE RAW SIZE: resize IMAGE and RAW to SIZE; IMAGE must
# then pass qemu-img check and read as RAW, to qemu and to the engine.
grows ()
{
    local what="$1" img="$2" raw="$3" size="$4"
    if ! vmdk resize "$img" "$size" 2> err.txt; then
        fail "$what: resize to $size failed: $(cat err.txt)"
        return
    fi
    truncate -s "$size" "$raw"
    check_image_consistent "$what" "$img"
    check_image_equals "$what" "$img" "$raw"
    rm -f engine.raw
    if vmdk convert "$img" engine.raw && compare_raw "$raw" engine.raw; then
        pass "$what: the engine reads the same"
    else
        fail "$what: the engine reads other data"
    fi
    if [ "$(vmdk info --json "$img" | jq '."virtual-size"')" -eq \
         "$(stat -c %s "$raw")" ]; then
        pass "$what: vmdk info says $size"
    else
        fail "$what: vmdk info: $(vmdk info --json "$img" | jq '."virtual-size"')"
    fi
}

# monolithic-sparse of qemu-img: 3 tables, then 32 (the directory's
# sector has room), then 160 (it has not: directories move).
qemu-img convert -f raw -O vmdk ref.raw qs.vmdk
cp ref.raw qs.raw
gd0=$(u64 qs.vmdk 56)
grows "qemu monolithicSparse, room in the directory" qs.vmdk qs.raw 1G
if [ "$(u64 qs.vmdk 56)" -eq "$gd0" ]; then
    pass "the directory stayed at sector $gd0"
else
    fail "the directory moved from sector $gd0 to $(u64 qs.vmdk 56)"
fi
grows "qemu monolithicSparse, directories moved" qs.vmdk qs.raw 5G
if [ "$(u64 qs.vmdk 56)" -gt "$gd0" ]; then
    pass "the directory moved to sector $(u64 qs.vmdk 56)"
else
    fail "the directory did not move"
fi
# qemu writes into the new space, the plugin reads it.
qemu-io -f vmdk -c 'write -P 9 4100M 1M' -c 'write -P 8 100M 64k' \
        qs.vmdk > /dev/null
qemu-io -f raw -c 'write -P 9 4100M 1M' -c 'write -P 8 100M 64k' \
        qs.raw > /dev/null
check_image_consistent "qemu wrote into the new space" qs.vmdk
check_image_equals "qemu wrote into the new space" qs.vmdk qs.raw
if [ -f "$VMDK_PLUGIN" ] && command -v nbdkit > /dev/null; then
    if nbdkit -U - "$VMDK_PLUGIN" file=qs.vmdk readonly=true \
              --run 'qemu-img compare -q -f raw -F raw qs.raw "$uri"'; then
        pass "the plugin reads what qemu wrote there"
    else
        fail "the plugin reads other data than qemu wrote"
    fi
fi

# monolithic-sparse of vmdk convert (tables preallocated after each
# directory, as VMware lays them out).
vmdk convert ref.raw vs.vmdk
cp ref.raw vs.raw
grows "vmdk monolithic-sparse" vs.vmdk vs.raw $((300 * M))
grows "vmdk monolithic-sparse, again" vs.vmdk vs.raw 5G

# split-sparse: the last extent grows to 2047 MiB, then new files.
vmdk convert -t split-sparse ref.raw ss.vmdk
cp ref.raw ss.raw
grows "split-sparse, into a new extent file" ss.vmdk ss.raw 3G
n=$(vmdk info --json ss.vmdk | jq '.extents | length')
if [ "$n" -eq 2 ] && [ -f ss-s002.vmdk ]; then
    pass "split-sparse: 2 extent files for 3 GiB"
else
    fail "split-sparse: $n extents"
fi
qemu-img convert -f raw -O vmdk -o subformat=twoGbMaxExtentSparse ref.raw \
         qss.vmdk
cp ref.raw qss.raw
grows "qemu twoGbMaxExtentSparse, two new files" qss.vmdk qss.raw 5G

# Flat kinds; junk past the flat extent's end must not show.
qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat ref.raw qf.vmdk
cp ref.raw qf.raw
head -c $((3 * G)) /dev/urandom >> qf-flat.vmdk
grows "qemu monolithicFlat, junk past its end" qf.vmdk qf.raw 1G
vmdk convert -t split-flat ref.raw sf.vmdk
cp ref.raw sf.raw
grows "split-flat, into a new extent file" sf.vmdk sf.raw 3G
vmdk convert -t vmfs-flat ref.raw vf.vmdk
cp ref.raw vf.raw
grows "vmfs-flat" vf.vmdk vf.raw 200M

# What a writer left past the capacity: a table entry for a grain
# beyond it (in the table and its redundant copy), and the tail of a
# partial last grain.
truncate -s $((80 * M + 4096)) tail.raw
write_random tail.raw $((80 * M - 4096)) 8192
qemu-img convert -f raw -O vmdk tail.raw t.vmdk
last=$(( 80 * M / G ))                          # the partial grain
sector=$(u32 t.vmdk "$(kdmv_gte_offset t.vmdk $last)")
head -c $((G - 4096)) /dev/urandom |
    dd of=t.vmdk bs=512 seek=$((sector * 512 + 4096)) oflag=seek_bytes \
       conv=notrunc status=none
beyond=$(( 90 * M / G ))                        # in table 2, past the end
off=$(kdmv_gte_offset t.vmdk $beyond)
put_u32 t.vmdk "$off" "$sector"
rgd=$(u64 t.vmdk 48)
rgt=$(u32 t.vmdk $(( rgd * 512 + 4 * (beyond / 512) )))
put_u32 t.vmdk $(( rgt * 512 + 4 * (beyond % 512) )) "$sector"
check_image_equals "junk past the end, before" t.vmdk tail.raw
grows "junk past the end" t.vmdk tail.raw $((200 * M))

# A delta link grows; its parent stays as it was.
qemu-img create -q -f vmdk pbase.vmdk 64M
qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -P 1 63M 1M' pbase.vmdk > /dev/null
qemu-img create -q -f vmdk -b pbase.vmdk -F vmdk pchild.vmdk
qemu-io -f vmdk -c 'write -P 2 512k 1M' pchild.vmdk > /dev/null
qemu-img convert -f vmdk -O raw pchild.vmdk pchild.raw
base_sum=$(sha256sum < pbase.vmdk)
grows "a delta link" pchild.vmdk pchild.raw 100M
if [ "$(sha256sum < pbase.vmdk)" = "$base_sum" ]; then
    pass "a delta link: its parent is unchanged"
else
    fail "a delta link: its parent changed"
fi

# Refusals change nothing.
# refused WHAT PATTERN IMAGE SIZE: resize refused, nothing changed.
refused ()
{
    local before after
    before=$(stat -c '%n %s %y' "${3%.vmdk}"* 2> /dev/null || :)
    tool_refuses "$1" "$2" resize "$3" "$4"
    after=$(stat -c '%n %s %y' "${3%.vmdk}"* 2> /dev/null || :)
    if [ "$before" = "$after" ]; then
        pass "$1: nothing changed"
    else
        fail "$1: files changed"
    fi
}
refused "shrinking" "shrinking" qs.vmdk 1G
refused "a size not a multiple of 512" "not a multiple of 512" qs.vmdk 6000000001
refused "an unknown suffix" "unknown suffix" qs.vmdk 6Q
vmdk convert -t stream-optimized ref.raw so.vmdk
refused "stream-optimized" "streamOptimized images cannot be resized" so.vmdk 1G
vmdk create -t vmfs-sparse cowd.vmdk 8M
refused "vmfs-sparse" 'createType="vmfsSparse" cannot be resized' cowd.vmdk 16M
qemu-img create -q -f vmdk big-parent.vmdk 200M
qemu-img create -q -f vmdk -b big-parent.vmdk -F vmdk small-child.vmdk 100M
refused "a child smaller than its parent" "is larger" small-child.vmdk 150M
vmdk convert -t split-flat ref.raw left.vmdk
touch left-f002.vmdk
refused "a leftover extent file" "interrupted resize" left.vmdk 3G
refused "a missing image" "No such file" missing.vmdk 1G
rc=0
vmdk resize vs.vmdk 5G || rc=$?
if [ "$rc" -eq 0 ]; then
    pass "the same size: nothing to do"
else
    fail "the same size: status $rc"
fi

check_summary
