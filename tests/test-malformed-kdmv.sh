#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile KDMV (hosted sparse) headers, grain directories
# and grain tables: one case for each pitfall known from the other
# implementations (shared/VMDK-FORMAT.md), each asserting the exact
# outcome (refused, EIO or served: tests/malformed.sh) in both open
# modes, the default (read-write) and readonly=true.  Images come from
# qemu-img/qemu-io, patched with dd.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
#
# KDMV (hosted sparse) header
# K1  bad magic, not a VMDK at all, junk after "KDMV" -> refused
#     from: every reader's magic dispatch (QEMU vmdk_open, VBox)
#     cases: sparse-ok kdmv-magic-typo kdmv-junk junk text empty
#     cases: bad-magic-in-sparse-extent
# K2  header shorter than 512 bytes -> refused
#     from: QEMU/libvmdk read the full header; a short read is not zeroes
#     cases: truncated-header truncated-header-4
# K3  version 0 or > 3 -> refused
#     from: QEMU "version > 3 unsupported"; open-vmdk rejects > 3
#     cases: header-version-9 header-version-0
# K4  grainSize 0, not a power of 2, over 2^21 sectors -> refused
#     from: QEMU limit "Invalid granularity" (> 0x200000); spec "power of 2"
#     cases: grain-size-0 grain-size-3 grain-size-2^30 grain-size-2^63
# K5  numGTEsPerGT 0 or huge: grain-table coverage 0 -> refused
#     from: libvmdk SIGFPE issue #22 (GT coverage 0); QEMU "L1 entry size"
#     cases: numgtes-0 numgtes-huge
# K6  capacity huge; capacity 0 with no descriptor -> refused
#     from: QEMU/libvmdk allocation bounds; bare sparse file sizing
#     cases: capacity-huge capacity-0-bare
# K7  grain directory too large to hold in memory -> refused
#     from: QEMU limit "L1 size too big" (still allows 128 MiB GDs)
#     cases: gd-entries-over-limit
# K8  overHead beyond the end of the file, or overflowing when turned
#     into bytes -> served (reads correct); the default mode serves it
#     read-only, naming overHead (its grains cannot be told from metadata)
#     from: QEMU "File truncated, expecting at least N bytes"
#     cases: overhead-past-eof overhead-overflow
# K9  gdOffset 0, beyond EOF, GD_AT_END without compression -> refused
#     from: QEMU/VBox trust gdOffset; GD_AT_END only in stream images
#     cases: gd-beyond-eof gd-offset-0 gd-at-end-uncompressed
# K10 rgdOffset beyond EOF -> served, read-only in the default mode
#     from: QEMU writes both GDs without checking the redundant one
#     cases: rgd-past-eof
# K11 descriptorOffset beyond EOF -> refused; descriptorSize huge ->
#     served (read capped at 1 MiB)
#     from: VBox descriptorSize <= 20480 sectors; libvmdk bounds checks
#     cases: desc-offset-past-eof desc-size-huge
# K12 newline detector bytes wrong (CR/LF translation) -> refused
#     from: VBox vmdkValidateHeader; libvmdk
#     cases: crlf
# K13 unknown incompatible flag bits -> refused; unknown compatible bits
#     -> served
#     from: open-vmdk sparse.c (QEMU and VBox do not check)
#     cases: flags-incompat flags-compat-unknown
# K14 compressed flag without the markers flag, unknown or stray
#     compressAlgorithm -> refused
#     from: QEMU and dissect.hypervisor disagree on marker-less grains
#     cases: compressed-no-markers compress-algorithm-2
#     cases: compress-algorithm-without-flag
#
# Grain directories and tables (G2, G6 and the cases on COWD extents
# are in test-malformed-cowd.sh, the case on a streamOptimized image in
# test-malformed-stream.sh)
# G1  GD entry past EOF -> EIO on that table's range only (the default
#     mode serves read-only)
#     from: QEMU "check" only flags offsets after EOF; no open check
#     cases: gde-past-eof
# G3  GT entry past EOF -> EIO on that grain only
#     from: QEMU vmdk_co_check "cluster offset points after EOF"
#     cases: gte-past-eof
# G4  GTE 1 without flag bit 2 -> EIO (with the flag and version 2 it is
#     a zeroed grain)
#     from: GTE 1 without zeroed-grain flag (VBox/libvmdk read sector 1)
#     cases: gte-1-without-flag gte-1-zeroed-grain
# G5  GT entry pointing into the metadata -> reads as it is, but a write
#     through it fails with EIO and the metadata is unchanged
#     from: no reader checks; QEMU would write over its own grain tables
#     cases: gte-into-metadata
# G7  GD hole (entry 0) in an image whose other tables exist -> reads as
#     unallocated (zeroes); a write there gets a new table and reads back
#     from: GD hole (QEMU uninitialised offset: get_cluster_offset returns
#     before setting it, vmdk_pwritev writes through it anyway)
#     cases: gd-hole

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

