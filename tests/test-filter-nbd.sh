#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The filter over the nbd plugin: a second nbdkit serves the .vmdk
# files' bytes (the file plugin) on Unix sockets, and
# "nbdkit nbd socket=... --filter=vmdk" decodes them.  Reads equal
# qemu-img's raw (nbdcopy opens 4 connections: the shared context
# below serves them all); a write into an existing grain reaches the
# file (qemu-img check clean, compare); a lower server started with -r
# makes the filter serve read-only, saying why.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_cmds nbdkit nbdinfo nbdcopy qemu-img cmp
requires_built test-write-nbd
requires nbdkit nbd --version

make_scratch
cd "$scratch"
make_filter_images

start_nbdkit -P ms.pid -U ms.sock file ms.vmdk
start_nbdkit -P so.pid -U so.sock file so.vmdk
start_nbdkit -P ro.pid -U ro.sock -r file ms.vmdk

for img in ms so; do
    check_filter_reads "$img.vmdk over nbd" ref.raw \
        nbd socket="$scratch/$img.sock" --filter="$VMDK_FILTER"
done

# A write through both servers into a grain the image has (grain 1),
# then the file checked offline.
if nbdkit -U - nbd socket="$scratch/ms.sock" --filter="$VMDK_FILTER" \
          --run "'$abs_builddir/test-write-nbd' \"\$uri\" 'is:can_write:1' \
                 w:65636:5000:171 f r:65636:5000:171"; then
    pass "a write over nbd"
else
    fail "a write over nbd"
fi
kill_nbdkit ms.pid
write_pattern ref.raw 65636 5000 171
check_image_consistent "after the write over nbd" ms.vmdk
check_image_equals "after the write over nbd" ms.vmdk ref.raw

# The lower server is read-only: so is the export, with a warning.
rc=0
nbdkit -U - nbd socket="$scratch/ro.sock" --filter="$VMDK_FILTER" \
       --run 'nbdinfo --is readonly "$uri"' 2> ro.err || rc=$?
cat ro.err
if [ "$rc" -eq 0 ] &&
   grep -q 'serving read-only: .*the layer below is read-only' ro.err; then
    pass "a read-only layer below: served read-only"
else
    fail "a read-only layer below (status $rc)"
fi

check_summary
