#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile seSparse extents: one case for each pitfall
# known from the other implementations (shared/VMDK-FORMAT.md), each
# asserting the exact outcome (refused, EIO or served:
# tests/malformed.sh) in both open modes, the default (read-write) and
# readonly=true.  Images come from tests/mksesparse.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
#
# seSparse
# E1  constant header magic -> refused
#     from: QEMU vmdk_open_se_sparse (strict checks)
#     cases: se-ok se-magic
# E2  version other than 0x200000001 -> refused
#     from: QEMU vmdk_open_se_sparse
#     cases: se-version
# E3  grain size other than 8 sectors -> refused
#     from: QEMU vmdk_open_se_sparse
#     cases: se-grain-size
# E4  grain table size other than 64 sectors -> refused
#     from: QEMU vmdk_open_se_sparse
#     cases: se-gt-size
# E5  flags, reserved fields, header padding not zero -> refused
#     from: QEMU vmdk_open_se_sparse
#     cases: se-flags se-reserved se-header-padding
# E6  volatile header magic or padding -> refused
#     from: QEMU (dissect.hypervisor's constant says CAFEBABE)
#     cases: se-volatile-magic se-volatile-padding
# E7  replay_journal set (dirty journal) -> refused
#     from: QEMU "Image is dirty, Replaying journal not supported"
#     cases: se-dirty-journal
# E8  regions past EOF or overflowing, GD too small, offsets 0,
#     truncated or empty extent -> refused
#     from: QEMU checks none of the region bounds
#     cases: se-backmap-past-eof se-journal-size-overflow se-grains-past-eof
#     cases: se-grains-size-overflow se-gd-too-small se-gd-offset-0
#     cases: se-huge-capacity se-truncated se-empty-extent
# E9  GD entry with wrong top bits or a table index past the region -> EIO
#     from: QEMU GD entry top-32-bits check (vmdk.c 1527-1545)
#     cases: se-gde-top-bits se-gde-index
# E10 GT entry with a bad type nibble, or type 0 not all zero -> EIO
#     from: QEMU GT type nibble check (vmdk.c 1603-1626)
#     cases: se-gte-nibble-5 se-gte-0-not-zero
# E11 cluster past EOF or past the grains region -> EIO
#     from: QEMU reads the cluster blindly
#     cases: se-cluster-past-eof se-cluster-past-region
#     cases: se-split-cluster-past-eof

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

requires_built mksesparse
mksesparse="$abs_builddir/mksesparse"
malformed_start

# =====================================================================
# seSparse.  m.raw: 20 MiB, 4 KiB grains 0-15 written with bytes 1-16,
# 17 MiB + 64 KiB with 0x31; mksesparse writes the extent (clusters in
# order) and a descriptor, with any field overridden.  seSparse is
# always served read-only.

mkdir e
cd e
truncate -s $(( 20 * M )) m.raw
for (( g = 0; g < 16; g++ )); do
    write_pattern m.raw $(( g * 4096 )) 4096 $(( g + 1 ))
done
write_pattern m.raw $(( 17 * M )) $G 49
se_ro='seSparse extents are read-only'

"$mksesparse" m.raw ok-extent.vmdk ok.vmdk
expect_served E1 se-ok - ok.vmdk <<EOF
data 0 4096 1
data $(( 15 * 4096 )) 4096 16
data $(( 17 * M )) $G 49
ro $se_ro
EOF

# se_bad ID NAME MESSAGE MKSESPARSE-OPTIONS...: refused at open.
se_bad ()
{
    local id="$1" name="$2" msg="$3"
    shift 3
    "$mksesparse" "$@" m.raw "$name-extent.vmdk" "$name.vmdk"
    expect_error "$id" "$name" "$name-extent.vmdk: seSparse $msg" "$name.vmdk"
}
se_bad E1 se-magic \
       "constant header: magic is 0x00000000cafebabf, expected 0x00000000cafebabe" \
       --hdr=magic=0xcafebabf
se_bad E2 se-version \
       "constant header: version is 0x0000000200000002, expected 0x0000000200000001" \
       --hdr=version=0x200000002
se_bad E3 se-grain-size \
       "constant header: grain_size (sectors) is 16, expected 8" \
       --hdr=grain_size=16
se_bad E4 se-gt-size \
       "constant header: grain_table_size (sectors) is 128, expected 64" \
       --hdr=grain_table_size=128
se_bad E5 se-flags \
       "constant header: flags is 0x0000000000000001, expected 0x0000000000000000" \
       --hdr=flags=1
se_bad E5 se-reserved "constant header: reserved3 is 0x0000000000000007" \
       --hdr=reserved3=7
se_bad E5 se-header-padding \
       "constant header: padding byte at offset 300 is 0x01" --poke=300=1
se_bad E6 se-volatile-magic \
       "volatile header: magic is 0x0000000000000000, expected 0x00000000cafecafe" \
       --vol=magic=0
