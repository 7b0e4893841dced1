#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The -D vmdk.open / vmdk.grains / vmdk.cache debug flags each switch
# on their own category of messages, and only that one.  (If the
# version script stopped exporting vmdk_debug_*, nbdkit would ignore
# the flags silently: this test catches that.)

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img qemu-io
requires qemu-img --version

make_scratch
cd "$scratch"
plugin="$VMDK_PLUGIN"

qemu-img create -q -f vmdk -o subformat=monolithicSparse d.vmdk 10M
qemu-io -f vmdk -c 'write -P 0x33 1M 128k' d.vmdk

# run LOG FLAGS...: serve d.vmdk in the foreground with -v, read it
# all once with and once without extents, log stderr to LOG.
run ()
{
    local log="$1"
    shift
    nbdkit -f -v "$@" -U - "$plugin" d.vmdk \
           --run 'nbdcopy "$uri" null: && nbdcopy --no-extents "$uri" null:' \
           2> "$log"
}

# The sparse header line (lib/extent-sparse.c) and the image summary
# (lib/image.c), both VMDK_DEBUG_OPEN.
open_re='debug: d\.vmdk: sparse v1 flags 0x[0-9a-f]+ capacity 20480 grain 128 gtes/gt 512 gd@[0-9]+ rgd@[0-9]+ overhead [0-9]+ tables 1'
summary_re='debug: d\.vmdk: createType=monolithicSparse, 1 extents, 10485760 bytes, grain 65536'
# One line per run read (lib/read.c), VMDK_DEBUG_GRAINS.
grains_re='debug: pread: offset 1048576 len [0-9]+ kind [0-9]+ file offset [1-9][0-9]*'
# Grain table loads (lib/graindir.c), VMDK_DEBUG_CACHE.
cache_re='debug: d\.vmdk: loaded grain table 0 from offset [0-9]+'

run none.log
run open.log -D vmdk.open=1
run grains.log -D vmdk.grains=1
run cache.log -D vmdk.cache=1
run all.log -D vmdk.open=1 -D vmdk.grains=1 -D vmdk.cache=1

# No flag: none of the three categories (plain -v still works).
grep -q 'debug: vmdk: get_ready' none.log
not grep -Eq "$open_re|$summary_re|$grains_re|$cache_re" none.log

grep -E "$open_re" open.log
grep -E "$summary_re" open.log
not grep -Eq "$grains_re|$cache_re" open.log

grep -E "$grains_re" grains.log | head
not grep -Eq "$open_re|$summary_re|$cache_re" grains.log

grep -E "$cache_re" cache.log
not grep -Eq "$open_re|$summary_re|$grains_re" cache.log

grep -Eq "$open_re" all.log
grep -Eq "$summary_re" all.log
grep -Eq "$grains_re" all.log
grep -Eq "$cache_re" all.log

# The open lines come from get_ready, before any client connects.
not grep -q 'vmdk: open readonly' <(grep -m1 -B1000 -E "$open_re" open.log)

# Without -v the flags print nothing.
nbdkit -f -D vmdk.open=1 -U - "$plugin" d.vmdk --run 'nbdinfo --size "$uri"' \
       > quiet.out 2> quiet.log
cat quiet.log
not grep -q 'debug:' quiet.log