malformed_start

# =====================================================================
# KDMV headers.  s.vmdk: qemu-img's monolithicSparse, 10 MiB, the
# first MiB written with byte 1.  Header offsets: version 4, flags 8,
# capacity 12, grainSize 20, descriptorOffset 28, descriptorSize 36,
# numGTEsPerGT 44, rgdOffset 48, gdOffset 56, overHead 64, newline
# detector 73, compressAlgorithm 77.

mkdir k
cd k
qemu-img create -q -f vmdk -o subformat=monolithicSparse s.vmdk 10M
qemu-io -f vmdk -c 'write -P 1 0 1M' s.vmdk
test "$(u32 s.vmdk 8)" -eq 3                    # newline detector, RGD
expect_served K1 sparse-ok - s.vmdk <<EOF
size $(( 10 * M ))
data 0 $M 1
data $M $M 0
EOF

printf 'KDMX' > magic-typo.vmdk
tail -c +5 s.vmdk >> magic-typo.vmdk
expect_error K1 kdmv-magic-typo \
             "magic-typo.vmdk: not a VMDK file: no sparse header magic" \
             magic-typo.vmdk
{ printf 'KDMV'; head -c 508 /dev/zero | tr '\0' '\377'; } > kdmv-junk.vmdk
expect_error K1 kdmv-junk \
             "kdmv-junk.vmdk: sparse header version 4294967295 is not supported" \
             kdmv-junk.vmdk
{ printf 'x'; head -c 99999 /dev/urandom; } > junk.vmdk
expect_error K1 junk "junk.vmdk: not a VMDK file" junk.vmdk
printf 'hello world\n' > text.vmdk
expect_error K1 text "text.vmdk: not a VMDK file" text.vmdk
: > empty.vmdk
expect_error K1 empty "empty.vmdk: not a VMDK file" empty.vmdk
# A split image (twoGbMaxExtentSparse, two extents) whose second extent
# has lost its magic.
mkdir two-magic
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse two-magic/d.vmdk 3G
test -f two-magic/d-s002.vmdk
patch two-magic/d-s002.vmdk 0 'XXXX'
expect_error K1 bad-magic-in-sparse-extent \
             'd-s002.vmdk: sparse extent has neither "KDMV" nor "COWD" magic' \
             two-magic/d.vmdk

head -c 100 s.vmdk > trunc.vmdk
expect_error K2 truncated-header \
             "trunc.vmdk: sparse header is truncated (100 of 512 bytes)" \
             trunc.vmdk
head -c 4 s.vmdk > trunc4.vmdk
expect_error K2 truncated-header-4 \
             "trunc4.vmdk: sparse header is truncated (4 of 512 bytes)" \
             trunc4.vmdk

variant ver.vmdk s.vmdk 4 4 9
expect_error K3 header-version-9 \
             "ver.vmdk: sparse header version 9 is not supported" ver.vmdk
variant ver0.vmdk s.vmdk 4 4 0
expect_error K3 header-version-0 \
             "ver0.vmdk: sparse header version 0 is not supported" ver0.vmdk

variant g0.vmdk s.vmdk 20 8 0
expect_error K4 grain-size-0 \
             "g0.vmdk: sparse header grainSize 0 sectors is invalid" g0.vmdk
variant g3.vmdk s.vmdk 20 8 3
expect_error K4 grain-size-3 \
             "g3.vmdk: sparse header grainSize 3 sectors is invalid" g3.vmdk
variant g30.vmdk s.vmdk 20 8 $(( 1 << 30 ))
expect_error K4 grain-size-2^30 \
             "g30.vmdk: sparse header grainSize 1073741824 sectors is invalid" \
             g30.vmdk
variant g63.vmdk s.vmdk 20 8 $(( 1 << 63 ))
expect_error K4 grain-size-2^63 \
             "g63.vmdk: sparse header grainSize 9223372036854775808 sectors is invalid" \
             g63.vmdk

