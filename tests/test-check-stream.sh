#!/usr/bin/env bash
# shellcheck disable=SC2119  # make_scratch, check_summary take no script arguments
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# check-stream, the strict checker of streamOptimized images that the
# tests of the stream writer use, checked itself:
#
# 1. qemu-img's stream image of a raw disk, rewritten into the layout
#    VMware streams (good.vmdk), passes, with and without -o, and qemu
#    reads the rewritten image as the raw disk.  A rewrite of a grain
#    appended later passes without -o (one inversion, one unreferenced
#    grain) and fails with -o.
# 2. good.vmdk broken one rule at a time: each break is reported with
#    exit status 1 and its message, at the byte it is at.
# 3. The third-party stream images of $VMDK_CORPUS (skipped if absent)
#    break the rules they are known to break, and only those.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_built check-stream
requires_cmds qemu-img od gzip
requires qemu-img --version

make_scratch
cd "$scratch"

check="$abs_builddir/check-stream"
G=65536

# ---------------------------------------------------------------------
# Helpers.

# vmware_descriptor SECTORS NAME: the descriptor VMware writes for a
# stream image of SECTORS sectors in file NAME, on stdout.
vmware_descriptor ()
{
    printf '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\n'
    printf 'CID=1a2b3c4d\nparentCID=ffffffff\ncreateType="streamOptimized"\n'
    printf '\n# Extent description\nRDONLY %s SPARSE "%s"\n' "$1" "$2"
    printf '\n# The Disk Data Base\n#DDB\n\n'
    printf 'ddb.longContentID = "0123456789abcdef0123456789abcdef"\n'
    printf 'ddb.virtualHWVersion = "4"\n'
    printf 'ddb.geometry.cylinders = "%s"\n' $(( ($1 + 16064) / 16065 ))
    printf 'ddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\n'
    printf 'ddb.adapterType = "lsilogic"\nddb.toolsInstallType = "4"\n'
    printf 'ddb.toolsVersion = "2147483647"\n'
}

# put_descriptor VMDK TEXT: replace the embedded descriptor of VMDK by
# the file TEXT, NUL-padded to the header's descriptorSize.
put_descriptor ()
{
    cp "$2" desc.bin
    truncate -s $(( $(u64 "$1" 36) * 512 )) desc.bin
    dd if=desc.bin of="$1" bs=512 seek="$(u64 "$1" 28)" conv=notrunc \
       status=none
}

# vmware_stream IN OUT [EXTRA]: rewrite qemu-img's stream image IN into
# OUT the way VMware streams one: the header's flags newline test,
# compressed and markers only (qemu adds the redundant directory), no
# rgdOffset; VMware's descriptor; qemu's grains where they are, cut
# where the last one ends (qemu leaves zero sectors after its
# end-of-stream marker); the items of file EXTRA; a GT marker and a
# copy of each of qemu's grain tables; the GD marker and a directory
# naming the copies; then stream_gd_at_end's footer and end-of-stream
# marker, and GD_AT_END in the header.  Sets extra_at, the sector
# where EXTRA starts.
vmware_stream ()
{
    local in="$1" out="$2" extra="${3:-}" tmp="$2.tmp"
    local gd grain n cap gdes gts t gt s e end=0 gdsec
    local -a tables=() copies=()
    gd=$(u64 "$in" 56)
    grain=$(u64 "$in" 20)
    n=$(u32 "$in" 44)
    cap=$(u64 "$in" 12)
    gdes=$(( (cap + grain * n - 1) / (grain * n) ))
    gts=$(( (n * 4 + 511) / 512 ))
    for (( t = 0; t < gdes; t++ )); do
        gt=$(u32 "$in" $(( gd * 512 + 4 * t )))
        tables+=("$gt")
        [ "$gt" -ne 0 ] || continue
        for s in $(u32s "$in" $(( gt * 512 )) "$n"); do
            [ "$s" -ne 0 ] || continue
            e=$(( s * 512 + 12 + $(u32 "$in" $(( s * 512 + 8 ))) ))
            e=$(( (e + 511) / 512 * 512 ))
            if [ "$e" -gt "$end" ]; then end=$e; fi
        done
    done
    head -c "$end" "$in" > "$tmp"
    extra_at=$(( end / 512 ))
    if [ -n "$extra" ]; then cat "$extra" >> "$tmp"; fi
    for gt in "${tables[@]}"; do
        if [ "$gt" -eq 0 ]; then copies+=(0); continue; fi
        metadata_marker 1 "$gts" >> "$tmp"
        copies+=("$(( $(stat -c %s "$tmp") / 512 ))")
        dd if="$in" bs=512 skip="$gt" count="$gts" status=none >> "$tmp"
    done
    metadata_marker 2 $(( (gdes * 4 + 511) / 512 )) >> "$tmp"
    gdsec=$(( $(stat -c %s "$tmp") / 512 ))
    for gt in "${copies[@]}"; do le_bytes "$gt" 4; done >> "$tmp"
    truncate -s $(( ($(stat -c %s "$tmp") + 511) / 512 * 512 )) "$tmp"
    metadata_marker 0 >> "$tmp"
    put_le "$tmp" 8 4 $(( 0x30001 ))
    put_le "$tmp" 48 8 0
    put_le "$tmp" 56 8 "$gdsec"
    vmware_descriptor "$cap" "$(basename "$out")" > desc.txt
    put_descriptor "$tmp" desc.txt
    stream_gd_at_end "$tmp" "$out"
    rm "$tmp"
}

