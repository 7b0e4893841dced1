#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Writes to COWD (VMDK3 / ESX vmfsSparse) extents.
#
# Images come from tests/mkcowd (independent of lib/), bare and behind a
# vmfsSparse descriptor.  Each is written through the plugin: nbdcopy of
# a raw file over the whole disk, then unaligned qemu-io writes, zeroes
# (with and without unmap) and discards over nbd+unix URIs, in two
# sessions.  The same changes are applied to a raw model.  Afterwards
# qemu-img (which reads COWD on its own) and the plugin must both read
# the model, and the header must be consistent: nextFreeSector covers
# the whole file (the plugin extends the file to it at flush) and every
# grain directory and grain table entry points below it, new grains are
# grain-aligned, and uncleanShutdown is 0 again.
#
# Then a COWD child of a monolithicSparse base, named by the parent
# name in its header (mkcowd -p) and by a descriptor: reads through the
# chain, copy-on-write from the base, base unchanged.  Then images the
# plugin must refuse to write (served read-only, with the reason), the
# next-free sector past the end of the file, and a server killed with
# SIGKILL between flushes.
#
# QEMU limit (see test-cowd.sh): QEMU only opens bare COWD files with a
# "CID=" text at byte 512 (mkcowd -q), so bare children are checked by
# the plugin only.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img qemu-io cmp od dd truncate \
    sha256sum stat

mkcowd="$abs_builddir/mkcowd"
make_scratch
cd "$scratch"

K=1024
M=$((1024 * 1024))

# ---------------------------------------------------------------------
# Helpers.  (Fields of the COWD header: u32 and put_u32 from
# functions.sh.)

# plugin_io IMG CMD...: run qemu-io commands on IMG through the plugin
# (writeback: flushes only where asked, and when qemu-io exits); every
# command must succeed.
plugin_io ()
{
    local img="$1" args="" c
    shift
    for c in "$@"; do args+=" -c $(printf %q "$c")"; done
    if ! serve file="$img" \
         --run "qemu-io -t writeback -f raw \"\$uri\" $args" > io.log 2>&1
    then
        cat io.log
        return 1
    fi
    cat io.log
    check_no_crash 0 io.log
    not grep -Ei 'failed|error' io.log
}

# model_io RAW CMD...: the same commands on the raw model.
model_io ()
{
    local raw="$1" args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$raw" > /dev/null
}

# plugin_copy IMG OUT: read the whole disk through the plugin (with and
# without extents, the same bytes).
plugin_copy ()
{
    rm -f "$2" "$2.2"
    serve file="$1" --run "nbdcopy \"\$uri\" $2"
    serve file="$1" --run "nbdcopy --no-extents \"\$uri\" $2.2"
    cmp "$2" "$2.2"
}

# check_reads IMG MODEL QEMU: the plugin reads MODEL; so does qemu-img
# if QEMU is yes.
check_reads ()
{
    if [ "$3" = yes ]; then
        rm -f qemu.out
        qemu-img convert -f vmdk -O raw "$1" qemu.out
        cmp qemu.out "$2"
    fi
    plugin_copy "$1" plugin.out
    cmp plugin.out "$2"
}

# check_header COWD OLD_NEXT_FREE: the header after a clean close.
# nextFreeSector covers the file (the file ends at it after a flush
# that allocated; a file longer than the field would mean allocations
# it does not cover); no table overlaps the header or the directory and
# each lies below it; every grain lies past the directory and below it;
# grains allocated past OLD_NEXT_FREE (ours) are grain-aligned;
# uncleanShutdown is 0.
check_header ()
{
    local f="$1" old="$2" size nf grain gd n meta gde bad
    size=$(stat -c %s "$f")
    nf=$(u32 "$f" 28)
    grain=$(u32 "$f" 16)
    gd=$(u32 "$f" 20)
    n=$(u32 "$f" 24)
    meta=$(( gd + (n * 4 + 511) / 512 ))
    test "$(u32 "$f" 1648)" -eq 0
    test $((nf * 512)) -ge "$size"
    test "$nf" -ge "$old"
    u32s "$f" $((gd * 512)) "$n" > gdes
    bad=0
    while read -r gde; do
        test "$gde" -eq 0 && continue
        if [ "$gde" -lt "$meta" ] || [ $((gde + 32)) -gt "$nf" ]; then
            echo "$0: $f: grain table at sector $gde outside [$meta, $nf)" >&2
            bad=1
        fi
        u32s "$f" $((gde * 512)) 4096
    done < gdes > gtes
    test "$bad" -eq 0
    awk -v nf="$nf" -v g="$grain" -v meta="$meta" -v old="$old" '
        $1 != 0 && ($1 < meta || $1 + g > nf || ($1 >= old && $1 % g)) {
            print "bad grain-table entry " $1; bad = 1
        }
        END { exit bad }' gtes
}