variant n0.vmdk s.vmdk 44 4 0
expect_error K5 numgtes-0 "n0.vmdk: sparse header numGTEsPerGT 0 is invalid" \
             n0.vmdk
variant nbig.vmdk s.vmdk 44 4 4294967295
expect_error K5 numgtes-huge \
             "nbig.vmdk: sparse header numGTEsPerGT 4294967295 is invalid" \
             nbig.vmdk

variant cap.vmdk s.vmdk 12 8 $(( 1 << 62 ))
expect_error K6 capacity-huge \
             "cap.vmdk: sparse header capacity 4611686018427387904 sectors is too large" \
             cap.vmdk
# No embedded descriptor (descriptorOffset 0): the header is all there is.
variant cap0.vmdk s.vmdk 28 8 0
put_le cap0.vmdk 12 8 0
expect_error K6 capacity-0-bare \
             "cap0.vmdk: header capacity 0 sectors is invalid and there is no descriptor" \
             cap0.vmdk

# 2^40 sectors in 1-sector grains, one entry per table: 2^40 tables.
variant gdmax.vmdk s.vmdk 12 8 $(( 1 << 40 ))
put_le gdmax.vmdk 20 8 1
put_le gdmax.vmdk 44 4 1
expect_error K7 gd-entries-over-limit \
             "gdmax.vmdk: the grain directory would have 1099511627776 entries" \
             gdmax.vmdk

variant oh.vmdk s.vmdk 64 8 $(( 1 << 40 ))
expect_served K8 overhead-past-eof - oh.vmdk <<EOF
data 0 $M 1
data $M $M 0
ro overHead
EOF
# 2^55 sectors is 2^64 bytes: must not wrap to 0.
variant ohwrap.vmdk s.vmdk 64 8 $(( 1 << 55 ))
expect_served K8 overhead-overflow - ohwrap.vmdk <<EOF
data 0 $M 1
data $M $M 0
ro overHead
EOF

variant gd.vmdk s.vmdk 56 8 $(( 1 << 44 ))
expect_error K9 gd-beyond-eof \
             "~gd\.vmdk: grain directory at sector 17592186044416 \(1 entries\) lies beyond the end of the file" \
             gd.vmdk
variant gd0.vmdk s.vmdk 56 8 0
expect_error K9 gd-offset-0 "gd0.vmdk: sparse header gdOffset is 0" gd0.vmdk
variant gdend.vmdk s.vmdk 56 8 -1
expect_error K9 gd-at-end-uncompressed \
             "gdend.vmdk: gdOffset is GD_AT_END but the image is not compressed" \
             gdend.vmdk

variant rgd.vmdk s.vmdk 48 8 $(( 1 << 30 ))
expect_served K10 rgd-past-eof - rgd.vmdk <<EOF
data 0 $M 1
ro rgd\.vmdk: the redundant grain directory lies outside the file
EOF

variant doff.vmdk s.vmdk 28 8 1000000
expect_error K11 desc-offset-past-eof \
             "doff.vmdk: descriptorOffset 1000000 sectors lies beyond the end of the file" \
             doff.vmdk
variant dsize.vmdk s.vmdk 36 8 $(( 1 << 62 ))
expect_served K11 desc-size-huge - dsize.vmdk <<EOF
size $(( 10 * M ))
data 0 $M 1
EOF

cp s.vmdk crlf.vmdk
patch crlf.vmdk 73 '\n \n\n'
expect_error K12 crlf \
             "crlf.vmdk: sparse header newline detector bytes are wrong: the file was corrupted by CR/LF translation" \
             crlf.vmdk

variant fl.vmdk s.vmdk 8 4 $(( 0x40003 ))
expect_error K13 flags-incompat \
             "fl.vmdk: sparse header flags 0x00040003 has unknown incompatible bits 0x00040000" \
             fl.vmdk
variant flc.vmdk s.vmdk 8 4 $(( 0x8003 ))
expect_served K13 flags-compat-unknown - flc.vmdk <<EOF
data 0 $M 1
EOF

variant cz.vmdk s.vmdk 8 4 $(( 0x10003 ))
put_le cz.vmdk 77 2 1
expect_error K14 compressed-no-markers \
             "cz.vmdk: compressed grains without grain markers (flags 0x00010003) are not supported" \
             cz.vmdk
variant ca2.vmdk s.vmdk 8 4 $(( 0x30003 ))
put_le ca2.vmdk 77 2 2
expect_error K14 compress-algorithm-2 \
             "ca2.vmdk: sparse header compressAlgorithm 2 is not supported" ca2.vmdk
