#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# vmdk check [--json] [--repair]:
#  1. Clean images of every kind exit 0: made by qemu-img (sparse,
#     stream, split, flat, zeroed grains, a chain), made and written by
#     the plugin (create=true, every create type but stream-optimized,
#     which create refuses; and a qemu-img stream the plugin wrote to),
#     and the corpus's readable images ($VMDK_CORPUS, if present).
#  2. Images corrupted one way at a time exit 2 and name the finding
#     (its code in the JSON, which jq must parse): the redundant table
#     or directory disagreeing, entries past the end of the file or
#     over metadata, two entries naming one grain, a directory or table
#     outside the file, a stream's footer gone (torn, or cut short), a
#     grain marker that is not its grain's, an extent line longer than
#     its file, a parentCID that is not the parent's CID, the
#     uncleanShutdown flag; a COWD grain past the end of the file and a
#     next free sector behind the grains.  Leaked space alone exits 3.
#  3. --repair, then a check exits 0, qemu-img check agrees, and every
#     valid grain reads as before (qemu-img convert -O raw, compared
#     with cmp): where the redundant copy had the good entry, the disk
#     reads as it did before the damage.  What cannot be repaired (a
#     stream cut short, an extent line, a CID) is refused, and the
#     image is left byte for byte as it was.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img qemu-io jq cmp dd od truncate sed
requires qemu-img --version

vmdk=${VMDK_TOOL:-$abs_top_builddir/tool/vmdk}
check_stream=$abs_builddir/check-stream
if [ ! -x "$vmdk" ]; then
    echo "$0: $vmdk not built: test skipped"
    exit 77
fi

make_scratch
cd "$scratch"

K=1024
G64=$((64 * K))

# ---------------------------------------------------------------------
# Bytes of a file.

peek32 ()
{
    od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '
}

peek64 ()
{
    od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '
}

# poke FILE OFFSET BYTES VALUE: VALUE as BYTES little-endian bytes.
poke ()
{
    local f=$1 off=$2 n=$3 v=$4 i s=
    for (( i = 0; i < n; i++ )); do
        s+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 255 )))
    done
    printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# ---------------------------------------------------------------------
# Running the check.