# grain_item VMDK OFFSET: the grain marker at byte OFFSET of VMDK with
# its data and padding, on stdout.
grain_item ()
{
    local size
    size=$(u32 "$1" $(( $2 + 8 )))
    dd if="$1" bs=512 skip=$(( $2 / 512 )) count=$(( (12 + size + 511) / 512 )) \
       status=none
}

# run_check FILE [OPTIONS]: run "check-stream OPTIONS FILE", its
# summary to out.txt; sets rc to its exit status and lines to the lines
# of its stderr with the "check-stream: FILE: " prefix removed (bash
# only: a test runs it some fifty times, on two busy cores).
run_check ()
{
    local f="$1" l
    shift
    rc=0
    "$check" "$@" "$f" > out.txt 2> err.txt || rc=$?
    mapfile -t lines < err.txt
    for l in "${lines[@]}"; do
        if [[ $l =~ Sanitizer|runtime\ error:|Segmentation|Aborted ]]; then
            rc=99               # a crash, never a verdict
        fi
    done
    lines=("${lines[@]#"check-stream: $f: "}")
}

# passes WHAT FILE [OPTIONS]: counted check that "check-stream OPTIONS
# FILE" exits 0 and says nothing on stderr; its summary is left in
# out.txt.
passes ()
{
    local what="$1"
    shift
    run_check "$@"
    if [ "$rc" -eq 0 ] && [ "${#lines[@]}" -eq 0 ]; then
        pass "$what: $(< out.txt)"
    else
        fail "$what: exit status $rc, expected 0"
        cat err.txt
    fi
}

# reports WHAT REGEX FILE [OPTIONS]: counted check that "check-stream -q
# OPTIONS FILE" exits 1 with a line "check-stream: FILE: <REGEX>" (an
# extended regex, anchored at both ends) on stderr.
reports ()
{
    local what="$1" re="$2" f="$3" l
    shift 3
    run_check "$f" -q "$@"
    if [ "$rc" -eq 1 ]; then
        for l in "${lines[@]}"; do
            if [[ $l =~ ^$re$ ]]; then
                pass "$what: $l"
                return
            fi
        done
    fi
    fail "$what: exit status $rc, expected 1 and /$re/"
    cat err.txt
}

# variant NEW BASE OFFSET BYTES VALUE: NEW is BASE with one field set.
variant ()
{
    cp "$2" "$1"
    put_le "$1" "$3" "$4" "$5"
}

# ---------------------------------------------------------------------
# 1. A good image: 34 MiB and 3 sectors (two grain tables, a partial
#    last grain), random, compressible, one-sector, explicitly zero and
#    unallocated grains.