# ---------------------------------------------------------------------
# Writes to root disks.

# write_image NAME GRAIN OLD NEW ZERO_AT: NAME.vmdk (bare, QEMU-
# readable) and NAME-desc.vmdk (descriptor naming NAME-ext.vmdk) made
# from OLD with GRAIN-sector grains, overwritten with NEW by nbdcopy,
# then unaligned changes; ZERO_AT is an offset where NEW has an empty
# grain table (a GD hole) to write into.
write_image ()
{
    local name="$1" grain="$2" old="$3" new="$4" hole="$5"
    local g=$(( $2 * 512 )) size form img cowd nf0 a b tb
    size=$(stat -c %s "$old")
    # A write across the first table boundary, if the disk has one.
    tb=$((4096 * g))
    if [ "$tb" -ge "$size" ]; then tb=$((size / 2)); fi

    "$mkcowd" -q -g "$grain" "$old" "$name.vmdk"
    "$mkcowd" -q -g "$grain" -D "$name-desc.vmdk" "$old" "$name-ext.vmdk"
    for form in bare desc; do
        if [ $form = bare ]; then img=$name.vmdk; cowd=$name.vmdk
        else img=$name-desc.vmdk; cowd=$name-ext.vmdk; fi
        nf0=$(u32 "$cowd" 28)
        check_reads "$img" "$old" yes

        # Session 1: the whole disk, then unaligned changes, with the
        # unclean flag checked while the server runs.
        cp "$new" model.raw
        serve file="$img" \
              --run "nbdcopy $new \"\$uri\" &&
                      od -An -tu4 -j1648 -N4 $cowd > unclean.txt"
        test "$(tr -d ' ' < unclean.txt)" -eq 1
        test "$(u32 "$cowd" 1648)" -eq 0
        check_reads "$img" model.raw yes
        check_header "$cowd" "$nf0"

        # Unaligned writes: across grains, across a table boundary (the
        # first table covers 4096 grains), into the GD hole, in the last
        # sector; zeroes without unmap (written), with unmap (whole grains
        # deallocated); discard (whole grains deallocated, no parent:
        # they read as zeroes, partial grains keep their data).
        local cmds=(
            "write -P 0x5a 12345 7777"
            "write -P 0x5b $((tb - 1000)) 3000"
            "write -P 0x5c $((hole + 3)) 1000"
            "write -P 0x5d $((size - 100)) 100"
            "flush"
            "write -P 0x5e $((2 * g + 7)) $((3 * g))"
            "write -z $((2 * g + 100)) $((2 * g))"
            "write -z -u $((10 * g)) $((3 * g))"
            "write -z -u $((20 * g + 1)) $((g - 2))"
        )
        plugin_io "$img" "${cmds[@]}" "discard $((30 * g)) $((2 * g))" \
                  "discard $((40 * g + 3)) $((3 * g))"
        a=$((41 * g)); b=$((43 * g))
        model_io model.raw "${cmds[@]}" "write -z $((30 * g)) $((2 * g))" \
                 "write -z $a $((b - a))"
        check_reads "$img" model.raw yes
        check_header "$cowd" "$nf0"
        test "$(u32 "$cowd" $(( 2048 + hole / (4096 * g) * 4 )))" -ne 0

        # Session 2: allocations continue after the last ones.
        plugin_io "$img" "write -P 0x61 $((hole + 5 * g + 11)) $((4 * g))" \
                  "write -P 0x62 $((50 * g)) 1"
        model_io model.raw "write -P 0x61 $((hole + 5 * g + 11)) $((4 * g))" \
                 "write -P 0x62 $((50 * g)) 1"
        check_reads "$img" model.raw yes
        check_header "$cowd" "$nf0"
        qemu-img check -f vmdk "$img"
    done
}