# expect_check STATUS IMAGE [CODE...]: "vmdk check --json IMAGE" exits
# STATUS and names every CODE among its findings.  Its JSON is kept in
# json/, all of which jq parses at the end (jq is slow to start).
mkdir json
checks=0
expect_check ()
{
    local want=$1 img=$2 rc=0 out
    shift 2
    out=json/$(( checks++ )).json
    "$vmdk" check --json "$img" > "$out" 2> check.err || rc=$?
    check_no_crash "$rc" check.err
    if [ "$rc" -ne "$want" ]; then
        cat "$out" check.err
        echo "$0: check of $img exited $rc, expected $want" >&2
        return 1
    fi
    if [ $# -gt 0 ] &&
       ! jq -e '[.findings[].code] as $c |
                all ($ARGS.positional[]; . as $x | $c | index ($x) != null)' \
            "$out" --args "$@" > /dev/null; then
        cat "$out"
        echo "$0: check of $img does not name all of: $*" >&2
        return 1
    fi
}

# repair_to IMAGE REF [STATUS]: "vmdk check --repair" exits STATUS
# (default 0: it is the status of its double check), a check then exits
# STATUS, qemu-img check finds nothing wrong, and the disk reads as the
# raw file REF.
repair_to ()
{
    local img=$1 ref=$2 want=${3:-0} rc=0
    "$vmdk" check --repair --json "$img" > repair.json 2> repair.err || rc=$?
    check_no_crash "$rc" repair.err
    cp repair.json json/$(( checks++ )).json
    if [ "$rc" -ne "$want" ] || ! jq -e '.repaired > 0' repair.json \
                                     > /dev/null; then
        cat repair.json repair.err
        echo "$0: repair of $img exited $rc" >&2
        return 1
    fi
    expect_check "$want" "$img"
    qemu-img check "$img" > /dev/null
    qemu-img convert -O raw "$img" after.raw
    cmp after.raw "$ref"
}

# refuse_repair IMAGE STATUS: --repair changes nothing and exits STATUS.
refuse_repair ()
{
    local img=$1 want=$2 rc=0
    sha256sum "$img" > before.sum
    "$vmdk" check --repair --json "$img" > repair.json 2> repair.err || rc=$?
    check_no_crash "$rc" repair.err
    jq -e '.["not-repaired"] > 0 and .repaired == 0' repair.json > /dev/null
    [ "$rc" -eq "$want" ]
    sha256sum -c --quiet before.sum
}

# ---------------------------------------------------------------------
# 1. Clean images.

# A 40 MiB disk: data in grains 0-2, 5, 100, 520 (the second grain
# table) and the last, 639; zeroes elsewhere.
truncate -s $((40 * K * K)) orig.raw
for g in 0 1 2 5 100 520 639; do
    write_random orig.raw $((g * G64)) $G64
done

for sub in monolithicSparse streamOptimized; do
    qemu-img convert -f raw -O vmdk -o subformat=$sub orig.raw q-$sub.vmdk
    expect_check 0 q-$sub.vmdk
done
for sub in twoGbMaxExtentSparse monolithicFlat twoGbMaxExtentFlat; do
    mkdir q-$sub
    qemu-img convert -f raw -O vmdk -o subformat=$sub orig.raw q-$sub/d.vmdk
    expect_check 0 q-$sub/d.vmdk
done
qemu-img create -q -f vmdk -o zeroed_grain=on q-zg.vmdk 4M
qemu-io -f vmdk -c "write -P 0x55 0 64k" -c "write -z 64k 128k" q-zg.vmdk \
    > /dev/null
expect_check 0 q-zg.vmdk
mkdir chain
cp q-monolithicSparse.vmdk chain/base.vmdk
(cd chain && qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk &&
     qemu-io -f vmdk -c "write -P 0xaa 128k 64k" child.vmdk > /dev/null)
expect_check 0 chain/child.vmdk

# The plugin's images, written to: data across the split-extent
# boundary, zeroes, a trim of whole grains (vmfs-sparse grains are one
# sector: a trim leaves sectors the host cannot give back, which are
# rightly leaks, tested below).
split=$((2047 * K * K))
for t in monolithic-sparse monolithic-flat split-sparse split-flat \
         vmfs-flat vmfs-thin vmfs-sparse; do
    ops="-c 'write -P 0x11 0 200k' -c 'write -P 0x22 $((split - G64)) 128k'"
    ops+=" -c 'write -z 64k 64k'"
    [ $t = vmfs-sparse ] || ops+=" -c 'discard $((10 * G64)) 128k'"
    mkdir p-$t
    (cd p-$t &&
         nbdkit -U - "$VMDK_PLUGIN" file=d.vmdk create=true \
                create-size=$((split + 3 * G64)) create-type=$t \
                --run "qemu-io -f raw $ops \"\$uri\"" > /dev/null)
    expect_check 0 p-$t/d.vmdk
done

# A qemu-img stream the plugin wrote new grains to (a footer now).
cp q-streamOptimized.vmdk p-stream.vmdk
nbdkit -U - "$VMDK_PLUGIN" file=p-stream.vmdk \
       --run 'qemu-io -f raw -c "write -P 0x33 $((300 * 65536)) 128k" \
                "$uri"' > /dev/null
[ "$(peek64 p-stream.vmdk 56)" = 18446744073709551615 ]   # GD_AT_END
expect_check 0 p-stream.vmdk
qemu-img convert -O raw p-stream.vmdk stream.raw

# The corpus: every image qemu-img reads is clean.
: "${VMDK_CORPUS:=$abs_srcdir/../../shared/corpus}"
if [ -f "$VMDK_CORPUS/expected.tsv" ]; then
    mkdir corpus
    while IFS=$'\t' read -r name main _ _ readable _ _ _ prep _; do
        [ "$readable" = yes ] || continue
        cp -r "$VMDK_CORPUS/$name" corpus/
        chmod -R u+w "corpus/$name"
        if [ "$prep" != - ]; then (cd corpus && eval "$prep"); fi
        expect_check 0 "corpus/$main"
        rm -rf "corpus/$name"
    done < <(tail -n +2 "$VMDK_CORPUS/expected.tsv")
else
    echo "$0: no corpus: its images are not checked"
fi

# ---------------------------------------------------------------------
# 2 and 3. Corruptions of a monolithicSparse image, one at a time.

base=q-monolithicSparse.vmdk
gd=$(( $(peek64 $base 56) * 512 ))
rgd=$(( $(peek64 $base 48) * 512 ))
gt0=$(( $(peek32 $base $gd) * 512 ))
rgt0=$(( $(peek32 $base $rgd) * 512 ))
size=$(stat -c %s $base)
past_eof=$(( size / 512 + 1000 ))

# damaged NAME: a fresh copy of the base image.
damaged ()
{
    cp $base "$1"
}

# zeroed REF GRAIN: orig.raw with that grain zeroed, in REF.
zeroed ()
{
    cp orig.raw "$1"
    write_zeroes "$1" $(($2 * G64)) $G64
}

# The redundant table disagrees: it is rebuilt from the primary.
damaged rgt.vmdk
poke rgt.vmdk $((rgt0 + 5 * 4)) 4 $past_eof
expect_check 2 rgt.vmdk tables-differ
repair_to rgt.vmdk orig.raw

# The primary entry points past the end of the file, the redundant one
# is good: the repair takes it, and grain 5 reads as before.
damaged gte.vmdk
poke gte.vmdk $((gt0 + 5 * 4)) 4 $past_eof
expect_check 2 gte.vmdk grain-past-eof tables-differ
repair_to gte.vmdk orig.raw

# Both copies point past the end: cleared, grain 5 reads as zeroes.
damaged gte2.vmdk
poke gte2.vmdk $((gt0 + 5 * 4)) 4 $past_eof
poke gte2.vmdk $((rgt0 + 5 * 4)) 4 $past_eof
expect_check 2 gte2.vmdk grain-past-eof
zeroed exp.raw 5
repair_to gte2.vmdk exp.raw

# Both copies point into the grain directory.
damaged meta.vmdk
poke meta.vmdk $((gt0 + 100 * 4)) 4 $((gd / 512))
poke meta.vmdk $((rgt0 + 100 * 4)) 4 $((gd / 512))
expect_check 2 meta.vmdk grain-in-metadata
zeroed exp.raw 100
repair_to meta.vmdk exp.raw

# Two entries name grain 0's sectors: the second gets a copy, and both
# read as they did (grain 1's own data is then leaked space).
damaged shared.vmdk
poke shared.vmdk $((gt0 + 1 * 4)) 4 "$(peek32 $base $gt0)"
poke shared.vmdk $((rgt0 + 1 * 4)) 4 "$(peek32 $base $gt0)"
expect_check 2 shared.vmdk grain-shared leaked-space
qemu-img convert -O raw shared.vmdk exp.raw
repair_to shared.vmdk exp.raw

# The redundant directory lost table 1: a new redundant table.
damaged rgde.vmdk
poke rgde.vmdk $((rgd + 4)) 4 0
expect_check 2 rgde.vmdk directories-differ
repair_to rgde.vmdk orig.raw
[ "$(stat -c %s rgde.vmdk)" -gt "$size" ]

# The primary directory entry of table 1 points past the end: a new
# table from the redundant one.
damaged gde.vmdk
poke gde.vmdk $((gd + 4)) 4 $past_eof
expect_check 2 gde.vmdk table-past-eof
repair_to gde.vmdk orig.raw

# The whole redundant directory lies past the end: rebuilt.
damaged rgdoff.vmdk
poke rgdoff.vmdk 48 8 $past_eof
expect_check 2 rgdoff.vmdk directory-outside-file
repair_to rgdoff.vmdk orig.raw
[ "$(peek64 rgdoff.vmdk 48)" -lt "$past_eof" ]

# uncleanShutdown left set.
damaged unclean.vmdk
poke unclean.vmdk 72 1 1
expect_check 2 unclean.vmdk unclean-shutdown
repair_to unclean.vmdk orig.raw
[ "$(od -An -tu1 -j 72 -N1 unclean.vmdk | tr -d ' ')" = 0 ]

# Leaked space: grain 2 named by no table (a middle leak, moved into
# by the last grain), and space appended at the end.
damaged leak.vmdk
poke leak.vmdk $((gt0 + 2 * 4)) 4 0
poke leak.vmdk $((rgt0 + 2 * 4)) 4 0
expect_check 3 leak.vmdk leaked-space
zeroed exp.raw 2
repair_to leak.vmdk exp.raw
[ "$(stat -c %s leak.vmdk)" -lt "$size" ]
damaged tail.vmdk
write_random tail.vmdk "$size" $((2 * G64))
expect_check 3 tail.vmdk leaked-space
repair_to tail.vmdk orig.raw
[ "$(stat -c %s tail.vmdk)" -eq "$size" ]

# ---------------------------------------------------------------------
# Descriptors and chains.

# An extent line longer than its flat file: not repairable.
cp -r q-monolithicFlat flatbad
sectors=$(( 40 * K * 2 ))
sed -i "s/^RW $sectors FLAT/RW $((sectors + 8)) FLAT/" flatbad/d.vmdk
expect_check 2 flatbad/d.vmdk extent-size
refuse_repair flatbad/d.vmdk 2

# An extent line that disagrees with its sparse file's capacity.
cp -r q-twoGbMaxExtentSparse sparsebad
sed -i "s/^RW $sectors SPARSE/RW $((sectors + 128)) SPARSE/" sparsebad/d.vmdk
expect_check 2 sparsebad/d.vmdk extent-size
refuse_repair sparsebad/d.vmdk 2

# The parent's CID changed after the snapshot.
cp -r chain chainbad
cid=$(( $(grep -boa '^CID=' chainbad/base.vmdk | head -n1 | cut -d: -f1) + 4 ))
old=$(grep -a -m1 '^CID=' chainbad/base.vmdk | cut -d= -f2 | tr -dc 0-9a-f)
printf "%0${#old}x" $(( (16#$old + 1) % (1 << (4 * ${#old})) )) |
    dd of=chainbad/base.vmdk bs=1 seek=$cid conv=notrunc status=none
expect_check 2 chainbad/child.vmdk cid-mismatch
refuse_repair chainbad/child.vmdk 2

# ---------------------------------------------------------------------
# Streams.

stream_size=$(stat -c %s p-stream.vmdk)

# A writer crashed: the footer is gone, uncleanShutdown set.  The tail
# is rewritten from the markers; tests/check-stream agrees.
cp p-stream.vmdk torn.vmdk
truncate -s $((stream_size - 1536)) torn.vmdk
poke torn.vmdk 72 1 1
expect_check 2 torn.vmdk footer-missing unclean-shutdown
repair_to torn.vmdk stream.raw
# (qemu-img writes the CID without leading zeroes, which VMware's
# importers, and so check-stream, refuse: then it is not asked.)
cid=$(grep -a -m1 '^CID=' torn.vmdk | cut -d= -f2 | tr -dc 0-9a-f)
if [ -x "$check_stream" ] && [ ${#cid} -eq 8 ]; then
    "$check_stream" -q torn.vmdk
fi

# Cut short with the header saying it was closed cleanly: the lost end
# held grains, so the repair refuses.
cp p-stream.vmdk cut.vmdk
truncate -s $((stream_size - 1536)) cut.vmdk
expect_check 2 cut.vmdk footer-missing
refuse_repair cut.vmdk 2

# qemu-img's streams keep a redundant directory: an entry of the
# primary table pointing at another grain's marker takes the redundant
# one's value.
qs=q-streamOptimized.vmdk
sgt0=$(( $(peek32 $qs $(( $(peek64 $qs 56) * 512 ))) * 512 ))
cp $qs swrong.vmdk
poke swrong.vmdk $((sgt0 + 100 * 4)) 4 "$(peek32 $qs $((sgt0 + 5 * 4)))"
expect_check 2 swrong.vmdk grain-marker-bad tables-differ
repair_to swrong.vmdk orig.raw

# The end-of-stream marker after the footer is damaged: rewritten.
cp p-stream.vmdk eos.vmdk
poke eos.vmdk $((stream_size - 512 + 12)) 4 7
expect_check 2 eos.vmdk eos-missing
repair_to eos.vmdk stream.raw

# A grain table marker of an unknown type: the walk cannot go on, and
# the layout is not repaired (the tables it hides are sound).
cp p-stream.vmdk gtmarker.vmdk
gtm=$(( $(peek32 p-stream.vmdk $(( $(peek64 p-stream.vmdk \
         $((stream_size - 1024 + 56))) * 512 ))) * 512 - 512 ))
[ "$(peek32 gtmarker.vmdk $((gtm + 12)))" = 1 ]       # a GT marker
poke gtmarker.vmdk $((gtm + 12)) 4 9
expect_check 2 gtmarker.vmdk bad-marker
refuse_repair gtmarker.vmdk 2

# A grain marker damaged (its lba no grain's): the entry naming it is
# cleared and the grain reads as zeroes.  The marker's space stays
# (a stream is not compacted in place): a leak, exit 3.
cp $qs marker.vmdk
poke marker.vmdk $(( $(peek32 $qs $((sgt0 + 100 * 4))) * 512 )) 8 1
expect_check 2 marker.vmdk grain-marker-bad orphan-grain
zeroed exp.raw 100
repair_to marker.vmdk exp.raw 3

# ---------------------------------------------------------------------
# COWD (vmfs-sparse, one-sector grains): a small disk, since qemu-img
# reads such images a sector at a time.

mkdir cowd
nbdkit -U - "$VMDK_PLUGIN" file=cowd/d.vmdk create=true create-size=8M \
       create-type=vmfs-sparse \
       --run 'qemu-io -f raw -c "write -P 0x11 0 200k" \
                -c "write -P 0x22 4M 128k" "$uri"' > /dev/null
expect_check 0 cowd/d.vmdk
qemu-img convert -O raw cowd/d.vmdk cowd.raw
cowd=cowd/d-delta.vmdk
cgt0=$(( $(peek32 $cowd $(( $(peek32 $cowd 20) * 512 ))) * 512 ))

# A grain past the end of the file: cleared.
cp -r cowd cowd1
poke cowd1/d-delta.vmdk $((cgt0 + 3 * 4)) 4 $(( $(stat -c %s $cowd) / 512 + 9 ))
expect_check 2 cowd1/d.vmdk grain-past-eof
cp cowd.raw exp.raw
write_zeroes exp.raw $((3 * 512)) 512
repair_to cowd1/d.vmdk exp.raw

# The next free sector behind the grains: raised.
cp -r cowd cowd2
poke cowd2/d-delta.vmdk 28 4 8
expect_check 2 cowd2/d.vmdk next-free-too-low
repair_to cowd2/d.vmdk cowd.raw

# A trim leaves one-sector grains the host cannot deallocate: leaks;
# the repair moves grains into them and cuts the file.
cp -r cowd cowd3
nbdkit -U - "$VMDK_PLUGIN" file=cowd3/d.vmdk \
       --run 'qemu-io -f raw -c "discard 64k 64k" "$uri"' > /dev/null
expect_check 3 cowd3/d.vmdk leaked-space
qemu-img convert -O raw cowd3/d.vmdk exp.raw
repair_to cowd3/d.vmdk exp.raw

# Every JSON output above parses, with the keys documented.
jq -e -s 'all (.[]; .findings and .corruptions != null)' json/*.json \
    > /dev/null
