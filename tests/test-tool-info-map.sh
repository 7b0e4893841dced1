#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "vmdk info" and "vmdk map" against qemu-img's view of the same images:
# qemu-made images of every subformat qemu writes (split ones crossing
# an extent boundary), zeroed grains, a chain of three links whose top
# is larger than its parent, images of every type "vmdk convert" makes,
# and every entry of the corpus ($VMDK_CORPUS) when there is one.
#
# - map --json is byte for byte "qemu-img map --output=json";
# - info --json is valid JSON whose virtual-size, create-type, cid,
#   parent-cid, parent, chain length and extents (file, size, grain
#   size) are qemu-img info's; the human form runs too;
# - images qemu-img cannot open are refused by both commands, cleanly,
#   with an error naming the file.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_tool
requires_cmds qemu-img qemu-io jq cmp
requires qemu-img --version

make_scratch big
requires_free_space "$scratch" 512
cd "$scratch"

# check_map WHAT IMAGE: vmdk map --json is qemu-img map's output.
check_map ()
{
    qemu-img map --output=json "$2" > qemu-map.json
    if ! vmdk map --json "$2" > vmdk-map.json 2> err.txt; then
        fail "$1: vmdk map failed: $(cat err.txt)"
    elif cmp -s qemu-map.json vmdk-map.json; then
        pass "$1: map --json is qemu-img map's ($(wc -l < vmdk-map.json) entries)"
    else
        fail "$1: map --json differs from qemu-img map"
        diff -u qemu-map.json vmdk-map.json | head -20
    fi
    if vmdk map "$2" > /dev/null 2> err.txt; then
        pass "$1: map (human) runs"
    else
        fail "$1: vmdk map (human) failed: $(cat err.txt)"
    fi
}

# The fields both tools report, as "name value" lines, from
# "qemu-img info --backing-chain" and "vmdk info --json".
qemu_facts ()
{
    jq -r '(.[0] |
            "virtual-size \(."virtual-size")",
            "create-type \(."format-specific".data."create-type")",
            "cid \(."format-specific".data.cid)",
            "parent-cid \(."format-specific".data."parent-cid")",
            "parent \(."backing-filename" // "null")",
            (."format-specific".data.extents[] |
             "extent \(.filename | split("/") | last) \(."virtual-size")" +
             " \(."cluster-size" // 0)")),
           "links \(length)"' "$1"
}

vmdk_facts ()
{
    jq -r '"virtual-size \(."virtual-size")",
           "create-type \(."create-type")",
           "cid \(.cid)",
           "parent-cid \(."parent-cid")",
           "parent \(.parent // "null")",
           (.extents[] |
            "extent \(.file) \(.sectors * 512) \(."grain-size" // 0)"),
           "links \(.chain | length)"' "$1"
}

# check_info WHAT IMAGE: vmdk info --json (valid JSON) tells what
# qemu-img info does.
check_info ()
{
    qemu-img info --backing-chain --output=json "$2" > qemu-info.json
    if ! vmdk info --json "$2" > vmdk-info.json 2> err.txt; then
        fail "$1: vmdk info failed: $(cat err.txt)"
        return
    fi
    qemu_facts qemu-info.json > qemu-facts
    if ! vmdk_facts vmdk-info.json > vmdk-facts; then
        fail "$1: vmdk info --json is not valid JSON"
    elif diff -u qemu-facts vmdk-facts; then
        pass "$1: info --json agrees with qemu-img info"
    else
        fail "$1: info --json disagrees with qemu-img info"
    fi
    if vmdk info "$2" > info.txt 2> err.txt && grep -q '^virtual size: ' info.txt
    then
        pass "$1: info (human) runs"
    else
        fail "$1: vmdk info (human) failed: $(cat err.txt)"
    fi
}

check_image ()
{
    check_map "$@"
    check_info "$@"
}

# refused WHAT IMAGE: both commands fail cleanly, naming the file.
refused ()
{
    tool_refuses "$1: info" "^vmdk: .*$(basename "$2")" info --json "$2"
    tool_refuses "$1: map" "^vmdk: .*$(basename "$2")" map --json "$2"
}

# qemu-made images of every subformat.  Flat ones compare as qemu's:
# a host hole is "data" and "zero" at its place in the file.
two=$((2 * 1024 * 1024 * 1024))
make_reference ref.raw $((80 * 1024 * 1024))
make_reference big.raw $((two + 64 * 1024 * 1024))
for sub in monolithicSparse streamOptimized monolithicFlat; do
    qemu-img convert -f raw -O vmdk -o subformat=$sub ref.raw q-$sub.vmdk
    check_image "qemu $sub" q-$sub.vmdk
