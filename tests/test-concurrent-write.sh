#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Concurrent writers (test-concurrent-write.c): one server, 4 writing
# connections racing to allocate the same grains (each writes its own
# 4 KiB pieces of the same unallocated 64 KiB grains) and writing
# disjoint runs, flushes in between, and a fifth connection reading all
# over the disk meanwhile; then every byte is checked from another
# connection than the flusher, again after a restart, and offline:
# qemu-img check clean and qemu-img compare identical to the model.
#
# Images: monolithicSparse (default cache), an 8 GiB monolithicSparse
# with the smallest grain-table cache (tables are evicted and reloaded
# while being written), twoGbMaxExtentSparse, and a snapshot child
# whose grains are copied from the parent as the writers race.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img qemu-io sha256sum
requires_built test-concurrent-write
prog=$abs_builddir/test-concurrent-write

make_scratch
cd "$scratch"

# run WHAT IMAGE ROUNDS [PLUGIN ARGS...]
run () {
    local what=$1 img=$2 rounds=$3; shift 3
    if serve file="$img" "$@" \
            --run "'$prog' \"\$uri\" model.raw $rounds"; then
        pass "$what: concurrent writers, data read back"
    else
        fail "$what: concurrent writers"
        return 0
    fi
    check_image_consistent "$what" "$img"
    check_image_equals "$what" "$img" model.raw
    check_served_equals "$what" "$img" model.raw
}

rm -f ./*.vmdk model.raw
qemu-img create -q -f vmdk img.vmdk 1G
truncate -s 1G model.raw
run "monolithicSparse 1G" img.vmdk 3

rm -f ./*.vmdk model.raw
qemu-img create -q -f vmdk img.vmdk 8G
truncate -s 8G model.raw
run "monolithicSparse 8G, gt-cache=64K" img.vmdk 2 gt-cache=64K

rm -f ./*.vmdk model.raw
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse img.vmdk 4700M
truncate -s 4700M model.raw
run "twoGbMaxExtentSparse 4.6G" img.vmdk 2

# The racing grains lie in the first half: give the parent data there
# (and in some of the second half), so every racing allocation copies
# the parent's bytes around the pieces.
rm -f ./*.vmdk model.raw
# The base's data written raw, then converted (qemu-io writing the VMDK
# itself syncs each grain table and takes seconds).
truncate -s 1G base.raw
qemu-io -f raw -c 'write -P 0x77 0 300M' -c 'write -P 0x78 400M 112M' \
    -c 'write -P 0x79 700M 8M' base.raw > /dev/null
qemu-img convert -f raw -O vmdk base.raw base.vmdk
rm base.raw
qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk
qemu-img convert -f vmdk -O raw child.vmdk model.raw
sum=$(sha256sum base.vmdk)
run "snapshot child" child.vmdk 2 gt-cache=64K
if [ "$sum" = "$(sha256sum base.vmdk)" ]; then
    pass "snapshot child: the base is unchanged"
else
    fail "snapshot child: the base changed"
fi

check_summary
