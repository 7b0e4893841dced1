#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "vmdk convert" in every direction, checked with qemu-img compare:
#
# - raw -> every VMDK type (qemu-img check too; a stream image passes
#   check-stream with its grains in order);
# - each subformat qemu-img writes -> raw (by name, and with -t raw);
# - streamOptimized -> monolithicSparse;
# - a chain of three links -> one image, flattened;
# - only data is copied: holes stay holes, runs of zeroes are not
#   stored;
# - -p reports progress; SRC is raw only when it does not claim to be a
#   VMDK (-f overrides); an existing DST is refused and left alone; a
#   conversion that fails removes what it created.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_tool
requires_cmds qemu-img qemu-io jq cmp
requires qemu-img --version

make_scratch big
requires_free_space "$scratch" 512
cd "$scratch"

G=65536
make_reference ref.raw $((80 * 1024 * 1024))
size=$(stat -c %s ref.raw)

# converts WHAT ARGS...: a counted check that "vmdk convert ARGS" works.
converts ()
{
    local what="$1"
    shift
    if vmdk convert "$@" 2> err.txt; then
        pass "$what: converted"
    else
        fail "$what: vmdk convert failed: $(cat err.txt)"
    fi
}

# raw -> every VMDK type.
for t in monolithic-sparse monolithic-flat split-sparse split-flat \
         vmfs-flat vmfs-thin vmfs-sparse stream-optimized; do
    converts "raw -> $t" -t "$t" ref.raw "$t.vmdk"
    check_image_consistent "raw -> $t" "$t.vmdk"
    check_image_equals "raw -> $t" "$t.vmdk" ref.raw
done
if [ -x "$abs_builddir/check-stream" ]; then
    if "$abs_builddir/check-stream" -o stream-optimized.vmdk; then
        pass "raw -> stream-optimized: check-stream -o accepts it"
    else
        fail "raw -> stream-optimized: check-stream -o refuses it"
    fi
fi
converts "raw -> default" ref.raw default.vmdk
if [ "$(vmdk info --json default.vmdk | jq -r '."create-type"')" = \
     monolithicSparse ]; then
    pass "DST.vmdk without -t: monolithicSparse"
else
    fail "DST.vmdk without -t: $(vmdk info --json default.vmdk)"
fi
check_image_equals "raw -> default" default.vmdk ref.raw

# Only data: the raw file's holes and its explicit run of zeroes
# (grains 30-31, see make_reference) are not stored.
# qemu-img convert stores the same grains.
qemu-img convert -f raw -O vmdk ref.raw q.vmdk
vmdk map --json default.vmdk > map.json
data=$(jq '[.[] | select(.data) | .length] | add' map.json)
qemu_data=$(qemu-img map --output=json q.vmdk |
            jq '[.[] | select(.data) | .length] | add')
