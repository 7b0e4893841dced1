#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Write-path details (requests sent by test-write-nbd with exact flags):
#  1. FUA: advertised, and a FUA write (or zero) into an unallocated
#     grain is on disk before the reply (QEMU reads the file while the
#     server still runs); the same after a flush.
#  2. Refusals: a truncated streamOptimized image, one whose overHead
#     lies past the end of the file, header version 3, disagreeing
#     grain directories, seSparse and readonly=true open read-only
#     (can_write, can_zero and can_trim false, the reason in the log,
#     writes fail with EPERM, the files stay bit-identical); COWD is either
#     writable (then writes read back) or read-only with a reason.
#  3. A custom descriptor with RW FLAT, RDONLY FLAT, NOACCESS FLAT, ZERO
#     and SPARSE extents: RDONLY writes fail with EPERM, NOACCESS with
#     EIO, a ZERO extent takes zeroes but refuses data with EPERM, the
#     writable extents work, and a request spanning a writable and a
#     refused extent changes nothing.
#  4. uncleanShutdown (header byte 72) is 0 until the first write, 1
#     while the server runs after it, 0 after a clean shutdown.
#  5. CID: the first write changes the CID, and only the CID's digits
#     change in the descriptor (embedded, and a separate descriptor
#     file); a server that only reads leaves every file bit-identical.
#  6. trim of whole grains (no parent) punches holes (the file's
#     allocated blocks shrink) and maps as holes; zero with MAY_TRIM
#     deallocates whole grains (map: hole); without MAY_TRIM on a
#     zeroed_grain image it makes zeroed grains (map: zero); FAST_ZERO
#     of part of a data grain is refused with ENOTSUP and changes
#     nothing; flat extents punch holes too.
#  7. A grain-table entry pointing into the metadata: writing there
#     must not overwrite metadata.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img qemu-io od dd cmp stat grep
requires_built test-write-nbd
nbd=$abs_builddir/test-write-nbd

make_scratch
cd "$scratch"

G=65536
M=$((1024 * 1024))

# check WHAT IMAGE CMD...: run test-write-nbd commands on a server of
# IMAGE (extra plugin arguments in $plugin_args); log in server.log.
plugin_args=()
check () {
    local what=$1 img=$2; shift 2
    if serve file="$img" "${plugin_args[@]}" \
            --run "'$nbd' \"\$uri\" $*" 2> server.log; then
        pass "$what"
    else
        fail "$what"; cat server.log
    fi
}

# qemu_reads IMAGE PATTERN OFF LEN: QEMU reads the file (even while our
# server has it open) and finds PATTERN there.
qemu_reads () {
    qemu-io -r -U -f vmdk -c "read -P $2 $3 $4" "$1" 2>&1 | grep -q "read $4/$4"
}