size=$(( 34 * 1024 * 1024 + 1536 ))
truncate -s "$size" disk.raw
write_random disk.raw 0 $(( 3 * G ))                      # grains 0-2
write_pattern disk.raw $(( 3 * G )) "$G" 65               # grain 3
write_random disk.raw $(( 5 * G + 512 )) 512              # grain 5
write_zeroes disk.raw $(( 7 * G )) "$G"                   # grain 7
write_random disk.raw $(( 33 * 1024 * 1024 )) $(( 2 * G ))   # table 1
write_random disk.raw $(( size - 1536 )) 1536             # partial grain
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized \
         disk.raw qemu.vmdk

# qemu's own image breaks the rules VMware's importers care about.
"$check" qemu.vmdk 2> err.txt || :
cat err.txt
grep -q 'header flags 0x00030003, expected 0x00030001' err.txt
grep -Eq 'header gdOffset [0-9]+, expected GD_AT_END' err.txt

vmware_stream qemu.vmdk good.vmdk
passes "qemu's image in VMware's layout" good.vmdk
last_lba=$(( (size / 512 - 1) / 128 * 128 ))
if grep -qx "good.vmdk: 8 grains stored, [0-9]* bytes, 0 order inversions, 0 unreferenced grains, 2 tables, virtual size $size" out.txt
then
    pass "good.vmdk summary: the 8 grains qemu stored, 2 tables, $size bytes"
else
    fail "good.vmdk summary: $(cat out.txt)"
fi
passes "qemu's image in VMware's layout, -o" good.vmdk -o
if qemu-img compare -q -f vmdk -F raw good.vmdk disk.raw; then
    pass "qemu reads good.vmdk as disk.raw"
else
    fail "qemu reads good.vmdk other than disk.raw"
fi

# Offsets in good.vmdk.
fsize=$(stat -c %s good.vmdk)
foot=$(( fsize - 1024 ))                    # the footer
gd=$(u64 good.vmdk $(( foot + 56 )))        # the directory's sector
gdm=$(( (gd - 1) * 512 ))                   # the GD marker
t0=$(u32 good.vmdk $(( gd * 512 )))         # table 0's sector
t1=$(u32 good.vmdk $(( gd * 512 + 4 )))     # table 1's sector
ov=$(u64 good.vmdk 64)
m0=$(( ov * 512 ))                          # grain 0's marker
test "$(u64 good.vmdk "$m0")" -eq 0
test "$(u32 good.vmdk $(( t0 * 512 )))" -eq $(( m0 / 512 ))
m3=$(( $(u32 good.vmdk $(( t0 * 512 + 12 ))) * 512 ))     # grain 3's
test "$(u64 good.vmdk "$m3")" -eq 384
cap=$(u64 good.vmdk 12)

# A rewrite of grain 0 appended after the others (and named by the
# table instead of the first copy): an inversion and an unreferenced
# grain, errors only with -o.
grain_item good.vmdk "$m0" > rewrite.bin
vmware_stream qemu.vmdk rewrite.vmdk rewrite.bin
rgd=$(u64 rewrite.vmdk $(( $(stat -c %s rewrite.vmdk) - 1024 + 56 )))
put_le rewrite.vmdk $(( $(u32 rewrite.vmdk $(( rgd * 512 ))) * 512 )) 4 \
       "$extra_at"
passes "a rewritten grain" rewrite.vmdk
if grep -q ' 1 order inversions, 1 unreferenced grains,' out.txt; then
    pass "a rewritten grain: counted as an inversion and an unreferenced grain"
else
    fail "a rewritten grain: summary $(cat out.txt)"
fi
reports "a rewritten grain, -o" \
        "grain marker lba 0 after lba $last_lba \(out of order\) at byte $(( extra_at * 512 ))" \
        rewrite.vmdk -o

# ---------------------------------------------------------------------
# 2. One rule broken at a time.

# The header.
variant version.vmdk good.vmdk 4 4 1
reports "header version 1" \
        "header version 1, expected 3 at byte 4" version.vmdk
variant flags.vmdk good.vmdk 8 4 $(( 0x30003 ))
reports "flag bit 1 (qemu's redundant directory)" \
        "header flags 0x00030003, expected 0x00030001 \(bits not expected 0x00000002, missing 0x00000000\) at byte 8" \
        flags.vmdk