zeroes=$(jq --argjson a $((30 * G)) --argjson b $((32 * G)) \
            '[.[] | select(.data and .start < $b and .start + .length > $a)]
             | length' map.json)
if [ "$data" -le "$qemu_data" ] && [ "$data" -lt $((size / 8)) ] &&
   [ "$zeroes" -eq 0 ]; then
    pass "only data is stored ($data bytes, qemu-img $qemu_data)"
else
    fail "stored $data bytes (qemu-img $qemu_data), $zeroes entries in" \
         "the run of zeroes"
fi

# Each subformat qemu-img writes -> raw, by name and with -t raw.
for sub in monolithicSparse streamOptimized twoGbMaxExtentSparse \
           monolithicFlat; do
    qemu-img convert -f raw -O vmdk -o subformat=$sub ref.raw q-$sub.vmdk
    converts "$sub -> raw" q-$sub.vmdk q-$sub.raw
    if compare_raw ref.raw q-$sub.raw; then
        pass "$sub -> raw: the same bytes"
    else
        fail "$sub -> raw: other bytes"
    fi
done
converts "-t raw into a .vmdk name" -t raw q-monolithicSparse.vmdk r.vmdk
if compare_raw ref.raw r.vmdk; then
    pass "-t raw: a raw file, whatever its name"
else
    fail "-t raw: not the raw disk"
fi
alloc=$(du -k q-monolithicSparse.raw | cut -f1)
if [ "$alloc" -lt $((size / 1024 / 2)) ]; then
    pass "VMDK -> raw: holes stay holes ($alloc KiB allocated)"
else
    fail "VMDK -> raw: $alloc KiB allocated of $((size / 1024))"
fi

# streamOptimized -> monolithicSparse.
converts "stream -> sparse" q-streamOptimized.vmdk s2m.vmdk
check_image_consistent "stream -> sparse" s2m.vmdk
check_image_equals "stream -> sparse" s2m.vmdk ref.raw

# A chain, flattened: the top larger than its parents.
qemu-img create -q -f vmdk c0.vmdk 8M
qemu-io -f vmdk -c 'write -P 1 0 1M' -c 'write -P 1 6M 64k' c0.vmdk > /dev/null
qemu-img create -q -f vmdk -b c0.vmdk -F vmdk c1.vmdk 8M
qemu-io -f vmdk -c 'write -P 2 512k 64k' -c 'write -P 2 3M 64k' c1.vmdk > /dev/null
qemu-img create -q -f vmdk -b c1.vmdk -F vmdk c2.vmdk 12M
qemu-io -f vmdk -c 'write -P 3 3M 128k' -c 'write -P 3 10M 64k' c2.vmdk > /dev/null
qemu-img convert -f vmdk -O raw c2.vmdk chain.raw
converts "chain -> split-sparse" -t split-sparse c2.vmdk flat.vmdk
check_image_equals "chain -> split-sparse" flat.vmdk chain.raw
if [ "$(vmdk info --json flat.vmdk | jq '.chain | length')" -eq 1 ]; then
    pass "chain: flattened into one link"
else
    fail "chain: the result has a parent"
fi
converts "chain -> raw" c2.vmdk chain-vmdk.raw
if compare_raw chain.raw chain-vmdk.raw; then
    pass "chain -> raw: the same bytes"
else
    fail "chain -> raw: other bytes"
fi

# -p: plain percentage lines when stderr is not a terminal.
"$VMDK_TOOL" convert -p ref.raw progress.vmdk 2> progress.txt
if grep -qx '100%' progress.txt && [ "$(tail -1 progress.txt)" = 100% ] &&
   ! grep -qv '^[0-9]*%$' progress.txt; then
    pass "-p: $(wc -l < progress.txt) percentage lines, ending at 100%"
else
    fail "-p: $(cat progress.txt)"
fi

# What SRC is: a file that claims to be a VMDK and is not valid is an
# error, not raw data; -f raw reads any file as raw.
{ printf '# Disk DescriptorFile\nversion=1\ncreateType="bogus"\n'
  head -c 4096 /dev/zero; } > fake.vmdk
tool_refuses "a broken descriptor" '^vmdk: fake.vmdk: .*bogus' \
             convert fake.vmdk fake.raw
if [ ! -e fake.raw ]; then
    pass "a broken descriptor: nothing created"
else
    fail "a broken descriptor: fake.raw created"
fi
converts "-f raw" -f raw fake.vmdk fake.raw
if cmp fake.vmdk fake.raw; then
    pass "-f raw: the file's bytes"
else
    fail "-f raw: other bytes"
fi
converts "raw -> raw" ref.raw copy.raw
if compare_raw ref.raw copy.raw; then
    pass "raw -> raw: the same bytes"
else
    fail "raw -> raw: other bytes"
fi

# An existing DST is refused and left alone.
for dst in copy.raw default.vmdk; do
    before=$(stat -c '%s %y' "$dst"; sha256sum < "$dst")
    tool_refuses "an existing $dst" "^vmdk: $dst: .*exist" \
                 convert ref.raw "$dst"
    if [ "$before" = "$(stat -c '%s %y' "$dst"; sha256sum < "$dst")" ]; then
        pass "an existing $dst: left alone"
    else
        fail "an existing $dst: changed"
    fi
done

# A conversion that fails half-way removes its destination: a grain
# table entry of the source points past the end of its file.
cp q-monolithicSparse.vmdk bad.vmdk
put_u32 bad.vmdk "$(kdmv_gte_offset bad.vmdk 17)" 4000000
for t in split-sparse raw; do
    tool_refuses "a failed conversion to $t" 'bad.vmdk.*points outside the file' \
                 convert -t "$t" bad.vmdk bad-out
    if [ -z "$(ls bad-out* 2> /dev/null)" ]; then
        pass "a failed conversion to $t: its files are removed"
    else
        fail "a failed conversion to $t: $(ls bad-out*) left"
    fi
done

check_summary
