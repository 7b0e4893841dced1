#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile text descriptors (file or embedded): one case
# for each pitfall known from the other implementations
# (shared/VMDK-FORMAT.md), each asserting the exact outcome (refused,
# EIO or served: tests/malformed.sh) in both open modes, the default
# (read-write) and readonly=true.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
#
# Descriptors
# D1  descriptor over 1 MiB (file or embedded) -> refused
#     from: QEMU reads <= 1 MiB-1; VBox buffer 128 KiB
#     cases: descriptor-over-1MiB embedded-descriptor-over-1MiB
# D2  over 20000 lines; too many extents (the line cap comes first)
#     -> refused; 10000 extents -> served
#     from: VBox <= 1100 lines; memory per extent
#     cases: descriptor-lines-20001 too-many-extents many-extents-ok
# D3  bad extent lines (access, type, fields) -> refused, never skipped
#     from: QEMU silently skips non-RW, ZERO, VMFSRDM and unknown lines
#     cases: flat-ok bad-line extent-vmfsrdm flat-without-offset
#     cases: extent-too-many-fields zero-with-name vmfs-with-offset
#     cases: extent-missing-name
# D4  overflowing sector counts and offsets -> refused
#     from: QEMU "sectors <= 0" skip; int64 sums
#     cases: extent-size-abc extent-size-0 extent-size-overflow
#     cases: extents-sum-overflow flat-offset-overflow flat-offset-abc
# D5  unknown or missing createType, unknown version -> refused
#     from: QEMU createType whitelist; VBox version must be 1
#     cases: unknown-createtype unknown-createtype-2 no-createtype
#     cases: bad-version
# D6  unterminated quote, empty or over-long file name -> refused
#     from: QEMU sscanf "%511s" quirks
#     cases: unterminated-quote empty-name name-too-long
# D7  no extent lines -> refused
#     from: an image of size 0 is no image
#     cases: no-extents
# D8  json: and URL-looking extent names are plain (missing) files
#     from: CVE-2024-4467 (QEMU json: extent names)
#     cases: json-extent-name url-nbd-extent-name url-http-extent-name
#     cases: url-file-extent-name
# D9  NUL bytes and control characters in a descriptor file: NUL
#     padding at the end is served; text after a NUL is ignored as QEMU
#     ignores it (QEMU's own CID rewrite leaves such tails), with a
#     warning; a control character -> refused (an embedded descriptor
#     ends at its first NUL, the rest of its area is padding: K11)
#     from: embedded descriptors are NUL-padded; QEMU stops at the NUL
#     cases: nul-padding-ok nul-then-text control-char
# D10 embedded descriptor naming another file -> never opened: served as
#     the file itself, or refused if it is not one SPARSE extent
#     from: ovftool's "generated-stream.vmdk"; host-file exposure
#     cases: embedded-names-host-file embedded-flat-host-file
# D11 extent file missing or not an extent -> refused
#     from: split images with a lost piece
#     cases: two-ok missing-sparse-extent missing-flat-extent
# D12 CID / parentCID not 32-bit hexadecimal -> refused
#     from: QEMU sscanf "%" SCNx32 accepts garbage as 0
#     cases: bad-cid bad-parentcid

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

malformed_start

# =====================================================================
# Descriptors.  x.vmdk: 1 MiB of zeroes, the extent the text
# descriptors name; s.vmdk: qemu-img's monolithicSparse, 10 MiB, the
# first MiB written with byte 1, the file around the embedded ones.

mkdir d
cd d
ddir=$(pwd -P)
truncate -s 1M x.vmdk
qemu-img create -q -f vmdk -o subformat=monolithicSparse s.vmdk 10M
qemu-io -f vmdk -c 'write -P 1 0 1M' s.vmdk
desc ok.vmdk monolithicFlat 'RW 2048 FLAT "x.vmdk" 0'
expect_served D3 flat-ok - ok.vmdk <<EOF
size $M
data 0 $M 0
EOF

{
    cat ok.vmdk
    for (( i = 0; i < 20000; i++ )); do
        echo "# padding padding padding padding padding padding $i"
    done
} > big.vmdk
test "$(stat -c %s big.vmdk)" -gt "$M"
expect_error D1 descriptor-over-1MiB \
             "big.vmdk: descriptor file is $(stat -c %s big.vmdk) bytes, larger than the limit of 1048576" \
             big.vmdk
# An embedded descriptor of 1.5 MiB of text (descriptorSize 3072).
{
    head -c 512 s.vmdk
    { yes '# a long embedded descriptor' || :; } | head -c $(( 3 * M / 2 ))
} > embig.vmdk
put_le embig.vmdk 36 8 3072
expect_error D1 embedded-descriptor-over-1MiB \
             "embig.vmdk: descriptor is larger than 1048576 bytes" embig.vmdk

{ cat ok.vmdk; { yes '' || :; } | head -n 20001; } > lines.vmdk
expect_error D2 descriptor-lines-20001 \
             "lines.vmdk: descriptor has more than 20000 lines" lines.vmdk
{ cat ok.vmdk; { yes 'RW 1 ZERO' || :; } | head -n 20001; } > manyext.vmdk
expect_error D2 too-many-extents \
             "manyext.vmdk: descriptor has more than 20000 lines" manyext.vmdk