variant flags2.vmdk good.vmdk 8 4 $(( 0x10001 ))
reports "no marker flag" \
        "header flags 0x00010001, expected 0x00030001 \(bits not expected 0x00000000, missing 0x00020000\) at byte 8" \
        flags2.vmdk
variant newline.vmdk good.vmdk 75 1 10
reports "newline detector" \
        "newline detector bytes 0a 20 0a 0a, expected 0a 20 0d 0a at byte 73" \
        newline.vmdk
variant deflate.vmdk good.vmdk 77 2 0
reports "compressAlgorithm 0" \
        "compressAlgorithm 0, expected 1 \(deflate\) at byte 77" deflate.vmdk
variant gdfront.vmdk good.vmdk 56 8 "$gd"
reports "real gdOffset in the header (VMware's converter)" \
        "header gdOffset $gd, expected GD_AT_END \(0xffffffffffffffff\) at byte 56" \
        gdfront.vmdk
variant rgd.vmdk good.vmdk 48 8 21
reports "rgdOffset" "rgdOffset 21, expected 0 at byte 48" rgd.vmdk
variant grain.vmdk good.vmdk 20 8 96
reports "grainSize not a power of 2" \
        "grainSize 96 is not a power of 2 at byte 20" grain.vmdk
variant overhead.vmdk good.vmdk 64 8 $(( fsize / 512 + 1 ))
reports "overHead past the end of the file" \
        "overHead $(( fsize / 512 + 1 )) sectors, but the file has $(( fsize / 512 )) sectors at byte 64" \
        overhead.vmdk
variant pad.vmdk good.vmdk 300 1 7
reports "header padding" \
        "header padding byte 0x07, expected 0 at byte 300" pad.vmdk

# The footer.
variant footer.vmdk good.vmdk $(( foot + 64 )) 8 $(( ov + 1 ))
reports "footer != header" \
        "footer overHead $(( ov + 1 )) differs from the header's $ov at byte $(( foot + 64 ))" \
        footer.vmdk
variant footgd.vmdk good.vmdk $(( foot + 56 )) 8 $(( gd + 1 ))
reports "footer gdOffset not the directory" \
        "footer gdOffset $(( gd + 1 )), but the grain directory is at sector $gd at byte $(( foot + 56 ))" \
        footgd.vmdk

# The descriptor.
grep -v toolsInstallType desc.txt > d1.txt
cp good.vmdk desc1.vmdk
put_descriptor desc1.vmdk d1.txt
reports "descriptor key missing" \
        "descriptor key ddb.toolsInstallType appears 0 times, expected once at byte 512" \
        desc1.vmdk
{ cat desc.txt; echo 'CID=fffffffe'; } > d2.txt
cp good.vmdk desc2.vmdk
put_descriptor desc2.vmdk d2.txt
reports "descriptor key twice" \
        "descriptor key CID appears 2 times, expected once at byte 512" \
        desc2.vmdk
sed 's/createType=.*/createType="monolithicSparse"/' desc.txt > d3.txt
cp good.vmdk desc3.vmdk
put_descriptor desc3.vmdk d3.txt
reports "createType" \
        'descriptor createType="monolithicSparse", expected "streamOptimized" at byte [0-9]+' \
        desc3.vmdk
sed "s/^RDONLY $cap /RW $(( cap - 1 )) /" desc.txt > d4.txt
cp good.vmdk desc4.vmdk
put_descriptor desc4.vmdk d4.txt
reports "extent shorter than the capacity" \
        "extent of $(( cap - 1 )) sectors, but the header's capacity is $cap at byte [0-9]+" \
        desc4.vmdk

# The end of the stream.
cp good.vmdk noeos.vmdk
truncate -s -512 noeos.vmdk
reports "end-of-stream marker missing" \
        "the file ends without an end-of-stream marker at byte $(( fsize - 512 ))" \
        noeos.vmdk
cp good.vmdk eosmid.vmdk
head -c 512 /dev/zero >> eosmid.vmdk
reports "end-of-stream marker not last" \
        "end-of-stream marker is not the last sector \(512 bytes follow\) at byte $(( fsize - 512 ))" \
        eosmid.vmdk
