#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Writes into grain-directory holes (GDE 0: no grain table at all for
# that 32 MiB range), which QEMU cannot write into but we must: the
# plugin allocates the table and its redundant twin.
#
# A qemu-made monolithicSparse image (QEMU preallocates every table) is
# patched: the GD entry and the redundant GD entry of tables with no
# data are zeroed (the header gives gdOffset at byte 56 and rgdOffset
# at byte 48, u64 sectors; the entries are u32).  Then writes land in
# the holes (inside, across the neighbouring tables, partial grains,
# the partial last table up to the last byte), and with the server
# gone:
#   - qemu-img check is clean and qemu-img compare equals the expected
#     raw image;
#   - both directories now point at tables, and each new table equals
#     its redundant copy;
#   - a reopened server reads the same, writes more into the new
#     tables, and the result checks again.
# The same for a snapshot child whose hole is over parent data (the
# new grains must copy the rest of the grain from the parent), and for
# an image with zeroed grains.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img qemu-io od dd cmp
requires_built test-write-nbd
nbd=$abs_builddir/test-write-nbd

make_scratch
cd "$scratch"

M=$((1024 * 1024))

# gd_hole IMAGE INDEX: zero GD entry INDEX and its redundant twin.
gd_hole () {
    local img=$1 i=$2 gd rgd
    gd=$(u64 "$img" 56)
    rgd=$(u64 "$img" 48)
    write_zeroes "$img" $((gd * 512 + 4 * i)) 4
    write_zeroes "$img" $((rgd * 512 + 4 * i)) 4
}

# check_tables IMAGE INDEX...: both directories have an entry for each
# table and the table equals its redundant copy.
check_tables () {
    local img=$1 i g r gd rgd; shift
    gd=$(u64 "$img" 56)
    rgd=$(u64 "$img" 48)
    for i in "$@"; do
        g=$(u32 "$img" $((gd * 512 + 4 * i)))
        r=$(u32 "$img" $((rgd * 512 + 4 * i)))
        if [ "$g" -eq 0 ] || [ "$r" -eq 0 ] || [ "$g" -eq "$r" ]; then
            fail "$img: GD entry $i = $g, redundant = $r"
        elif cmp -s -n 2048 -i $((g * 512)):$((r * 512)) "$img" "$img"; then
            pass "$img: table $i (sector $g) equals its redundant copy ($r)"
        else
            fail "$img: table $i differs from its redundant copy"
        fi
    done
}

# Requests: each "w OFF LEN BYTE" goes to the server (test-write-nbd)
# and to expect.raw; "z OFF LEN [trim]" zeroes.
cmds=()
req () {
    local op=$1 off=$2 len=$3 arg=${4:-}
    case $op in
        w) cmds+=("w:$off:$len:$arg")
           write_pattern expect.raw "$off" "$len" "$arg" ;;
        z) cmds+=("z:$off:$len${arg:+:$arg}")
           write_zeroes expect.raw "$off" "$len" ;;
    esac
}

# check_image WHAT IMAGE: consistent, and reads as expect.raw offline
# and through a reopened server.
check_image () {
    check_image_consistent "$1" "$2"
    check_image_equals "$1" "$2" expect.raw
    check_served_equals "$1" "$2" expect.raw
}

# run_case WHAT IMAGE: the writes into holes 3 (96-128M) and 6 (the
# partial last table, 192-200M), then more after a reopen.
run_case () {
    local what=$1 img=$2
    cmds=()
    req w $((100 * M)) $M 0xa1                   # inside hole 3
    req w $((96 * M - 5000)) 10000 0xa2          # across tables 2/3
    req w $((127 * M + 100)) 3 0xa3              # 3 bytes, partial grain
    req w $((128 * M - 1000)) 2000 0xa4          # across tables 3/4
    req w $((200 * M - 700)) 700 0xa5            # last bytes, hole 6
    req w $((110 * M)) $((300 * 1024)) 0xa6      # several grains
    req z $((110 * M + 65536)) 65536 trim        # a whole grain again
    req w $((110 * M + 131072 + 5)) 1 0xa7
    if serve file="$img" --run "'$nbd' \"\$uri\" ${cmds[*]} f"; then
        pass "$what: writes into GD holes"
    else
        fail "$what: writes into GD holes"
    fi
    check_image "$what" "$img"
    check_tables "$img" 3 6

    cmds=()
    req w $((100 * M + 4096)) 8192 0xb1          # the table we made
    req w $((97 * M + 17)) 70000 0xb2
    req w $((199 * M)) 65536 0xb3
    req z $((100 * M)) 65536                     # no MAY_TRIM
    if serve file="$img" --run "'$nbd' \"\$uri\" ${cmds[*]}"; then
        pass "$what: more writes after a reopen"
    else
        fail "$what: more writes after a reopen"
    fi
    check_image "$what (second session)" "$img"
    check_tables "$img" 3 6
}

# 1. monolithicSparse, data in tables 0-2, 4, 5.
rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk img.vmdk 200M
qemu-io -f vmdk -c 'write -P 0x11 0 1M' -c 'write -P 0x12 95M 1M' \
    -c 'write -P 0x14 130M 64k' -c 'write -P 0x15 170M 100k' img.vmdk \
    > /dev/null
gd_hole img.vmdk 3
gd_hole img.vmdk 6
if qemu-img check -q -f vmdk img.vmdk; then
    pass "patched image: qemu-img check"
else
    fail "patched image: qemu-img check"
fi
qemu-img convert -f vmdk -O raw img.vmdk expect.raw
run_case "monolithicSparse with GD holes" img.vmdk

# 2. zeroed_grain=on: the zero request becomes a zeroed-grain entry in
# the new table.
rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk -o zeroed_grain=on img.vmdk 200M
qemu-io -f vmdk -c 'write -P 0x21 0 1M' -c 'write -P 0x25 170M 100k' \
    img.vmdk > /dev/null
gd_hole img.vmdk 3
gd_hole img.vmdk 6
qemu-img convert -f vmdk -O raw img.vmdk expect.raw
run_case "zeroed_grain=on with GD holes" img.vmdk

# 3. A snapshot child with holes over parent data: partial grains in
# the new table are completed from the parent.
rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk base.vmdk 200M
qemu-io -f vmdk -c 'write -P 0x31 90M 20M' -c 'write -P 0x32 125M 5M' \
    -c 'write -P 0x36 195M 5M' base.vmdk > /dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk
qemu-io -f vmdk -c 'write -P 0x41 10M 1M' child.vmdk > /dev/null
gd_hole child.vmdk 3
gd_hole child.vmdk 6
sum=$(sha256sum base.vmdk)
qemu-img convert -f vmdk -O raw child.vmdk expect.raw
run_case "snapshot child with GD holes" child.vmdk
if [ "$sum" = "$(sha256sum base.vmdk)" ]; then
    pass "snapshot child: the base is unchanged"
else
    fail "snapshot child: the base changed"
fi

check_summary
