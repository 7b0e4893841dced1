#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "vmdk create": every type, checked by qemu-img (check, info, and a
# new image reads as zeroes); sizes with nbdkit's suffixes; the adapter
# type and hardware version in the disk database; a delta link with
# --parent; and every refusal, which leaves nothing behind.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_tool
requires_cmds qemu-img jq
requires qemu-img --version

make_scratch big
cd "$scratch"

# Every type, 3 GiB (split types cross into a second extent file),
# but vmfs-sparse: qemu-img takes half a minute to compare 3 GiB of
# one-sector COWD grains.
truncate -s 3G zero-3G.raw
truncate -s 64M zero-64M.raw
declare -A create_type=(
    [monolithic-sparse]=monolithicSparse [monolithic-flat]=monolithicFlat
    [split-sparse]=twoGbMaxExtentSparse [split-flat]=twoGbMaxExtentFlat
    [vmfs-flat]=vmfs [vmfs-thin]=vmfs [vmfs-sparse]=vmfsSparse
    [stream-optimized]=streamOptimized
)
for t in "${!create_type[@]}"; do
    size_name=3G
    if [ "$t" = vmfs-sparse ]; then size_name=64M; fi
    size=$(stat -c %s zero-$size_name.raw)
    if ! vmdk create -t "$t" "$t.vmdk" $size_name 2> err.txt; then
        fail "create -t $t: $(cat err.txt)"
        continue
    fi
    check_image_consistent "create -t $t" "$t.vmdk"
    got=$(qemu-img info --output=json "$t.vmdk" | jq '."virtual-size"')
    if [ "$got" -eq $size ]; then
        pass "create -t $t: qemu-img sees $size bytes"
    else
        fail "create -t $t: qemu-img sees $got bytes, not $size"
    fi
    check_image_equals "create -t $t" "$t.vmdk" zero-$size_name.raw
    got=$(vmdk info --json "$t.vmdk" | jq -r '."create-type"')
    if [ "$got" = "${create_type[$t]}" ]; then
        pass "create -t $t: createType $got"
    else
        fail "create -t $t: createType $got, not ${create_type[$t]}"
    fi
done
n=$(vmdk info --json split-sparse.vmdk | jq '.extents | length')
if [ "$n" -eq 2 ]; then
    pass "split-sparse: 3 GiB in 2 extent files"
else
    fail "split-sparse: $n extents for 3 GiB"
fi
# The default type.
vmdk create default.vmdk 1M
test "$(vmdk info --json default.vmdk | jq -r '."create-type"')" = \
     monolithicSparse

# Sizes as nbdkit takes them.
for s in 1536s:786432 100M:104857600 65536:65536 1g:1073741824 2T:2199023255552
do
    vmdk create "size-${s%%:*}.vmdk" "${s%%:*}"
    got=$(vmdk info --json "size-${s%%:*}.vmdk" | jq '."virtual-size"')
    if [ "$got" -eq "${s##*:}" ]; then
        pass "size ${s%%:*} is ${s##*:} bytes"
    else
        fail "size ${s%%:*} is $got bytes, not ${s##*:}"
    fi
done

# Adapter type and hardware version reach the disk database.
# check_ddb IMAGE ADAPTER VERSION HEADS
check_ddb ()
{
    local got
    got=$(vmdk info --json "$1" |
          jq -r '.ddb | [."ddb.adapterType", ."ddb.virtualHWVersion",
                         ."ddb.geometry.heads"] | join(" ")')
    if [ "$got" = "$2 $3 $4" ]; then
        pass "$1: adapter $2, hardware version $3, $4 heads"
    else
        fail "$1: the disk database says $got, not $2 $3 $4"
    fi
}
vmdk create --adapter-type scsi-lsilogic --hwversion esx65 -c 5 \
     lsi.vmdk 10G
check_ddb lsi.vmdk lsilogic 13 255
vmdk create --adapter-type ide --hwversion 7 ide.vmdk 10G
check_ddb ide.vmdk ide 7 16

# A delta link of the parent's size, named relative to its directory.
mkdir sub
vmdk create sub/base.vmdk 64M
vmdk create --parent base.vmdk sub/snap.vmdk
vmdk info --json sub/snap.vmdk > snap.json
base_cid=$(vmdk info --json sub/base.vmdk | jq .cid)
if [ "$(jq -r .parent snap.json)" = base.vmdk ] &&
   [ "$(jq '."parent-cid"' snap.json)" -eq "$base_cid" ] &&
   [ "$(jq '."virtual-size"' snap.json)" -eq $((64 * 1024 * 1024)) ] &&
   [ "$(jq '.chain | length' snap.json)" -eq 2 ]; then
    pass "--parent: a delta link of the parent's size and CID"
else
    fail "--parent: $(jq -c . snap.json)"
fi
check_image_consistent "--parent" sub/snap.vmdk
got=$(qemu-img info --output=json sub/snap.vmdk | jq -r '."backing-filename"')
if [ "$got" = base.vmdk ]; then
    pass "--parent: qemu-img follows it to base.vmdk"
else
    fail "--parent: qemu-img's backing file is $got"
fi

# Refusals: status 1, the reason, and nothing created or changed (in
# the directory r).
mkdir r
mv default.vmdk monolithic-sparse.vmdk r/
cd r
# refused WHAT PATTERN ARGS...: "vmdk create ARGS" refused, nothing
# changed.
refused ()
{
    local what="$1" pattern="$2"
    shift 2
    fingerprint . > ../before
    tool_refuses "$what" "$pattern" create "$@"
    fingerprint . > ../after
    if cmp -s ../before ../after; then
        pass "$what: nothing changed"
    else
        fail "$what: files changed"
        diff ../before ../after || :
    fi
}
refused "an existing file" "default.vmdk: the file exists already" \
        default.vmdk 1M
refused "an existing extent file" "exists already" \
        -t monolithic-flat monolithic-sparse.vmdk 1M
refused "a size not a multiple of 512" "not a multiple of 512" new.vmdk 1000
refused "size 0" "larger than 0" new.vmdk 0
refused "an unknown suffix" 'unknown suffix "Q"' new.vmdk 1Q
refused "an unknown type" 'unknown type "bogus"' -t bogus new.vmdk 1M
refused "an unknown adapter" 'unknown adapter type "scsi"' \
        --adapter-type scsi new.vmdk 1M
refused "an unknown hardware version" '"esx99" is neither' \
        --hwversion esx99 new.vmdk 1M
refused "compression level 0" "0 is not a level" -c 0 new.vmdk 1M
refused "no size" "expected a SIZE" new.vmdk
refused "a missing parent" "missing.vmdk" --parent missing.vmdk new.vmdk
refused "a flat delta" "cannot be a delta link" \
        -t monolithic-flat --parent default.vmdk new.vmdk
refused "too large" "too large" new.vmdk 3T

check_summary