variant footfirst.vmdk good.vmdk $(( gdm + 12 )) 4 3
reports "a footer marker before the directory" \
        "footer marker not right after the grain directory at byte $gdm" \
        footfirst.vmdk
variant unknown.vmdk good.vmdk $(( gdm + 12 )) 4 5
reports "marker of unknown type" \
        "metadata marker of unknown type 5 at byte $gdm" unknown.vmdk
variant gdpad.vmdk good.vmdk $(( gdm + 100 )) 1 1
reports "GD marker padding" \
        "grain directory marker padding byte 0x01, expected 0 at byte $(( gdm + 100 ))" \
        gdpad.vmdk

# Grain markers.
variant lba64.vmdk good.vmdk "$m0" 8 64
reports "grain lba not on a grain" \
        "grain marker lba 64 is not a multiple of grainSize 128 at byte $m0" \
        lba64.vmdk
variant lbacap.vmdk good.vmdk "$m0" 8 $(( last_lba + 128 ))
reports "grain lba past the capacity" \
        "grain marker lba $(( last_lba + 128 )) is at or past the capacity $cap at byte $m0" \
        lbacap.vmdk
variant lba9.vmdk good.vmdk "$m0" 8 1152
reports "grain lba not the table's" \
        "grain table entry for lba 0 names the grain marker at sector $(( m0 / 512 )), whose lba is 1152 at byte $(( t0 * 512 ))" \
        lba9.vmdk
s0=$(u32 good.vmdk $(( m0 + 8 )))
variant adler.vmdk good.vmdk $(( m0 + 12 + s0 - 1 )) 1 \
        $(( $(u8 good.vmdk $(( m0 + 12 + s0 - 1 ))) ^ 1 ))
reports "Adler-32 of grain 0" \
        "grain \(lba 0\) zlib data invalid: incorrect data check at byte $(( m0 + 12 ))" \
        adler.vmdk
s3=$(u32 good.vmdk $(( m3 + 8 )))
variant data3.vmdk good.vmdk $(( m3 + 12 + s3 / 2 )) 1 \
        $(( $(u8 good.vmdk $(( m3 + 12 + s3 / 2 ))) ^ 255 ))
reports "a data byte of compressed grain 3" \
        "grain \(lba 384\) (zlib data invalid: .*|inflates to .*|zlib data ends .*|marker size .*) at byte $(( m3 + 12 ))" \
        data3.vmdk
# The padding after the first grain whose data does not end a sector.
m=$m0
while [ $(( (m + 12 + $(u32 good.vmdk $(( m + 8 )))) % 512 )) -eq 0 ]; do
    m=$(( m + 12 + $(u32 good.vmdk $(( m + 8 ))) ))
done
p=$(( m + 12 + $(u32 good.vmdk $(( m + 8 ))) ))
variant gpad.vmdk good.vmdk "$p" 1 $(( 0x55 ))
reports "grain padding" \
        "grain marker \(lba $(u64 good.vmdk "$m")\) padding byte 0x55, expected 0 at byte $p" \
        gpad.vmdk
# A stored all-zero grain (grain 10, unused), inserted after the others.
z=$(zlib_zeros "$G" | wc -c)
{ le_bytes 1280 8; le_bytes "$z" 4; zlib_zeros "$G"; } > zero.bin
truncate -s $(( (12 + z + 511) / 512 * 512 )) zero.bin
vmware_stream qemu.vmdk zero.vmdk zero.bin
reports "a stored all-zero grain" \
        "stored grain \(lba 1280\) is all zeroes at byte $(( extra_at * 512 ))" \
        zero.vmdk

# The directory and the tables.
variant gdbad.vmdk good.vmdk $(( gd * 512 )) 4 1
reports "GD entry naming a sector that is no table" \
        "grain directory entry 0 names sector 1, which does not follow a grain table marker at byte $(( gd * 512 ))" \
        gdbad.vmdk
variant gddup.vmdk good.vmdk $(( gd * 512 + 4 )) 4 "$t0"
reports "two GD entries naming one table" \
        "grain directory entry 1 names the table at sector $t0, which another entry names at byte $(( gd * 512 + 4 ))" \
        gddup.vmdk
