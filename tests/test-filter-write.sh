#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Writes through the filter to a monolithicSparse file (the file plugin
# below): writes, zeroes and trims in grains the image has, with and
# without FUA, then "qemu-img check" finds the image clean and it
# compares equal to a raw model.  A write that needs a new grain fails
# with ENOSPC and the message pointing to the plugin, changes nothing,
# and does not spoil later writes and flushes.  A clean shutdown clears
# the unclean flag; nbdkit -r makes the export read-only.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_cmds nbdkit nbdinfo qemu-img cmp
requires_built test-write-nbd

make_scratch
cd "$scratch"
make_filter_images
cp ref.raw model.raw
G=65536
cid_before=$(grep -a '^CID=' ms.vmdk)

# Grains 0-2 and 17-20 hold data in make_reference's disk; grain 3 and
# 10-16 are holes.  Each command is followed by the same change to the
# model.
cmds=(
    'is:can_write:1' 'is:can_multi_conn:1'
    "w:100:5000:17"                              # inside grain 0
    "w:$(( 2 * G - 700 )):1400:18:fua"           # across grains 1 and 2
    "w:$(( 17 * G )):$(( 4 * G )):19"            # the run 17-20
    "z:$(( 18 * G )):$G"                         # a whole grain, written
    "z:$(( 19 * G )):$G:trim"                    # whole grain, deallocated
    "t:$(( 20 * G )):$G"                         # trimmed
    "z:$(( 12 * G )):4096"                       # in a hole: nothing to do
    "!ENOTSUP:z:$(( 17 * G + 512 )):4096:fast"   # part of a grain: slow
    "!ENOSPC:w:$(( 3 * G + 10 )):100:20"         # a hole: needs a grain
    "!ENOSPC:w:$(( 10 * G )):$(( 2 * G )):21"
    "r:$(( 3 * G )):$G:0"                        # unchanged
    "f"
    "w:$(( 2 * G + 4096 )):4096:22"              # still writable
    "f"
    "r:100:5000:17" "r:$(( 17 * G )):$G:19" "r:$(( 19 * G )):$(( 2 * G )):0"
    "map:$(( 19 * G )):$G:3"
)
nbdkit -U - file ms.vmdk --filter="$VMDK_FILTER" \
       --run "'$abs_builddir/test-write-nbd' \"\$uri\" ${cmds[*]@Q}" \
       2> write.err || {
    cat write.err
    fail "the write sequence"
}
cat write.err
write_pattern model.raw 100 5000 17
write_pattern model.raw $(( 2 * G - 700 )) 1400 18
write_pattern model.raw $(( 17 * G )) $(( 4 * G )) 19
write_zeroes model.raw $(( 18 * G )) $G
write_zeroes model.raw $(( 19 * G )) $(( 2 * G ))    # zeroed, trimmed
write_pattern model.raw $(( 2 * G + 4096 )) 4096 22

if grep -q 'this write needs space for a new grain .*serve the image with the vmdk plugin' write.err; then
    pass "ENOSPC says to use the plugin"
else
    fail "the ENOSPC message"
fi
check_image_consistent "after writes through the filter" ms.vmdk
check_image_equals "after writes through the filter" ms.vmdk model.raw
if [ "$(u8 ms.vmdk 72)" -eq 0 ] &&
   [ "$(grep -a '^CID=' ms.vmdk)" != "$cid_before" ]; then
    pass "clean shutdown: unclean flag clear, new CID"
else
    fail "unclean flag $(u8 ms.vmdk 72), $(grep -a '^CID=' ms.vmdk)"
fi

# nbdkit -r: read-only, and the file is not touched.
cp ms.vmdk before.vmdk
if nbdkit -r -U - file ms.vmdk --filter="$VMDK_FILTER" \
          --run "'$abs_builddir/test-write-nbd' \"\$uri\" is:read_only:1 \
                 r:100:5000:17" &&
   cmp before.vmdk ms.vmdk; then
    pass "nbdkit -r: read-only, file unchanged"
else
    fail "nbdkit -r"
fi

check_summary
