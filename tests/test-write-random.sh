#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Random writes on every writable subformat (test-write-random.c):
# a seeded sequence of writes, zeroes (MAY_TRIM, FAST_ZERO), trims and
# flushes through the plugin, checked against a raw model, then with
# the server gone:
#   - qemu-img check finds no errors (leaked grains allowed: status 3),
#   - qemu-img compare finds the image identical to the model,
#   - a second session with another seed on the reopened image, checked
#     again the same way,
#   - a third server reads every byte (no block status) equal to the
#     model.
# Images: monolithicSparse, twoGbMaxExtentSparse (4.6 GiB: 3 extent
# files), monolithicFlat, twoGbMaxExtentFlat (4.6 GiB), zeroed_grain=on,
# a custom extent list (FLAT, SPARSE, zeroed-grain SPARSE, FLAT at an
# offset), vmfs, COWD (mkcowd), streamOptimized (qemu-img's and a new
# one), and snapshot children (with and without zeroed grains) of a
# base with data, whose file must not change.
#
# TEST_WRITE_SEED=N repeats a run (the seed is printed); TEST_WRITE_OPS
# sets the number of operations of the first session (default 500).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit nbdcopy qemu-img qemu-io cmp sha256sum
requires_built test-write-random
prog=$abs_builddir/test-write-random

make_scratch
cd "$scratch"

seed=${TEST_WRITE_SEED:-$(( (RANDOM << 15 | RANDOM) ))}
ops=${TEST_WRITE_OPS:-500}
echo "$0: seed $seed (TEST_WRITE_SEED=$seed repeats this run)"

# check_image WHAT IMAGE: qemu-img check (0, or 3 = leaks only) and
# compare with model.raw.
check_image () {
    check_image_consistent "$1" "$2"
    check_image_equals "$1" "$2" model.raw
}

# session WHAT IMAGE SEED OPS
session () {
    local what=$1 img=$2 s=$3 n=$4
    if serve file="$img" \
            --run "'$prog' \"\$uri\" model.raw $s $n" > session.out 2>&1
    then
        pass "$what: $n random operations (seed $s)"
        tail -1 session.out
    else
        fail "$what: random operations (seed $s)"; cat session.out
        return 1
    fi
}

# run_one WHAT IMAGE: two sessions, then a read of every byte (for
# the big images: every byte that block status does not call a hole,
# to keep the test short).
run_one () {
    local what=$1 img=$2 reader
    session "$what" "$img" "$seed" "$ops" || return 0
    check_image "$what" "$img"
    session "$what (reopened)" "$img" $((seed + 1)) 200 || return 0
    check_image "$what (reopened)" "$img"
    reader='nbdcopy --no-extents "$uri" - | cmp - model.raw'
    if [ "$(stat -c %s model.raw)" -gt $((1024 * 1024 * 1024)) ]; then
        reader='qemu-img compare -q -f raw -F raw model.raw "$uri"'
    fi
    if serve file="$img" --run "$reader"; then
        pass "$what: a new server reads the model's bytes"
    else
        fail "$what: a new server reads different bytes"
    fi
}