variant gtdup.vmdk good.vmdk $(( t0 * 512 + 4 )) 4 $(( m0 / 512 ))
reports "two GT entries naming one grain" \
        "grain table entry for lba 128 names the grain marker at sector $(( m0 / 512 )), which another entry names at byte $(( t0 * 512 + 4 ))" \
        gtdup.vmdk
variant gtnm.vmdk good.vmdk $(( t0 * 512 + 4 * 9 )) 4 $(( m0 / 512 + 1 ))
reports "GT entry naming a sector that is no grain marker" \
        "grain table entry for lba 1152 names sector $(( m0 / 512 + 1 )), where the walk found no grain marker at byte $(( t0 * 512 + 36 ))" \
        gtnm.vmdk
past=$(( last_lba / 128 + 1 - 512 ))        # table 1's entry past the end
variant gtpast.vmdk good.vmdk $(( t1 * 512 + 4 * past )) 4 $(( m0 / 512 ))
reports "GT entry for a grain past the capacity" \
        "grain table entry $(( m0 / 512 )) for lba $(( last_lba + 128 )), at or past the capacity $cap, expected 0 at byte $(( t1 * 512 + 4 * past ))" \
        gtpast.vmdk

# Usage and I/O errors: exit status 2.
for args in "" "-x good.vmdk" "good.vmdk good.vmdk" "missing.vmdk"; do
    rc=0
    # shellcheck disable=SC2086 # split on purpose
    "$check" $args > /dev/null 2>&1 || rc=$?
    if [ "$rc" -eq 2 ]; then
        pass "check-stream $args: exit status 2"
    else
        fail "check-stream $args: exit status $rc, expected 2"
    fi
done

# ---------------------------------------------------------------------
# 3. The third-party stream images (shared/corpus).

# corpus_breaks NAME FILE REGEX: counted check that check-stream finds
# FILE of the corpus invalid, and that every violation it reports
# matches REGEX (the rules the producer is known to break).  The
# violations are left in what.txt.
corpus_breaks ()
{
    local name="$1" f="$VMDK_CORPUS/$2" re="$3" l other=0
    run_check "$f"
    printf '%s\n' "${lines[@]}" > what.txt
    for l in "${lines[@]}"; do
        if ! [[ $l =~ $re ]]; then other=1; fi
    done
    if [ "$rc" -eq 1 ] && [ "${#lines[@]}" -gt 0 ] && [ "$other" -eq 0 ]; then
        pass "$name: only the known breaks: $(tr '\n' ';' < what.txt)"
    else
        fail "$name: exit status $rc, or other violations than /$re/"
        cat err.txt
    fi
}

if [ -d "${VMDK_CORPUS:-}" ]; then
    # VMware's disk library and ovftool: the structure passes (GD_AT_END,
    # GT and GD markers, footer, end-of-stream marker; ovftool's
    # progress markers are tolerated); only the DDB keys VMware's
    # own writer adds today are missing.
    tools='^descriptor key ddb\.tools(InstallType|Version) appears 0 times'
    corpus_breaks "VMware iotest-version3" \
                  qemu-iotests-vmware-version3/iotest-version3.vmdk "$tools"
    corpus_breaks "VMware ovftool blank" \
                  ovftool-streamOptimized-blank/blank.vmdk "$tools"
    # VMware's converter layout: the directory in the header, all-zero
    # grains stored, no directory or footer markers.
    corpus_breaks "VMware converter" \
                  vmware-streamOptimized/streamOptimized.vmdk \
                  '^(header gdOffset 21,|descriptor key ddb\.toolsInstallType |stored grain .* is all zeroes|end-of-stream marker not right after the footer|no grain directory marker|no footer marker)'
    grep -q '^header gdOffset 21, expected GD_AT_END' what.txt
    # ovftool 4.0, cut inside the 36th grain.
    corpus_breaks "VMware ttylinux (truncated)" \
                  vmware-streamOptimized-truncated-ttylinux/ttylinux-pc_i486-16.1-disk1.vmdk \
                  "$tools|^grain marker \(lba 13696, size 34761\) runs past the end of the file"
    grep -q 'runs past the end of the file' what.txt
else
    echo "$0: no corpus at '${VMDK_CORPUS:-}': part 3 skipped"
fi

check_summary