# a: 1-sector grains, 9 MiB + 3 sectors (five 2 MiB tables, the last
# partial).  NEW leaves table 2 (4-6 MiB) empty.
truncate -s $((9 * M + 3 * 512)) a.raw
write_random a.raw 0 $((10 * 512))
write_random a.raw $((2 * M - 3 * 512)) $((7 * 512))
write_random a.raw $((3 * M)) $((64 * K))
write_random a.raw $((6 * M + 4 * K)) $((300 * K))
write_random a.raw $((9 * M + 2 * 512)) 512
truncate -s $((9 * M + 3 * 512)) a-new.raw
write_random a-new.raw 0 1000
write_random a-new.raw $((100 * K)) $((200 * K))
write_random a-new.raw $((3 * M + 32 * K)) $((64 * K))
write_random a-new.raw $((7 * M)) $((M + 5 * 512))
write_image a 1 a.raw a-new.raw $((5 * M))

# b: 8-sector grains (16 MiB tables), 40 MiB + 7 sectors (the last
# grain partial).  NEW leaves table 1 (16-32 MiB) empty.
truncate -s $((40 * M + 7 * 512)) b.raw
write_random b.raw 4096 $((20 * K))
write_random b.raw $((15 * M)) $((M))
write_random b.raw $((40 * M + 5 * 512)) 100
truncate -s $((40 * M + 7 * 512)) b-new.raw
write_random b-new.raw 0 $((8 * K))
write_random b-new.raw $((15 * M + 512)) $((M - 512))
write_random b-new.raw $((33 * M + 3 * K)) 10
write_image b 8 b.raw b-new.raw $((20 * M + 512))

# c: 128-sector grains (64 KiB; 256 MiB tables), 12 MiB + 5 sectors:
# one table, the last grain partial.
truncate -s $((12 * M + 5 * 512)) c.raw
write_random c.raw $((64 * K)) $((200 * K))
write_random c.raw $((10 * M)) $((M))
truncate -s $((12 * M + 5 * 512)) c-new.raw
write_random c-new.raw 0 $((100 * K))
write_random c-new.raw $((5 * M)) $((128 * K))
write_image c 128 c.raw c-new.raw $((6 * M))

# ---------------------------------------------------------------------
# A COWD child of a monolithicSparse base (8-sector grains).  The
# child allocates whole grains of its own; the rest comes from the base.

truncate -s $((8 * M)) base.raw
write_random base.raw 0 $((6 * M))
write_random base.raw $((7 * M)) $((M))
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse \
         base.raw base.vmdk
truncate -s $((8 * M)) child.raw
cp base.raw chain.raw
for r in "0 $((8 * K))" "$((M)) $((64 * K))" "$((3 * M + 4 * K)) $((4 * K))" \
         "$((6 * M + 4 * K)) $((12 * K))" "$((8 * M - 4 * K)) $((4 * K))"; do
    set -- $r
    write_random child.raw "$1" "$2"
    dd if=child.raw of=chain.raw bs=4K skip=$(($1 / 4096)) seek=$(($1 / 4096)) \
       count=$(($2 / 4096)) conv=notrunc status=none
done
base_sum=$(sha256sum < base.vmdk)
base_cid=$(head -c 4096 base.vmdk | tr -d '\0' | sed -n 's/^CID=//p')
test -n "$base_cid"

# The bare child names base.vmdk in its header; the descriptor form
# names it with parentFileNameHint (and QEMU can read it).
"$mkcowd" -g 8 -p base.vmdk child.raw child.vmdk
"$mkcowd" -g 8 -p base.vmdk -D child-desc.vmdk child.raw child-ext.vmdk
sed -i -e "s/^parentCID=.*/parentCID=$base_cid/" \
    -e '/^createType=/a parentFileNameHint="base.vmdk"' child-desc.vmdk
grep -q '^parentFileNameHint="base.vmdk"' child-desc.vmdk