done
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    qemu-img convert -f raw -O vmdk -o subformat=$sub big.raw q-$sub.vmdk
    check_image "qemu $sub (2 extents)" q-$sub.vmdk
done

# Zeroed grains (present, zero), next to data and holes.
qemu-img create -q -f vmdk -o zeroed_grain=on zg.vmdk 16M
qemu-io -f vmdk -c 'write -P 7 0 192k' -c 'write -z 64k 64k' \
        -c 'write -z 1M 128k' zg.vmdk > /dev/null
check_image "zeroed grains" zg.vmdk

# A chain of three links, the top larger than the others: depth,
# present, and past the parent's end.
qemu-img create -q -f vmdk c0.vmdk 8M
qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -P 1 6M 64k' c0.vmdk > /dev/null
qemu-img create -q -f vmdk -b c0.vmdk -F vmdk c1.vmdk 8M
qemu-io -f vmdk -c 'write -P 2 512k 64k' -c 'write -P 2 3M 64k' c1.vmdk > /dev/null
qemu-img create -q -f vmdk -b c1.vmdk -F vmdk c2.vmdk 12M
qemu-io -f vmdk -c 'write -P 3 3M 128k' -c 'write -P 3 10M 64k' c2.vmdk > /dev/null
check_image "chain, top" c2.vmdk
check_image "chain, middle" c1.vmdk

# What vmdk convert writes, of every layout qemu-img reads.
for t in monolithic-sparse monolithic-flat split-sparse stream-optimized \
         vmfs-sparse; do
    vmdk convert -t "$t" ref.raw "v-$t.vmdk"
    check_image "vmdk convert -t $t" "v-$t.vmdk"
done

# Strings a descriptor may hold: quotes, backslashes, tabs, DEL, a
# windows-1252 byte, UTF-8 (2 and 4 bytes) and an encoded surrogate
# (not UTF-8): info --json is still valid JSON, each byte kept.
truncate -s 1M weird.img
printf '%s\n' '# Disk DescriptorFile' 'CID=12345678' \
       'createType="monolithicFlat"' 'RW 2048 FLAT "weird.img" 0' > weird.vmdk
printf 'ddb.weird = "a"b\\c\td\x7fe\xe9f\xc3\xa9g\xf0\x9f\x98\x80h\xed\xa0\x80i"\n' \
       >> weird.vmdk
# Bytes that are not UTF-8 become the code points of the same values.
printf 'a"b\\c\td\x7fe\xc3\xa9f\xc3\xa9g\xf0\x9f\x98\x80h\xc3\xad\xc2\xa0\xc2\x80i\n' \
       > weird.want
if vmdk info --json weird.vmdk | jq -r '.ddb."ddb.weird"' > weird.got &&
   cmp weird.want weird.got; then
    pass "hostile strings: valid JSON, every byte kept"
else
    fail "hostile strings: $(od -c weird.got)"
fi

# Not VMDKs, or broken ones.
refused "a raw file" ref.raw
head -c 300 q-monolithicSparse.vmdk > cut.vmdk
refused "a truncated sparse header" cut.vmdk
tool_refuses "a missing file" '^vmdk: missing.vmdk: No such file' \
             info missing.vmdk

# The corpus.
: "${VMDK_CORPUS:=$abs_srcdir/../../shared/corpus}"
if [ -f "$VMDK_CORPUS/expected.tsv" ]; then
    while IFS=$'\t' read -r name main size sha readable size_source \
          producer ctype prep qerr; do
        [ "$name" != name ] && [ -n "$name" ] || continue
        dir=$(dirname "$main")
        rm -rf "$dir"
        mkdir -p "$dir"
        cp -r "$VMDK_CORPUS/$dir/." "$dir/"
        chmod -R u+w "$dir"
        if [ "$prep" != - ]; then (eval "$prep") < /dev/null; fi
        if [ "$readable" = yes ]; then
            check_image "corpus $name" "$main"
        else
            refused "corpus $name" "$main"
        fi
        rm -rf "$dir"
    done < "$VMDK_CORPUS/expected.tsv"
else
    echo "$0: no corpus at '$VMDK_CORPUS': its images are not checked"
fi

check_summary