# ---------------------------------------------------------------------
echo "== 1. FUA"
rm -f ./*.vmdk
qemu-img create -q -f vmdk img.vmdk 64M
check "FUA is advertised" img.vmdk is:can_fua:1 is:can_multi_conn:1 \
    is:can_fast_zero:1 is:can_trim:1 is:can_zero:1 is:can_flush:1
start_server file="$scratch/img.vmdk"
"$nbd" "$uri" w:$((3 * G + 100)):5000:0x5a:fua
if qemu_reads img.vmdk 0x5a $((3 * G + 100)) 5000; then
    pass "a FUA write into a new grain is on disk before the reply"
else
    fail "a FUA write is not on disk (its grain-table entry was not written)"
fi
"$nbd" "$uri" w:$((10 * G)):$G:0x5b
if qemu_reads img.vmdk 0x5b $((10 * G)) $G; then
    echo "note: a write without FUA is on disk at once"
fi
"$nbd" "$uri" f
if qemu_reads img.vmdk 0x5b $((10 * G)) $G; then
    pass "a write is on disk after a flush"
else
    fail "a write is not on disk after a flush"
fi
"$nbd" "$uri" w:$((20 * G)):$((2 * G)):0x5c f z:$((20 * G)):$((2 * G)):trim:fua
if qemu_reads img.vmdk 0 $((20 * G)) $((2 * G)); then
    pass "a FUA zero (MAY_TRIM) is on disk before the reply"
else
    fail "a FUA zero is not on disk: QEMU still reads the old data"
fi
"$nbd" "$uri" w:$((30 * G)):$((2 * G)):0x5d f t:$((30 * G)):$((2 * G)):fua \
    w:$((31 * G)):512:0x5e:fua
if qemu_reads img.vmdk 0 $((30 * G)) $G && qemu_reads img.vmdk 0x5e $((31 * G)) 512; then
    pass "FUA trim, then a FUA write into the trimmed grain: on disk"
else
    fail "after a FUA trim and a FUA write QEMU reads other data"
fi
stop_server
qemu-img check -q img.vmdk && pass "FUA: qemu-img check" ||
    fail "FUA: qemu-img check"

# ---------------------------------------------------------------------
echo "== 2. Refusals"
# refused WHAT REASON-REGEX FILE [PLUGIN ARGS...]: read-only export,
# reason in the log, EPERM, every file of the directory unchanged.
refused () {
    local what=$1 reason=$2 img=$3; shift 3
    local before
    before=$(cat ./*.vmdk ./*.raw 2>/dev/null | sha256sum)
    if serve file="$img" "$@" \
            --run "'$nbd' \"\$uri\" is:can_write:0 !EPERM:w:0:512:1 \
                   is:can_zero:0 is:can_trim:0" 2> server.log; then
        pass "$what: read-only, writes fail with EPERM"
    else
        fail "$what: expected a read-only export"; cat server.log
    fi
    if [ -z "$reason" ]; then
        :
    elif grep -Eq -- "$reason" server.log; then
        pass "$what: the log says why: $(grep -Eo -- "$reason" server.log | head -1)"
    else
        fail "$what: no reason matching '$reason' in the log"; cat server.log
    fi
    if [ "$before" = "$(cat ./*.vmdk ./*.raw 2>/dev/null | sha256sum)" ]; then
        pass "$what: files unchanged"
    else
        fail "$what: the files changed"
    fi
}

rm -f ./*.vmdk ./*.raw
truncate -s 8M src.raw
dd if=/dev/urandom of=src.raw bs=64K count=10 conv=notrunc status=none
# A stream image whose last grain was cut short is not written.
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw so.vmdk
head -c $(( $(grain_marker so.vmdk 9) + 100 )) so.vmdk > cut.vmdk
rm so.vmdk
refused "truncated streamOptimized" "the last grain's marker is invalid" \
        cut.vmdk

# New grains go after overHead: one past the end of the file (header
# and footer) would make a file of 512 TiB.
rm -f ./*.vmdk
serve file=oh.vmdk create=true create-type=stream-optimized create-size=8M \
      --run true
put_le oh.vmdk 64 8 $((1 << 40))
put_le oh.vmdk $(( $(stat -c %s oh.vmdk) - 1024 + 64 )) 8 $((1 << 40))
refused "stream overHead past the end of the file" \
        "overHead or the embedded descriptor lies past the end" oh.vmdk

rm -f ./*.vmdk
qemu-img convert -f raw -O vmdk src.raw v3.vmdk
put_u32 v3.vmdk 4 3
refused "header version 3" "version 3" v3.vmdk

rm -f ./*.vmdk
qemu-img convert -f raw -O vmdk src.raw rgd.vmdk
rgd=$(u64 rgd.vmdk 48)
put_u32 rgd.vmdk $((rgd * 512)) 0
refused "redundant GD disagrees" "disagree" rgd.vmdk

rm -f ./*.vmdk
qemu-img convert -f raw -O vmdk src.raw ro.vmdk
refused "readonly=true" "" ro.vmdk readonly=true

mksesparse=$abs_builddir/mksesparse
if [ -x "$mksesparse" ]; then
    rm -f ./*.vmdk
    "$mksesparse" src.raw se-extent.vmdk se.vmdk
    refused seSparse "seSparse.*read-only" se.vmdk
else
    echo "note: mksesparse not built, seSparse skipped"
fi

mkcowd=$abs_builddir/mkcowd
if [ -x "$mkcowd" ]; then
    rm -f ./*.vmdk
    "$mkcowd" -q src.raw cowd.vmdk
    if serve file=cowd.vmdk \
            --run "'$nbd' \"\$uri\" is:can_write:1" 2> server.log; then
        echo "note: COWD is writable"
        check "COWD: writes read back" cowd.vmdk w:7000:3000:0x77 \
            r:7000:3000:0x77 w:$((5 * M)):$G:0x78 f r:$((5 * M)):$G:0x78
        check "COWD: and again after a restart" cowd.vmdk r:7000:3000:0x77 \
            r:$((5 * M)):$G:0x78 r:$((5 * M + G)):$G:0
    else
        # Issue 5 lists COWD/vmfsSparse children as writable; the brief
        # accepts a clear refusal until that lands.
        refused "COWD" "COWD.*read-only" cowd.vmdk
    fi
fi

# ---------------------------------------------------------------------
echo "== 3. Extent access in a custom descriptor"
rm -f ./*.vmdk ./*.raw
for f in a b c; do truncate -s 1M $f.raw; done
printf '\x33%.0s' $(seq 4096) | dd of=b.raw conv=notrunc status=none
printf '\x44%.0s' $(seq 4096) | dd of=a.raw bs=1 seek=$((M - 4096)) \
    conv=notrunc status=none
qemu-img create -q -f vmdk s.vmdk 1M
cat > custom.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="custom"

RW 2048 FLAT "a.raw" 0
RDONLY 2048 FLAT "b.raw" 0
NOACCESS 2048 FLAT "c.raw" 0
RW 2048 ZERO
RW 2048 SPARSE "s.vmdk"

ddb.geometry.cylinders = "10"
EOF
A=0 B=$M C=$((2 * M)) Z=$((3 * M)) S=$((4 * M))
sum_b=$(sha256sum b.raw)
check "custom: RW flat and sparse extents are written" custom.vmdk \
    is:can_write:1 w:100:1000:0x61 r:100:1000:0x61 \
    w:$((S + 3)):70000:0x62 r:$((S + 3)):70000:0x62 f
check "custom: RDONLY fails with EPERM, NOACCESS with EIO" custom.vmdk \
    !EPERM:w:$((B + 10)):10:0x63 !EPERM:z:$B:$G !EIO:w:$((C + 10)):10:0x64 \
    !EIO:z:$C:$G r:$B:4096:0x33 t:$B:$M r:$B:4096:0x33
check "custom: a ZERO extent takes zeroes, refuses data with EPERM" \
    custom.vmdk w:$((Z + 5)):1000:0 z:$Z:$M z:$Z:$M:trim \
    !EPERM:w:$((Z + 5)):1000:0x65 r:$Z:$M:0
check "custom: a write spanning RW then RDONLY fails and changes nothing" \
    custom.vmdk !EPERM:w:$((B - 4096)):8192:0x66 r:$((B - 4096)):4096:0x44
check "custom: a zero spanning RW then RDONLY fails and changes nothing" \
    custom.vmdk !EPERM:z:$((B - 4096)):8192 r:$((B - 4096)):4096:0x44
check "custom: a write over RW, RDONLY and NOACCESS fails, changes nothing" \
    custom.vmdk !EPERM:w:$((B - 512)):$((M + 1024)):0x67 r:$((B - 512)):512:0x44
if [ "$sum_b" = "$(sha256sum b.raw)" ] && [ "$(stat -c %b c.raw)" = 0 ]; then
    pass "custom: RDONLY and NOACCESS files unchanged"
else
    fail "custom: a RDONLY or NOACCESS file changed"
fi

# ---------------------------------------------------------------------
echo "== 4. uncleanShutdown"
rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk img.vmdk 64M
start_server file="$scratch/img.vmdk"
"$nbd" "$uri" r:0:$G:0
v=$(u8 img.vmdk 72)
[ "$v" = 0 ] && pass "uncleanShutdown 0 before the first write" ||
    fail "uncleanShutdown is $v before any write"
"$nbd" "$uri" w:1000:10:1
v=$(u8 img.vmdk 72)
[ "$v" = 1 ] && pass "uncleanShutdown 1 while the server runs after a write" ||
    fail "uncleanShutdown is $v after a write"
stop_server
v=$(u8 img.vmdk 72)
[ "$v" = 0 ] && pass "uncleanShutdown 0 after a clean shutdown" ||
    fail "uncleanShutdown is $v after a clean shutdown"

# ---------------------------------------------------------------------
echo "== 5. CID"
# cid_only_change OLD NEW START LEN: the bytes differing in
# [START, START+LEN) are all within the value of the CID= line.
cid_only_change () {
    local old=$1 new=$2 start=$3 len=$4 pos vstart off n=0 bad=0
    pos=$(grep -boa '^CID=' "$old" | head -1 | cut -d: -f1)
    vstart=$((pos + 4))
    while read -r off _; do
        off=$((off - 1))
        if [ "$off" -lt "$start" ] || [ "$off" -ge $((start + len)) ]; then
            continue
        fi
        n=$((n + 1))
        if [ "$off" -lt "$vstart" ] || [ "$off" -ge $((vstart + 8)) ]; then
            echo "  byte $off changed outside the CID value"
            bad=1
        fi
    done < <(cmp -l "$old" "$new" 2>/dev/null || :)
    if [ $bad = 0 ] && [ $n -gt 0 ]; then
        echo "  CID $(dd if="$old" bs=1 skip=$vstart count=8 status=none) -> $(dd if="$new" bs=1 skip=$vstart count=8 status=none)"
        return 0
    fi
    [ $n -gt 0 ] || echo "  the CID did not change"
    return 1
}

rm -f ./*.vmdk ./*.raw
qemu-img create -q -f vmdk img.vmdk 64M
qemu-io -f vmdk -c 'write -P 1 0 1M' img.vmdk > /dev/null
cp img.vmdk before.vmdk.orig
check "read-only session (rw server, reads and block status only)" img.vmdk \
    r:0:$M:1 map:$M:$((63 * M)):3
if cmp -s img.vmdk before.vmdk.orig; then
    pass "a server that only reads leaves the file bit-identical"
else
    fail "a server that only reads changed the file"; cmp -l img.vmdk before.vmdk.orig | head
fi
check "first write" img.vmdk w:$((5 * M)):100:2
dstart=$(( $(u64 img.vmdk 28) * 512 ))
dlen=$(( $(u64 img.vmdk 36) * 512 ))
if cid_only_change before.vmdk.orig img.vmdk "$dstart" "$dlen"; then
    pass "monolithicSparse: only the CID digits changed in the descriptor"
else
    fail "monolithicSparse: descriptor bytes other than the CID changed"
fi

rm -f ./*.vmdk ./*.orig
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse img.vmdk 3G
for f in img*.vmdk; do cp "$f" "$f.orig"; done
check "twoGbMaxExtentSparse: reads only" img.vmdk r:0:$M:0 map:0:$((3 * 1024 * M)):3
same=1
for f in img*.vmdk; do cmp -s "$f" "$f.orig" || same=0; done
[ $same = 1 ] && pass "twoGbMaxExtentSparse: reads leave every file identical" ||
    fail "twoGbMaxExtentSparse: a read-only session changed a file"
check "twoGbMaxExtentSparse: a write" img.vmdk w:$((2048 * M - 10)):20:3
if cid_only_change img.vmdk.orig img.vmdk 0 "$(stat -c %s img.vmdk)" &&
   [ "$(stat -c %s img.vmdk)" = "$(stat -c %s img.vmdk.orig)" ]; then
    pass "twoGbMaxExtentSparse: only the CID digits changed in img.vmdk"
else
    fail "twoGbMaxExtentSparse: the descriptor file changed beyond the CID"
fi

# ---------------------------------------------------------------------
echo "== 6. trim and zero deallocate"
rm -f ./*.vmdk ./*.orig
qemu-img create -q -f vmdk img.vmdk 64M
check "write 8 MiB" img.vmdk w:$M:$((8 * M)):0x71 f
b1=$(stat -c %b img.vmdk)
check "trim 4 MiB of whole grains" img.vmdk t:$M:$((4 * M)) \
    r:$M:$((4 * M)):0 map:$M:$((4 * M)):3 r:$((5 * M)):$((4 * M)):0x71
b2=$(stat -c %b img.vmdk)
echo "  allocated 512-byte blocks: $b1 before, $b2 after the trim"
if [ $((b1 - b2)) -ge $((4 * M / 512 * 9 / 10)) ]; then
    pass "trim punched holes in the file"
else
    fail "trim did not give the space back ($b1 -> $b2 blocks)"
fi
check "zero MAY_TRIM of whole grains deallocates" img.vmdk \
    z:$((5 * M)):$((2 * M)):trim map:$((5 * M)):$((2 * M)):3 \
    r:$((5 * M)):$((2 * M)):0 r:$((7 * M)):$((2 * M)):0x71
b3=$(stat -c %b img.vmdk)
if [ $((b2 - b3)) -ge $((2 * M / 512 * 9 / 10)) ]; then
    pass "zero with MAY_TRIM punched holes"
else
    fail "zero with MAY_TRIM did not give the space back ($b2 -> $b3)"
fi
check "FAST_ZERO of part of a data grain: ENOTSUP, nothing changed" \
    img.vmdk !ENOTSUP:z:$((7 * M + 100)):1000:fast r:$((7 * M)):$G:0x71 \
    !ENOTSUP:z:$((7 * M)):$((G + 1)):fast:trim r:$((7 * M)):$((2 * G)):0x71 \
    z:$((7 * M)):$G:fast:trim r:$((7 * M)):$G:0
qemu-img check -q img.vmdk && pass "after trim/zero: qemu-img check" ||
    fail "after trim/zero: qemu-img check"
qemu-io -r -f vmdk -c "read -P 0 $M $((4 * M))" -c "read -P 0x71 $((7 * M + G)) $((2 * M - G))" \
    img.vmdk | grep -c "read" | grep -q 2 && pass "QEMU reads the trimmed image" ||
    fail "QEMU reads other data from the trimmed image"

rm -f ./*.vmdk
qemu-img create -q -f vmdk -o zeroed_grain=on img.vmdk 64M
check "zeroed_grain=on: zero without MAY_TRIM makes zeroed grains" img.vmdk \
    w:$M:$((2 * M)):0x72 f z:$M:$M map:$M:$M:2 r:$M:$M:0 \
    z:$((2 * M)):$M:fast map:$((2 * M)):$M:2 r:$((2 * M)):$M:0 \
    map:$((3 * M)):$M:3
qemu-img check -q img.vmdk && pass "zeroed grains: qemu-img check" ||
    fail "zeroed grains: qemu-img check"
qemu-io -r -f vmdk -c "read -P 0 $M $((2 * M))" img.vmdk | grep -q "read" &&
    pass "QEMU reads the zeroed grains as zeroes" || fail "QEMU reads zeroed grains"

rm -f ./*.vmdk
qemu-img create -q -f vmdk -o subformat=monolithicFlat img.vmdk 64M
check "flat: write" img.vmdk w:0:$((8 * M)):0x73 f
b1=$(stat -c %b img-flat.vmdk)
check "flat: trim and zero MAY_TRIM" img.vmdk t:0:$((2 * M)) \
    z:$((2 * M)):$((2 * M)):trim r:$((2 * M)):$((2 * M)):0 \
    r:$((4 * M)):$((4 * M)):0x73
b2=$(stat -c %b img-flat.vmdk)
echo "  flat file blocks: $b1 -> $b2"
if [ $((b1 - b2)) -ge $((4 * M / 512 * 9 / 10)) ]; then
    pass "flat: trim and zero punched holes"
else
    fail "flat: trim/zero did not punch holes ($b1 -> $b2)"
fi

# ---------------------------------------------------------------------
echo "== 7. A grain-table entry pointing into the metadata"
rm -f ./*.vmdk
qemu-img create -q -f vmdk img.vmdk 64M
qemu-io -f vmdk -c 'write -P 0x74 0 128k' img.vmdk > /dev/null
gd=$(u64 img.vmdk 56)
gt0=$(u32 img.vmdk $((gd * 512)))
rgd=$(u64 img.vmdk 48)
rgt0=$(u32 img.vmdk $((rgd * 512)))
# Grain 5 of table 0 (both copies) -> the grain directory's sector.
put_u32 img.vmdk $((gt0 * 512 + 5 * 4)) "$gd"
put_u32 img.vmdk $((rgt0 * 512 + 5 * 4)) "$gd"
cp img.vmdk img.vmdk.orig
serve file=img.vmdk \
    --run "'$nbd' \"\$uri\" ?w:$((5 * G)):$G:0x75 ?f" > out.txt 2> server.log || :
cat out.txt
if cmp -s -n $(( (gd + 1) * 512 )) img.vmdk img.vmdk.orig ||
   [ -z "$(cmp -l img.vmdk img.vmdk.orig | awk -v lo=$((gd * 512)) \
          -v hi=$(( (gd + 1) * 512 )) '$1 - 1 >= lo && $1 - 1 < hi')" ]; then
    pass "the grain directory was not overwritten"
else
    fail "a write through a bad entry overwrote the grain directory"
fi
if grep -q "failed" out.txt || grep -qi "read-only" server.log; then
    pass "the write was refused: $(grep -m1 -o 'failed.*' out.txt || grep -m1 -i read-only server.log)"
else
    fail "a write through an entry pointing into the metadata succeeded"
fi

check_summary