desc ext10k.vmdk custom
{ yes 'RW 1 ZERO' || :; } | head -n 10000 >> ext10k.vmdk
expect_served D2 many-extents-ok - ext10k.vmdk <<EOF
size $(( 10000 * 512 ))
data 0 $(( 10000 * 512 )) 0
EOF

desc access.vmdk monolithicFlat 'RX 100 FLAT "x.vmdk" 0'
expect_error D3 bad-line \
             "access.vmdk: line 8: cannot parse descriptor line \"RX 100 FLAT \"x.vmdk\" 0\"" \
             access.vmdk
desc rdm.vmdk monolithicFlat 'RW 100 VMFSRDM "x.vmdk"'
expect_error D3 extent-vmfsrdm \
             "rdm.vmdk: line 8: invalid extent line \"RW 100 VMFSRDM \"x.vmdk\"\": extent type is not supported" \
             rdm.vmdk
desc flat-nooff.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk"'
expect_error D3 flat-without-offset \
             "flat-nooff.vmdk: line 8: invalid extent line \"RW 100 FLAT \"x.vmdk\"\": a FLAT extent needs an offset" \
             flat-nooff.vmdk
desc fields.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk" 0 1 2'
expect_error D3 extent-too-many-fields \
             "fields.vmdk: line 8: invalid extent line \"RW 100 FLAT \"x.vmdk\" 0 1 2\": too many fields" \
             fields.vmdk
desc zname.vmdk custom 'RW 100 ZERO "x.vmdk"'
expect_error D3 zero-with-name "a ZERO extent takes no file name" zname.vmdk
desc vmfsoff.vmdk vmfs 'RW 100 VMFS "x.vmdk" 0'
expect_error D3 vmfs-with-offset \
             "vmfsoff.vmdk: line 8: invalid extent line \"RW 100 VMFS \"x.vmdk\" 0\": unexpected field after the file name" \
             vmfsoff.vmdk
desc noname.vmdk monolithicFlat 'RW 100 FLAT'
expect_error D3 extent-missing-name \
             "noname.vmdk: line 8: invalid extent line \"RW 100 FLAT\": missing file name" \
             noname.vmdk

desc size-abc.vmdk monolithicSparse 'RW abc SPARSE "x.vmdk"'
expect_error D4 extent-size-abc \
             "size-abc.vmdk: line 8: invalid extent line \"RW abc SPARSE \"x.vmdk\"\": the size in sectors must be a positive number" \
             size-abc.vmdk
desc size-0.vmdk monolithicFlat 'RW 0 FLAT "x.vmdk" 0'
expect_error D4 extent-size-0 \
             "size-0.vmdk: line 8: invalid extent line \"RW 0 FLAT \"x.vmdk\" 0\": the size in sectors must be a positive number" \
             size-0.vmdk
desc size-big.vmdk monolithicFlat 'RW 99999999999999999999 FLAT "x.vmdk" 0'
expect_error D4 extent-size-overflow \
             "size-big.vmdk: line 8: invalid extent line \"RW 99999999999999999999 FLAT \"x.vmdk\" 0\": the size in sectors must be a positive number" \
             size-big.vmdk
desc total-big.vmdk monolithicFlat 'RW 18014398509481983 FLAT "x.vmdk" 0' \
     'RW 18014398509481983 FLAT "x.vmdk" 0'
expect_error D4 extents-sum-overflow \
             "total-big.vmdk: extents add up to more than 2^63 bytes" total-big.vmdk
# The largest offset the parser takes (2^64 / 512 - 1 sectors) plus the
# extent's length overflows 64 bits.
desc off-big.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk" 36028797018963967'
expect_error D4 flat-offset-overflow \
             "x.vmdk: extent offset 36028797018963967 sectors is too large" \
             off-big.vmdk
desc off-abc.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk" -1'
expect_error D4 flat-offset-abc "the offset must be a number of sectors" \
             off-abc.vmdk

desc ct.vmdk fullDevice 'RW 100 FLAT "x.vmdk" 0'
expect_error D5 unknown-createtype \
             'ct.vmdk: createType="fullDevice" is not supported without allow-devices=true' ct.vmdk
desc ct2.vmdk fooBar 'RW 100 FLAT "x.vmdk" 0'
expect_error D5 unknown-createtype-2 \
             'ct2.vmdk: line 5: createType="fooBar" is not supported' ct2.vmdk
printf '# Disk DescriptorFile\nversion=1\nRW 100 FLAT "x.vmdk" 0\n' > noct.vmdk
expect_error D5 no-createtype "noct.vmdk: descriptor has no createType" \
             noct.vmdk
sed 's/^version=1/version=9/' ok.vmdk > v9.vmdk
expect_error D5 bad-version "v9.vmdk: line 2: version=9 is not supported" \
             v9.vmdk

desc quote.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk 0'
expect_error D6 unterminated-quote \
             "quote.vmdk: line 8: invalid extent line \"RW 100 FLAT \"x.vmdk 0\": unterminated quoted file name" \
             quote.vmdk
