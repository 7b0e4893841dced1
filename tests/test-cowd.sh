#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# COWD (VMDK3 / ESX vmfsSparse) extents.
#
# Images are written by tests/mkcowd (independent of lib/) from raw
# files, both as a bare COWD file and as a vmfsSparse descriptor naming
# it.  For each: qemu-img convert, the plugin through nbdcopy (with and
# without --no-extents) and the raw source must agree byte for byte, and
# "nbdinfo --map" must match the allocation mkcowd made (and qemu-img
# map's view of it).  Malformed headers, tables and parent names are
# cases of test-malformed-cowd.sh; here, odd but valid headers still
# read.
# A child redo log (mkcowd -p) is read alone (single-link) and through
# the monolithicSparse parent its header names.  Writes: test-cowd-write.sh.
#
# QEMU limit: QEMU 7.2 reads a "CID=" from byte 512 of any sparse file
# it opens and refuses the file (EINVAL) without one, so it cannot open
# a bare COWD file as VMware writes it.  mkcowd -q plants that text in
# the unused tail of the root header; images made without -q (and child
# images, whose parent name covers byte 512) are compared with the raw
# source only.  The descriptor form needs no such help.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img cmp od dd truncate
have_jq=no
if command -v jq >/dev/null 2>&1; then have_jq=yes; fi

mkcowd="$abs_builddir/mkcowd"
make_scratch
cd "$scratch"

K=1024
M=$((1024 * 1024))

# ---------------------------------------------------------------------
# Helpers.

# Extra plugin parameters for plugin_copy and plugin_map (single-link).
plugin_args=()

# plugin_copy IMG OUT [NBDCOPY-OPTS...]
plugin_copy ()
{
    local img="$1" out="$2"
    shift 2
    rm -f "$out"
    nbdkit -U - "$VMDK_PLUGIN" file="$img" "${plugin_args[@]}" \
           --run "nbdcopy $* \"\$uri\" $out"
}

# plugin_map IMG: normalized "nbdinfo --map".
plugin_map ()
{
    nbdkit -U - "$VMDK_PLUGIN" file="$1" "${plugin_args[@]}" \
           --run 'nbdinfo --map "$uri"' |
        awk '{ print $1, $2, $3 }' | normalize_map
}

# qemu_map IMG: normalized "qemu-img map" (data 0, unallocated 3).
qemu_map ()
{
    qemu-img map -f vmdk --output=json "$1" |
        jq -r '.[] | "\(.start) \(.length) \(if .data then 0 else 3 end)"' |
        normalize_map
}

# check_reads IMG RAW QEMU: the plugin (both ways) reads RAW; if QEMU
# is yes, qemu-img does too.
check_reads ()
{
    local img="$1" raw="$2" qemu="$3"
    if [ "$qemu" = yes ]; then
        rm -f qemu.out
        qemu-img convert -f vmdk -O raw "$img" qemu.out
        cmp qemu.out "$raw"
    fi
    plugin_copy "$img" plugin.out
    cmp plugin.out "$raw"
    plugin_copy "$img" plugin.out --no-extents
    cmp plugin.out "$raw"
}

# check_image NAME GRAIN RAW: build NAME.vmdk (bare, QEMU-readable),
# NAME-plain.vmdk (bare, as VMware writes it) and NAME-desc.vmdk (a
# vmfsSparse descriptor) and check them all.
check_image ()
{
    local name="$1" grain="$2" raw="$3"
    "$mkcowd" -q -g "$grain" -D "$name-desc.vmdk" -m "$name.map" \
              "$raw" "$name.vmdk"
    "$mkcowd" -g "$grain" "$raw" "$name-plain.vmdk"
    grep -q 'createType="vmfsSparse"' "$name-desc.vmdk"
    grep -q "VMFSSPARSE \"$name.vmdk\"" "$name-desc.vmdk"

    check_reads "$name.vmdk" "$raw" yes
    check_reads "$name-desc.vmdk" "$raw" yes
    check_reads "$name-plain.vmdk" "$raw" no

    plugin_map "$name.vmdk" > "$name.plugin-map"
    diff -u "$name.map" "$name.plugin-map"
    plugin_map "$name-desc.vmdk" > "$name.plugin-map"
    diff -u "$name.map" "$name.plugin-map"
    if [ "$have_jq" = yes ]; then
        qemu_map "$name.vmdk" > "$name.qemu-map"
        diff -u "$name.map" "$name.qemu-map"
    fi
}