chain_cmds=(
    "write -P 0x71 20000 100"                   # unallocated grain: COW
    "write -P 0x72 $((M - 100)) 300"            # unallocated, then own
    "write -P 0x73 $((3 * M + 4 * K + 10)) 20"  # own grain
    "write -P 0x74 $((5 * M + 1)) $((40 * K))"  # several COW grains
    "flush"
    "write -z $((2 * M + 100)) 5000"            # parent data: zeroes written
    "write -z -u $((4 * M)) $((8 * K))"         # may not expose the parent
    "write -P 0x75 $((8 * M - 10)) 10"          # the last grain
)
for form in bare desc; do
    if [ $form = bare ]; then img=child.vmdk; cowd=child.vmdk; q=no
    else img=child-desc.vmdk; cowd=child-ext.vmdk; q=yes; fi
    nf0=$(u32 "$cowd" 28)
    check_reads "$img" chain.raw "$q"
    serve -v file="$img" --run true > info.log 2>&1
    grep -q 'chain of 2 link' info.log
    cp chain.raw model.raw
    # Discard with a parent and no zeroed-grain value keeps the data.
    plugin_io "$img" "${chain_cmds[@]}" "discard $((M)) $((64 * K))" \
              "discard $((7 * M)) $((8 * K))"
    model_io model.raw "${chain_cmds[@]}"
    check_reads "$img" model.raw "$q"
    check_header "$cowd" "$nf0"
    test "$(sha256sum < base.vmdk)" = "$base_sum"
done
# Single-link: the child alone.  The grain written at 20000 was copied
# whole from the base (copy-on-write), so the child alone reads it all;
# the grains before it are the child's own, or zeroes.
serve file=child.vmdk single-link=true --run 'nbdcopy "$uri" single.out'
cmp -n 16384 single.out child.raw
cmp <(dd if=single.out bs=4K skip=4 count=1 status=none) \
    <(dd if=model.raw bs=4K skip=4 count=1 status=none)
test "$(sha256sum < base.vmdk)" = "$base_sum"

# ---------------------------------------------------------------------
# Images the plugin must serve read-only, with the reason.

# expect_readonly IMG REGEX
expect_readonly ()
{
    local r=0
    serve file="$1" --run 'nbdinfo --can write "$uri"' > ro.log 2>&1 || r=$?
    cat ro.log
    check_no_crash "$r" ro.log
    test "$r" -eq 2           # nbdinfo --can: 2 means "cannot"
    grep -Eq -- "serving read-only: .*$2" ro.log
}

"$mkcowd" -q -g 1 a.raw ro.vmdk
gt3=$(u32 ro.vmdk $((2048 + 3 * 4)))
test "$gt3" -gt 0
nf=$(u32 ro.vmdk 28)

cp ro.vmdk ro-gde.vmdk
put_u32 ro-gde.vmdk $((2048 + 3 * 4)) 4000000000
expect_readonly ro-gde.vmdk \
    'grain directory entry 3 points into the header or outside the file'

cp ro.vmdk ro-nf-meta.vmdk
put_u32 ro-nf-meta.vmdk 28 4
expect_readonly ro-nf-meta.vmdk \
    "next free sector \(4\) lies inside the header or the grain directory"

cp ro.vmdk ro-nf-gt.vmdk
put_u32 ro-nf-gt.vmdk 28 $((gt3 + 31))
expect_readonly ro-nf-gt.vmdk \
    "grain table 3 \(sectors $gt3-$((gt3 + 31))\) ends past the COWD header's next free sector \($((gt3 + 31))\)"

cp ro.vmdk ro-gt-gd.vmdk
put_u32 ro-gt-gd.vmdk $((2048 + 3 * 4)) 4
expect_readonly ro-gt-gd.vmdk 'grain table 3 \(sector 4\) overlaps the grain directory'

# More directory entries declared than the file holds.
cp ro.vmdk ro-gdmore.vmdk
put_u32 ro-gdmore.vmdk 24 4000000000
expect_readonly ro-gdmore.vmdk 'lies inside the header or the grain directory'

# A descriptor line longer than the header's capacity.
"$mkcowd" -q -g 1 -D ro-desc.vmdk a.raw ro-ext.vmdk
sectors=$(( (9 * M + 3 * 512) / 512 ))
sed -i "s/^RW $sectors VMFSSPARSE/RW $((sectors + 8)) VMFSSPARSE/" ro-desc.vmdk
expect_readonly ro-desc.vmdk \
    "extent line describes $((sectors + 8)) sectors, more than the COWD header's capacity of $sectors"