se_bad E6 se-volatile-padding "volatile header: padding byte at offset 40" \
       --poke=$(( 512 + 40 ))=9
se_bad E7 se-dirty-journal \
       "volatile header: replay_journal is 1, expected 0: the journal needs replay" \
       --vol=replay_journal=1
se_bad E8 se-backmap-past-eof \
       "constant header: backmap_offset 99999999 + backmap_size 8 sectors lies beyond the end" \
       --hdr=backmap_offset=99999999
se_bad E8 se-journal-size-overflow \
       "constant header: journal_offset 4 + journal_size 18446744073709551615 sectors lies beyond" \
       --hdr=journal_size=0xffffffffffffffff
se_bad E8 se-grains-past-eof \
       "constant header: grains_offset 999999 starts beyond the end of the file" \
       --hdr=grains_offset=999999
se_bad E8 se-grains-size-overflow \
       "constant header: grains_offset 153 + grains_size 18446744073709551600 sectors overflows" \
       --hdr=grains_size=0xfffffffffffffff0
se_bad E8 se-gd-too-small \
       "constant header: grain_dir_size 0 sectors holds 0 entries, but capacity 40960 sectors" \
       --hdr=grain_dir_size=0
se_bad E8 se-gd-offset-0 \
       "constant header: grain_dir_offset is 0, overlapping the constant header" \
       --hdr=grain_dir_offset=0
se_bad E8 se-huge-capacity \
       "constant header: grain_dir_size 1 sectors holds 64 entries, but capacity" \
       --hdr=capacity=0xffffffffffffffff
se_bad E8 se-truncated \
       "constant header: grain_dir_offset 8 + grain_dir_size 1 sectors lies beyond" \
       --truncate=4096
"$mksesparse" m.raw se-empty-extent-extent.vmdk se-empty-extent.vmdk
: > se-empty-extent-extent.vmdk
expect_error E8 se-empty-extent \
             "~se-empty-extent-extent\.vmdk: .*seSparse constant header" \
             se-empty-extent.vmdk

# se_eio ID NAME MESSAGE BAD-OFFSET BAD-LENGTH GOOD-CHECKS MKSESPARSE-OPTIONS...
se_eio ()
{
    local id="$1" name="$2" msg="$3" off="$4" len="$5" good="$6"
    shift 6
    "$mksesparse" "$@" m.raw "$name-extent.vmdk" "$name.vmdk"
    expect_served "$id" "$name" "~$name-extent\\.vmdk: $msg" "$name.vmdk" <<EOF
eio $off $len
$good
ro $se_ro
EOF
}
se_eio E9 se-gde-top-bits \
       "grain directory entry 0 = 0x2000000000000000: top 32 bits are not 0x10000000" \
       0 4096 "data $(( 17 * M )) $G 49" --gde=0=0x2000000000000000
se_eio E9 se-gde-index \
       "grain directory entry 1 = 0x10000000000000ff: grain table index lies beyond the grain_tables region" \
       $(( 17 * M )) 4096 "data 0 4096 1" --gde=1=0x10000000000000ff
se_eio E10 se-gte-nibble-5 \
       "grain table 0 entry 5 = 0x5000000000000005: invalid entry type 0x5" \
       $(( 5 * 4096 )) 4096 "data $(( 4 * 4096 )) 4096 5
data $(( 6 * 4096 )) 4096 7" --gte=5=0x5000000000000005
se_eio E10 se-gte-0-not-zero \
       "grain table 0 entry 6 = 0x0000000000000001: invalid entry type 0x0 \(unallocated, but not all zero\)" \
       $(( 6 * 4096 )) 4096 "data $(( 5 * 4096 )) 4096 6" \
       --gte=6=0x0000000000000001
# Cluster 2000 is inside the grains region (5120 grains) but past EOF.
se_eio E11 se-cluster-past-eof \
       "grain table 0 entry 7 = 0x[0-9a-f]+: grain 2000 at byte [0-9]+ lies beyond the end of the file" \
       $(( 7 * 4096 )) 4096 "data $(( 8 * 4096 )) 4096 9" --gte-cluster=7=2000
se_eio E11 se-cluster-past-region \
       "grain table 0 entry 8 = 0x[0-9a-f]+: grain 6000 lies outside the grains region" \
       $(( 8 * 4096 )) 4096 "data $(( 7 * 4096 )) 4096 8" --gte-cluster=8=6000
# Split encoding: cluster 4096 + 3 (low bits 3, high 1).
se_eio E11 se-split-cluster-past-eof \
       "grain table 0 entry 9 = 0x3003000000000001: grain 4099 at byte" \
       $(( 9 * 4096 )) 4096 "data $(( 10 * 4096 )) 4096 11" --gte-cluster=9=4099
cd ..

malformed_finish
