#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "vmdk commit CHILD": afterwards the parent alone reads as the chain
# did (qemu-img compare against qemu's reading of the chain before),
# passes qemu-img check, and CHILD's files are unchanged; CHILD's
# parentCID then no longer matches its parent, so the chain refuses to
# open.  The child's own zeroes (zeroed grains) override the parent's
# data; what it does not allocate leaves the parent's data alone; the
# parent's own parent is not touched.  Parents of every writable kind
# qemu-img writes: monolithicSparse, twoGbMaxExtentSparse (a child
# over a grandparent), monolithicFlat, streamOptimized.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_tool
requires_cmds qemu-img qemu-io jq sha256sum
requires qemu-img --version

make_scratch
cd "$scratch"

M=$((1024 * 1024))

# commits WHAT CHILD PARENT: commit CHILD into PARENT and check all.
commits ()
{
    local what="$1" child="$2" parent="$3" child_sum
    qemu-img convert -f vmdk -O raw "$child" before.raw
    child_sum=$(sha256sum "${child%.vmdk}"*)
    if ! vmdk commit "$child" 2> err.txt; then
        fail "$what: commit failed: $(cat err.txt)"
        return
    fi
    check_image_consistent "$what: the parent" "$parent"
    check_image_equals "$what: the parent" "$parent" before.raw
    if [ "$(sha256sum "${child%.vmdk}"*)" = "$child_sum" ]; then
        pass "$what: the child is unchanged"
    else
        fail "$what: the child changed"
    fi
    tool_refuses "$what: the child on its parent" \
                 'parentCID=.* does not match' info "$child"
}

# A zeroed-grain child over a monolithicSparse parent: data over data,
# data over holes, zeroed grains over data, holes over data.
qemu-img create -q -f vmdk p1.vmdk 16M
qemu-io -f vmdk -c 'write -P 1 0 4M' -c 'write -P 1 8M 1M' p1.vmdk > /dev/null
qemu-img create -q -f vmdk -o zeroed_grain=on -b p1.vmdk -F vmdk c1.vmdk
qemu-io -f vmdk -c 'write -P 2 1M 512k' -c 'write -P 2 12M 100k' \
        -c 'write -z 2M 128k' -c 'write -z 8M 64k' c1.vmdk > /dev/null
commits "monolithicSparse parent" c1.vmdk p1.vmdk

# A child over a twoGbMaxExtentSparse parent that has a parent itself:
# the grandparent is not touched, and the parent now holds what the
# child held where the grandparent had data.
qemu-img create -q -f vmdk g2.vmdk 32M
qemu-io -f vmdk -c 'write -P 3 0 8M' g2.vmdk > /dev/null
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse \
         -b g2.vmdk -F vmdk p2.vmdk
qemu-io -f vmdk -c 'write -P 4 4M 1M' p2.vmdk > /dev/null
qemu-img create -q -f vmdk -b p2.vmdk -F vmdk c2.vmdk
qemu-io -f vmdk -c 'write -P 5 1M 64k' -c 'write -P 5 4M 512k' \
        -c 'write -P 5 20M 1M' c2.vmdk > /dev/null
g_sum=$(sha256sum < g2.vmdk)
commits "a parent with a parent" c2.vmdk p2.vmdk
if [ "$(sha256sum < g2.vmdk)" = "$g_sum" ]; then
    pass "a parent with a parent: the grandparent is unchanged"
else
    fail "a parent with a parent: the grandparent changed"
fi

# Flat and stream parents (a child made by vmdk create --parent).
for sub in monolithicFlat streamOptimized; do
    truncate -s $((16 * M)) base.raw
    write_random base.raw 0 $((3 * M))
    qemu-img convert -f raw -O vmdk -o subformat=$sub base.raw p-$sub.vmdk
    vmdk create --parent p-$sub.vmdk c-$sub.vmdk
    qemu-io -f vmdk -c 'write -P 6 1M 2M' -c 'write -P 6 10M 64k' \
            c-$sub.vmdk > /dev/null
    commits "$sub parent" c-$sub.vmdk p-$sub.vmdk
done

# Refusals.
tool_refuses "an image without a parent" \
             '^vmdk: p1.vmdk: the image has no parent' commit p1.vmdk
tool_refuses "a child whose parent changed" 'parentCID=.* does not match' \
             commit c1.vmdk
qemu-img create -q -f vmdk small.vmdk 8M
qemu-img create -q -f vmdk -b small.vmdk -F vmdk large.vmdk 16M
tool_refuses "a child larger than its parent" 'larger than its parent' \
             commit large.vmdk

check_summary