# Still readable, and a write fails cleanly.
check_reads ro-nf-gt.vmdk a.raw yes
r=0
serve file=ro-nf-meta.vmdk --run 'nbdcopy a.raw "$uri"' > ro.log 2>&1 || r=$?
cat ro.log
check_no_crash "$r" ro.log
test "$r" -ne 0

# ---------------------------------------------------------------------
# nextFreeSector past the end of the file: new grains start there, not
# at the end of the file, so a table entry left pointing into a lost
# tail can never alias a new grain.

cp ro.vmdk nf-past.vmdk
size=$(stat -c %s nf-past.vmdk)
put_u32 nf-past.vmdk 28 $((size / 512 + 100))
cp a.raw model.raw
plugin_io nf-past.vmdk "write -P 0x81 $((5 * M)) 512"
model_io model.raw "write -P 0x81 $((5 * M)) 512"
check_reads nf-past.vmdk model.raw yes
check_header nf-past.vmdk $((size / 512 + 100))
gt2=$(u32 nf-past.vmdk $((2048 + 2 * 4)))
test "$gt2" -ge $((size / 512 + 100))

# ---------------------------------------------------------------------
# Killed server: batch A flushed, batch B written but not flushed, then
# SIGKILL.  The header's next free sector covers every table entry on
# disk, batch A reads back, and a new session allocates past the
# leaked grains of batch B.

"$mkcowd" -q -g 8 b.raw kill.vmdk
cp b.raw model.raw
start_server file="$scratch/kill.vmdk"
qemu-io -t writeback -f raw "$uri" \
        -c "write -P 0xa1 $((3 * M + 5)) $((100 * K))" \
        -c "write -P 0xa2 $((20 * M)) 4096" -c flush
model_io model.raw "write -P 0xa1 $((3 * M + 5)) $((100 * K))" \
         "write -P 0xa2 $((20 * M)) 4096"
# Batch B: qemu-io flushes when it exits; kill it first (sigraise 9).
r=0
qemu-io -t writeback -f raw "$uri" \
        -c "write -P 0xb1 $((30 * M)) $((64 * K))" \
        -c "write -P 0xb2 $((3 * M + 50 * K)) 100" -c "sigraise 9" || r=$?
test "$r" -ne 0
stop_server KILL
test "$(u32 kill.vmdk 1648)" -eq 1     # not a clean close
nf=$(u32 kill.vmdk 28)
u32s kill.vmdk 2048 "$(u32 kill.vmdk 24)" > gdes
while read -r gde; do
    test "$gde" -eq 0 && continue
    test $((gde + 32)) -le "$nf"
    u32s kill.vmdk $((gde * 512)) 4096
done < gdes | awk -v nf="$nf" '$1 != 0 && $1 + 8 > nf { bad = 1 } END { exit bad }'
# Batch A intact, and each grain old (batch A only) or new (batch B
# too): every grain that differs from the old contents is the new one.
plugin_copy kill.vmdk kill.out
cp model.raw old.raw
model_io model.raw "write -P 0xb1 $((30 * M)) $((64 * K))" \
         "write -P 0xb2 $((3 * M + 50 * K)) 100"
{ cmp -l kill.out old.raw || :; } | awk '{ print int(($1 - 1) / 4096) }' |
    uniq > changed
while read -r g; do
    cmp <(dd if=kill.out bs=4K skip="$g" count=1 status=none) \
        <(dd if=model.raw bs=4K skip="$g" count=1 status=none)
done < changed
qemu-img check -f vmdk kill.vmdk
# A new session: a clean close leaves a consistent header, and new
# grains go past everything batch B left in the file.
size=$(stat -c %s kill.vmdk)
plugin_io kill.vmdk "write -P 0xc1 $((35 * M)) 4096"
check_header kill.vmdk "$nf"
gte_new=$(u32 kill.vmdk $(( $(u32 kill.vmdk $((2048 + 2 * 4))) * 512 + (35 * M - 32 * M) / 4096 * 4 )))
test $((gte_new * 512)) -ge "$size"

echo "$0: OK"