desc empty-name.vmdk monolithicFlat 'RW 100 FLAT "" 0'
expect_error D6 empty-name "file name is empty or too long" empty-name.vmdk
desc long-name.vmdk monolithicFlat "RW 100 FLAT \"$(head -c 5000 /dev/zero | tr '\0' a)\" 0"
expect_error D6 name-too-long "file name is empty or too long" long-name.vmdk

desc noext.vmdk monolithicFlat
expect_error D7 no-extents "noext.vmdk: descriptor has no extent lines" \
             noext.vmdk

# Names that other programs would parse are plain file names here.
leak_check=yes
json="json:{'file':{'driver':'file','filename':'/etc/passwd'}}"
desc json.vmdk monolithicFlat "RW 8 FLAT \"$json\" 0"
expect_error D8 json-extent-name \
             "open: $ddir/$json: No such file or directory" json.vmdk
desc nbd.vmdk monolithicFlat 'RW 8 FLAT "nbd://localhost/disk" 0'
expect_error D8 url-nbd-extent-name \
             "open: $ddir/nbd://localhost/disk: No such file or directory" \
             nbd.vmdk
desc http.vmdk monolithicFlat 'RW 8 FLAT "http://example.com/disk.vmdk" 0'
expect_error D8 url-http-extent-name \
             "open: $ddir/http://example.com/disk.vmdk: No such file or directory" \
             http.vmdk
desc file.vmdk monolithicFlat 'RW 8 FLAT "file:///etc/passwd" 0'
expect_error D8 url-file-extent-name \
             "open: $ddir/file:///etc/passwd: No such file or directory" \
             file.vmdk
leak_check=no

# NUL padding after the text (as in embedded descriptors) is fine; text
# after a NUL is ignored like QEMU ignores it (qemu-img leaves the old
# tail there when its new CID is printed shorter), but not silently.
{ cat ok.vmdk; head -c 4096 /dev/zero; } > nulpad.vmdk
expect_served D9 nul-padding-ok - nulpad.vmdk <<EOF
size $M
EOF
{ cat ok.vmdk; printf '\0'; echo 'RW 2048 FLAT "x.vmdk" 0'; } > nultext.vmdk
expect_served D9 nul-then-text \
              "nultext.vmdk: descriptor file has text after the NUL byte at offset" \
              nultext.vmdk <<EOF
size $M
EOF
{ cat ok.vmdk; printf 'ddb.comment = "a\001b"\n'; } > ctrl.vmdk
expect_error D9 control-char \
             "ctrl.vmdk: line 9: control character in descriptor" ctrl.vmdk

# An embedded descriptor describes the file that holds it, whatever
# name it gives: the name is never opened.
embed ()
{
    local out="$1" line="$2"
    cp s.vmdk "$out"
    {
        printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
        printf 'parentCID=ffffffff\ncreateType="monolithicSparse"\n%s\n' "$line"
    } > "$out.desc"
    head -c $(( 20 * 512 )) /dev/zero |
        dd of="$out" bs=512 seek=1 conv=notrunc status=none
    dd if="$out.desc" of="$out" bs=512 seek=1 conv=notrunc status=none
}
leak_check=yes
embed emsecret.vmdk 'RW 20480 SPARSE "../secret.raw"'
expect_served D10 embedded-names-host-file - emsecret.vmdk <<EOF
size $(( 10 * M ))
data 0 $M 1
nosecret
EOF
embed emflat.vmdk 'RW 2048 FLAT "/etc/passwd" 0'
expect_error D10 embedded-flat-host-file \
             "emflat.vmdk: the embedded descriptor must describe exactly one SPARSE extent (this file)" \
             emflat.vmdk
leak_check=no

mkdir two
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse two/d.vmdk 3G
test -f two/d-s002.vmdk
expect_served D11 two-ok - two/d.vmdk <<EOF
size $(( 3 * 1024 * M ))
data $(( 2 * 1024 * M - G )) $(( 2 * G )) 0
EOF
cp -a two two-missing
rm two-missing/d-s002.vmdk
expect_error D11 missing-sparse-extent \
             "open: $ddir/two-missing/d-s002.vmdk: No such file or directory" \
             two-missing/d.vmdk
mkdir twof
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentFlat twof/d.vmdk 3G
rm twof/d-f001.vmdk
expect_error D11 missing-flat-extent \
             "open: $ddir/twof/d-f001.vmdk: No such file or directory" twof/d.vmdk

sed 's/^CID=fffffffe/CID=xyz/' ok.vmdk > cid.vmdk
expect_error D12 bad-cid \
             'cid.vmdk: line 3: CID="xyz" is not a 32-bit hexadecimal number' \
             cid.vmdk
sed 's/^parentCID=ffffffff/parentCID=123456789/' ok.vmdk > pcid.vmdk
expect_error D12 bad-parentcid \
             'pcid.vmdk: line 4: parentCID="123456789" is not a 32-bit hexadecimal number' \
             pcid.vmdk
cd ..

malformed_finish