# new_image WHAT SIZE QEMU-IMG-OPTIONS: a fresh image and a zero model.
new_image () {
    rm -f ./*.vmdk model.raw
    qemu-img create -q -f vmdk -o "$3" img.vmdk "$2"
    truncate -s "$2" model.raw
}

new_image monolithicSparse 200M subformat=monolithicSparse
run_one monolithicSparse img.vmdk

new_image twoGbMaxExtentSparse 4700M subformat=twoGbMaxExtentSparse
run_one "twoGbMaxExtentSparse 4.6G" img.vmdk

new_image monolithicFlat 200M subformat=monolithicFlat
run_one monolithicFlat img.vmdk

new_image twoGbMaxExtentFlat 4700M subformat=twoGbMaxExtentFlat
run_one "twoGbMaxExtentFlat 4.6G" img.vmdk

new_image zeroed 200M subformat=monolithicSparse,zeroed_grain=on
run_one "monolithicSparse zeroed_grain=on" img.vmdk

# A custom extent list: FLAT, SPARSE, SPARSE with zeroed grains, FLAT
# at an offset in its file, boundaries at odd places.  (The sparse
# extent files carry no embedded descriptor, like VMware's; QEMU reads
# the list only with the "# Extent description" line and createType
# twoGbMaxExtentSparse, used here for the offline checks.)
rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk s1.vmdk 40M
qemu-img create -q -f vmdk -o zeroed_grain=on s2.vmdk 50M
for f in s1.vmdk s2.vmdk; do    # descriptorOffset, descriptorSize = 0
    write_zeroes "$f" 28 16
done
truncate -s 10M f.raw
truncate -s 1M pad.raw
cat > img.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="twoGbMaxExtentSparse"

# Extent description
RW 20480 FLAT "f.raw" 0
RW 81920 SPARSE "s1.vmdk"
RW 102400 SPARSE "s2.vmdk"
RW 1024 FLAT "pad.raw" 1024
EOF
truncate -s $(( (20480 + 81920 + 102400 + 1024) * 512 )) model.raw
TEST_WRITE_SPOTS=$((20480 * 512)),$((102400 * 512)),$((204800 * 512)) \
    run_one "custom extents (FLAT, SPARSE, SPARSE, FLAT)" img.vmdk

# vmfs: one VMFS extent (raw, like FLAT at offset 0).
rm -f ./*.vmdk ./*.raw
truncate -s 100M v-flat.vmdk
cat > img.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 204800 VMFS "v-flat.vmdk"
EOF
truncate -s 100M model.raw
run_one vmfs img.vmdk

# COWD (VMDK3 / vmfsSparse) made by tests/mkcowd from a raw file with
# data, 512-byte and 64 KiB grains (mkcowd -q makes it QEMU-readable).
mkcowd=$abs_builddir/mkcowd
if [ -x "$mkcowd" ]; then
    for g in 1 128; do
        rm -f ./*.vmdk ./*.raw
        truncate -s 100M model.raw
        dd if=/dev/urandom of=model.raw bs=1M count=3 seek=20 \
           conv=notrunc status=none
        dd if=/dev/urandom of=model.raw bs=1M count=1 seek=99 \
           conv=notrunc status=none
        "$mkcowd" -q -g $g model.raw img.vmdk
        run_one "COWD, grain $g sectors" img.vmdk
    done
fi

# streamOptimized: appended to qemu-img's image of a disk with data,
# and a new one made by the plugin.  Rewrites go to new grains, partial
# grains are completed from the stored ones, zeroes unallocate.
rm -f ./*.vmdk ./*.raw
truncate -s 100M model.raw
dd if=/dev/urandom of=model.raw bs=1M count=3 seek=20 conv=notrunc status=none
dd if=/dev/urandom of=model.raw bs=1M count=1 seek=99 conv=notrunc status=none
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized model.raw img.vmdk
run_one "streamOptimized (qemu-img's)" img.vmdk
rm -f ./*.vmdk ./*.raw
truncate -s 100M model.raw
serve file=img.vmdk create=true create-type=stream-optimized \
      create-size=100M --run true
run_one "streamOptimized (new)" img.vmdk

# Snapshot children of a base with data (some of it across the first
# table boundary and up to the end).
for zg in off on; do
    rm -f ./*.vmdk model.raw
    qemu-img create -q -f vmdk base.vmdk 200M
    qemu-io -f vmdk -c 'write -P 0x11 0 5M' -c 'write -P 0x22 31M 3M' \
        -c 'write -P 0x33 100000 200k' -c 'write -P 0x44 199M 1M' \
        -c 'write -P 0x55 64M 64k' base.vmdk > /dev/null
    qemu-img create -q -f vmdk -o zeroed_grain=$zg -b base.vmdk -F vmdk \
        child.vmdk
    qemu-img convert -f vmdk -O raw child.vmdk model.raw
    sum=$(sha256sum base.vmdk)
    run_one "snapshot child (zeroed_grain=$zg)" child.vmdk
    if [ "$sum" = "$(sha256sum base.vmdk)" ]; then
        pass "snapshot child (zeroed_grain=$zg): the base is unchanged"
    else
        fail "snapshot child (zeroed_grain=$zg): the base file changed"
    fi
done

check_summary "seed $seed"