# expect_open_error IMG REGEX: the plugin refuses IMG at startup with a
# message matching REGEX, without crashing.
expect_open_error ()
{
    local r=0
    nbdkit -U - "$VMDK_PLUGIN" file="$1" --run 'nbdinfo "$uri"' \
           > open.log 2>&1 || r=$?
    cat open.log
    if [ "$r" -eq 0 ] || [ "$r" -ge 128 ]; then
        echo "$0: $1: expected an open error, got status $r" >&2
        return 1
    fi
    if grep -E 'Sanitizer|core dumped|Segmentation|Aborted' open.log; then
        echo "$0: $1: crashed" >&2
        return 1
    fi
    if ! grep -Eq -- "$2" open.log; then
        echo "$0: $1: error does not match /$2/" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------
# Good images.

# a: 1-sector grains (a table covers 2 MiB), 9 MiB + 3 sectors: five
# tables, the last partial.  Table 2 is empty (a GD hole); tables 1 and
# 3 are odd, so mkcowd allocates their grains in reverse.  Data at
# sector 0, runs, single sectors, across table boundaries, and in the
# very last sector.
truncate -s $((9 * M + 3 * 512)) a.raw
write_random a.raw 0 $((10 * 512))
write_random a.raw $((100 * K + 512)) 512
write_random a.raw $((2 * M - 3 * 512)) $((7 * 512))     # across tables 0/1
write_random a.raw $((3 * M)) $((64 * K))
write_random a.raw $((3 * M + 128 * K)) 1000             # partial sectors
write_random a.raw $((6 * M + 4 * K)) $((300 * K))
write_random a.raw $((9 * M + 2 * 512)) 512              # last sector
check_image a 1 a.raw

# b: 8-sector grains (16 MiB a table), 40 MiB + 7 sectors: the last
# grain is partial, and table 1 (16-32 MiB) is empty.
truncate -s $((40 * M + 7 * 512)) b.raw
write_random b.raw 4096 $((20 * K))
write_random b.raw $((15 * M)) $((2 * M))                # across tables 0/1
write_random b.raw $((33 * M + 3 * K)) 10
write_random b.raw $((40 * M + 5 * 512)) 100             # in the partial grain
check_image b 8 b.raw

# c: 16-sector grains, one partial table (3 MiB + 5 sectors).
truncate -s $((3 * M + 5 * 512)) c.raw
write_random c.raw $((8 * K)) $((8 * K))
write_random c.raw $((1 * M)) $((1 * M + 512))
write_random c.raw $((3 * M + 4 * 512)) 512
check_image c 16 c.raw

# d: 128-sector grains (256 MiB a table), full: every grain allocated.
rm -f d.raw
write_random d.raw 0 $((12 * M + 64 * K))
check_image d 128 d.raw

# e: 1-sector grains, full, 3 MiB: the second table (odd) has every
# grain out of order, so nothing coalesces there.
rm -f e.raw
write_random e.raw 0 $((3 * M))
check_image e 1 e.raw

# f: empty: no grain tables at all.
truncate -s $((8 * M)) f.raw
check_image f 16 f.raw
test "$(cat f.map)" = "0 $((8 * M)) 3"

# A child (redo log) names its parent in its header (a COWD file has
# no descriptor): the name is reported at open (-D vmdk.open=1) and
# opened as the parent, relative to the child.  A missing parent is an
# open error; single-link serves the child alone, where unallocated
# grains read as zeroes.  QEMU cannot open it (see the top).
"$mkcowd" -g 8 -p "base-disk.vmdk" c.raw child.vmdk
expect_open_error child.vmdk \
    'child.vmdk: parent "base-disk.vmdk": open: .*base-disk.vmdk: No such file'
plugin_args=(single-link=true)
check_reads child.vmdk c.raw no
plugin_map child.vmdk > child.plugin-map
"$mkcowd" -g 8 c.raw c8.vmdk -m c8.map
diff -u c8.map child.plugin-map
plugin_args=()
nbdkit -v -U - "$VMDK_PLUGIN" file=child.vmdk single-link=true \
       -D vmdk.open=1 --run true > child.log 2>&1
cat child.log
grep -q 'flags 0x2 ' child.log
grep -q 'COWD child of "base-disk.vmdk" (parent generation 1)' child.log
# Through the chain: the parent is a monolithicSparse disk (64 KiB
# grains) with data almost everywhere; the child's grains (8 sectors)
# are c.raw's non-zero ones, whole (their zero bytes included), and
# the parent fills every other grain.  The child's grains are those of
# the ranges written into c.raw above, rounded out to 4 KiB.
rm -f base-disk.raw
write_random base-disk.raw 0 $((3 * M + 5 * 512))
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse \
         base-disk.raw base-disk.vmdk
cp base-disk.raw chain.raw
for r in "$((8 * K)) $((8 * K))" "$((M)) $((M + 4 * K))" \
         "$((3 * M)) $((5 * 512))"; do
    set -- $r
    dd if=c.raw of=chain.raw bs=512 skip=$(($1 / 512)) seek=$(($1 / 512)) \
       count=$(($2 / 512)) conv=notrunc status=none
done
check_reads child.vmdk chain.raw no
nbdkit -v -U - "$VMDK_PLUGIN" file=child.vmdk --run true > child.log 2>&1
grep -q 'chain of 2 link' child.log
# Block status: data everywhere (the parent allocates every grain).
plugin_map child.vmdk > child.plugin-map
test "$(cat child.plugin-map)" = "0 $((3 * M + 5 * 512)) 0"

# A descriptor line longer than the header capacity: the rest reads as
# unallocated (zeroes, a hole).  Plugin only: QEMU takes a sparse
# extent's size from its header, not from the line.
sectors=$(( (3 * M + 5 * 512) / 512 ))
sed "s/^RW $sectors VMFSSPARSE/RW $((sectors + 4096)) VMFSSPARSE/" \
    c-desc.vmdk > c-long.vmdk
grep -q "^RW $((sectors + 4096)) VMFSSPARSE" c-long.vmdk
cp c.raw c-long.raw
truncate -s $((sectors * 512 + 4096 * 512)) c-long.raw
check_reads c-long.vmdk c-long.raw no
plugin_map c-long.vmdk > c-long.plugin-map
{ cat c.map; echo "$((sectors * 512)) $((4096 * 512)) 3"; } |
    normalize_map > c-long.map
diff -u c-long.map c-long.plugin-map

# Stale grain-table entries beyond the capacity must not be read: put a
# bogus pointer in the table slot just past the last sector of c.
gt0=$(u32 c.vmdk $((2048 + 0)))
last=$(( (sectors - 1) / 16 ))          # the last (partial) grain
cp c-long.vmdk c-stale.vmdk
sed -i 's/"c.vmdk"/"c-stale-ext.vmdk"/' c-stale.vmdk
cp c.vmdk c-stale-ext.vmdk
put_u32 c-stale-ext.vmdk $((gt0 * 512 + (last + 1) * 4)) 4294967295
check_reads c-stale.vmdk c-long.raw no

# ---------------------------------------------------------------------
# Odd but valid headers.  Offsets: GD entries 24, next free sector 28.

odd_header ()
{
    cp a.vmdk "$1"
    put_u32 "$1" "$2" "$3"
}

# More entries than needed is fine (only the needed ones are read).
odd_header gdmore.vmdk 24 4000000000
check_reads gdmore.vmdk a.raw no

# next free sector past the end is only a debug note.
odd_header nextfree.vmdk 28 4000000000
nbdkit -v -U - "$VMDK_PLUGIN" file=nextfree.vmdk -D vmdk.open=1 --run true \
       > nf.log 2>&1
grep -q 'next free sector 4000000000 is past the end' nf.log
check_reads nextfree.vmdk a.raw no

echo "$0: OK"
