#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The filter over the file plugin: monolithicSparse, streamOptimized
# (with the header's GD, and VMware's GD_AT_END footer), a bare
# hosted-sparse file and a bare COWD file read as qemu-img's raw (or
# mkcowd's), with and without block status; block status equals the
# plugin's; size, read-only and multi-conn as expected; fewer reads
# below than data grains, and grain tables loaded once, in one read;
# the feature lines of --help and the -D vmdk.open flag.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img cmp
requires_filter stats
requires_built mkcowd

make_scratch
cd "$scratch"
make_filter_images
# VMware's layout (GD_AT_END, footer) from a stream that qemu-img ended
# with an end-of-stream marker, which it writes only if the last grain
# is not data.
cp ref.raw ref-end.raw
write_zeroes ref-end.raw $(( $(stat -c %s ref.raw) - 70000 )) 70000
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized \
         ref-end.raw so-tail.vmdk
stream_gd_at_end so-tail.vmdk so-end.vmdk
# A bare hosted-sparse file: the monolithicSparse without its embedded
# descriptor (descriptorOffset and descriptorSize 0).
cp ms.vmdk bare.vmdk
put_le bare.vmdk 28 8 0
put_le bare.vmdk 36 8 0
"$abs_builddir/mkcowd" -q ref.raw cowd.vmdk

for img in ms.vmdk so.vmdk so-end.vmdk bare.vmdk cowd.vmdk; do
    raw=ref.raw
    if [ "$img" = so-end.vmdk ]; then raw=ref-end.raw; fi
    check_filter_reads "$img" "$raw" file "$img" --filter="$VMDK_FILTER"

    # Block status: what the plugin says of the same file.
    nbdkit -U - "$VMDK_PLUGIN" "$img" readonly=true \
           --run 'nbdinfo --map "$uri"' > map.plugin
    nbdkit -U - file "$img" --filter="$VMDK_FILTER" \
           --run 'nbdinfo --map "$uri"' > map.filter
    if diff -u map.plugin map.filter; then
        pass "$img: block status equals the plugin's"
    else
        fail "$img: block status differs from the plugin's"
    fi

    size=$(nbdkit -U - file "$img" --filter="$VMDK_FILTER" \
                  --run 'nbdinfo --size "$uri"')
    if [ "$size" -eq "$(stat -c %s "$raw")" ]; then
        pass "$img: size $size"
    else
        fail "$img: size $size, expected $(stat -c %s ref.raw)"
    fi
done

# Round trips, on 96 MiB of data (1536 grains, three grain tables) read
# by nbdcopy in 256 KiB requests: the layer below (counted by the stats
# filter under the vmdk filter) gets at most half as many reads as
# there are grains, since the grains of one request are fetched
# together; every grain table is loaded once, all three with one read
# (qemu-img writes them in a row).
write_random full.raw 0 $(( 96 * 1024 * 1024 ))
for sub in monolithicSparse streamOptimized; do
    qemu-img convert -q -f raw -O vmdk -o subformat=$sub full.raw full.vmdk
    rm -f stats.txt
    nbdkit -f -v -U - file full.vmdk --filter="$VMDK_FILTER" \
           --filter=stats statsfile="$scratch/stats.txt" -D vmdk.cache=1 \
           --run 'nbdcopy --request-size=262144 "$uri" out.raw' 2> cache.txt
    reads=$(awk '/^read:/ { print $2 }' stats.txt)
    loads=$(grep -c 'loaded grain table' cache.txt || :)
    if cmp out.raw full.raw && [ "$reads" -le 768 ] && [ "$loads" -eq 1 ] &&
       grep -q 'loaded grain table 0 from offset [0-9]* with the 2 after it' cache.txt; then
        pass "$sub: $reads reads below for 1536 grains, tables in one read"
    else
        fail "$sub: $reads reads below for 1536 grains, $loads table loads"
        grep 'loaded grain table' cache.txt || :
    fi
done
rm -f full.raw full.vmdk out.raw

# Writable where the plugin would be, read-only otherwise; multi-conn.
is () { nbdkit -U - file "$1" --filter="$VMDK_FILTER" --run "nbdinfo --is $2 \"\$uri\""; }
can () { nbdkit -U - file "$1" --filter="$VMDK_FILTER" --run "nbdinfo --can $2 \"\$uri\""; }
if not is ms.vmdk readonly && is so.vmdk readonly &&
   nbdkit -r -U - file ms.vmdk --filter="$VMDK_FILTER" \
          --run 'nbdinfo --is readonly "$uri"' &&
   can ms.vmdk multi-conn && can so.vmdk multi-conn; then
    pass "read-only only for streamOptimized and -r; multi-conn"
else
    fail "read-only or multi-conn flags"
fi

# Feature lines (a filter has no --dump-plugin in nbdkit 1.32).
nbdkit --filter="$VMDK_FILTER" null --help > help.txt
if grep -qx 'vmdk_subformats=monolithicSparse,streamOptimized,hostedSparse,COWD' help.txt &&
   grep -q '^vmdk_write=' help.txt && grep -q '^vmdk-gt-cache=' help.txt; then
    pass "--help lists the parameters and features"
else
    fail "--help lacks the vmdk_ lines"
    cat help.txt
fi

# Debug flags reach the filter's engine.
nbdkit -f -v -U - file ms.vmdk --filter="$VMDK_FILTER" -D vmdk.open=1 \
       -D vmdk.cache=1 --run 'nbdinfo --map "$uri"' 2> debug.txt
if grep -q 'debug: image below: sparse v1' debug.txt &&
   grep -q 'loaded grain table' debug.txt; then
    pass "-D vmdk.open=1 and -D vmdk.cache=1"
else
    fail "debug flags print nothing"
    tail -20 debug.txt
fi

# Bad parameters.
if not nbdkit -U - file ms.vmdk --filter="$VMDK_FILTER" vmdk-gt-cache=1K \
       --run true 2> err.txt && grep -q 'too small' err.txt; then
    pass "vmdk-gt-cache=1K refused"
else
    fail "vmdk-gt-cache=1K accepted"
fi

check_summary