variant ca1.vmdk s.vmdk 77 2 1
expect_error K14 compress-algorithm-without-flag \
             "ca1.vmdk: sparse header compressAlgorithm 1 is set but the compressed flag is not" \
             ca1.vmdk

# =====================================================================
# Grain directories and tables.  k.vmdk: 40 MiB (two tables of 512
# 64 KiB grains), grains 0-4 written with bytes 0x11-0x15 (allocated in
# that order), grain 528 (33 MiB, table 1) with 0x21.

make_two_table_image k.vmdk
gd=$(u64 k.vmdk 56)
gte3=$(kdmv_gte_offset k.vmdk 3)

variant gde.vmdk k.vmdk $(( gd * 512 + 4 )) 4 4000000000
expect_served G1 gde-past-eof \
              "gde.vmdk: grain directory entry 1 points outside the file: corrupt image" \
              gde.vmdk <<EOF
eio $(( 33 * M )) $G
mapeio $(( 33 * M )) $G
map 0 $(( 32 * M ))
eio $(( 39 * M )) $G
data 0 $G 0x11
data $(( 256 * 1024 )) $G 0x15
data $(( 32 * M - G )) $G 0
ro gde\.vmdk: a grain directory entry points outside the file
EOF

# Table 1 (32-40 MiB) becomes a hole in both directories: its data is
# gone (zeroes); the default mode writes there through a new table.
variant hole.vmdk k.vmdk $(( gd * 512 + 4 )) 4 0
put_le hole.vmdk $(( $(u64 k.vmdk 48) * 512 + 4 )) 4 0
expect_served G7 gd-hole - hole.vmdk <<EOF
data $(( 33 * M )) $G 0
data 0 $G 0x11
wdata $(( 36 * M )) $(( 2 * G )) 0x77
data $(( 33 * M )) $G 0
data 0 $G 0x11
EOF

variant gte.vmdk k.vmdk "$gte3" 4 4000000000
expect_served G3 gte-past-eof \
              "~gte\.vmdk: grain table 0 entry 3 = 4000000000 points outside the file \(size [0-9]+ bytes\): corrupt image" \
              gte.vmdk <<EOF
eio $(( 3 * G )) $G
mapeio $(( 3 * G + 512 )) 512
map 0 $(( 3 * G ))
map $(( 4 * G )) $(( 36 * M ))
data $(( 2 * G )) $G 0x13
data $(( 4 * G )) $G 0x15
data $(( 33 * M )) $G 0x21
EOF

variant gte1.vmdk k.vmdk "$gte3" 4 1
expect_served G4 gte-1-without-flag \
              "gte1.vmdk: grain table 0 entry 3 = 1, a zeroed grain, but the header flags 0x00000003 lack the zeroed-grain bit 0x4" \
              gte1.vmdk <<EOF
eio $(( 3 * G )) $G
mapeio $(( 3 * G )) $G
data $(( 2 * G )) $G 0x13
data $(( 4 * G )) $G 0x15
EOF
# With the zeroed-grain flag (bit 2) and header version 2: zeroes.
variant gte1z.vmdk gte1.vmdk 8 4 7
put_le gte1z.vmdk 4 4 2
expect_served G4 gte-1-zeroed-grain - gte1z.vmdk <<EOF
data $(( 3 * G )) $G 0
data $(( 2 * G )) $G 0x13
data $(( 4 * G )) $G 0x15
EOF

# Grain 3 points at the grain directory.  Reading serves those bytes
# (no reader can tell), but a write must never go through it.
variant meta.vmdk k.vmdk "$gte3" 4 "$gd"
rgd=$(u64 k.vmdk 48)
overhead=$(u64 k.vmdk 64)
dd if=meta.vmdk of=meta.before bs=512 skip="$rgd" count=$(( overhead - rgd )) \
   status=none
expect_served G5 gte-into-metadata - meta.vmdk <<EOF
readable $(( 3 * G )) $G
weio $(( 3 * G )) $G 0x55
weio $(( 3 * G + 4096 )) 512 0x55
data $(( 2 * G )) $G 0x13
data $(( 4 * G )) $G 0x15
rwlog meta\.vmdk: grain table 0 entry 3 points into the metadata
EOF
dd if=meta.vmdk of=meta.after bs=512 skip="$rgd" count=$(( overhead - rgd )) \
   status=none
if ! cmp meta.before meta.after; then
    fail "gte-into-metadata: the grain directory or tables changed"
fi
cd ..

malformed_finish
