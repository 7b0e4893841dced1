#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile COWD (VMDK3 / vmfsSparse) extents: one case for
# each pitfall known from the other implementations
# (shared/VMDK-FORMAT.md), each asserting the exact outcome (refused, EIO
# or served: tests/malformed.sh) in both open modes, the default
# (read-write) and readonly=true.  Images come from tests/mkcowd,
# patched with dd.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
#
# COWD (VMDK3 / vmfsSparse)
# C1  version other than 1 -> refused
#     from: QEMU/libvmdk COWD header
#     cases: cowd-ok cowd-version
# C2  capacity 0 -> refused
#     from: libvmdk COWD checks
#     cases: cowd-capacity-0
# C3  grainSize 0, not a power of 2, too large -> refused
#     from: GT coverage 0 (libvmdk issue #22 again)
#     cases: cowd-grain-0 cowd-grain-3 cowd-grain-4096
# C4  GD sector inside the 2048-byte header -> refused
#     from: QEMU reads the GD wherever the header says
#     cases: cowd-gd-in-header
# C5  GD past EOF -> refused
#     from: QEMU reads the GD wherever the header says
#     cases: cowd-gd-past-eof
# C6  too few GD entries for the capacity -> refused
#     from: QEMU "L1 index >= l1_size" only at access time
#     cases: cowd-gd-too-few
# C7  truncated header (in the first sector, in the 2048 bytes) -> refused
#     from: QEMU reads VMDK3Header from offset 4
#     cases: cowd-truncated-100 cowd-truncated-1000 cowd-truncated-desc
# C8  parent file name not NUL-terminated -> refused
#     from: a 1024-byte field (libvmdk doc); strlen would run off it
#     cases: cowd-parent-unterminated
#
# Grain directories and tables, on COWD extents (the rest of the G
# family: test-malformed-kdmv.sh)
# G1  GD entry past EOF -> EIO on that table's range only (the default
#     mode serves read-only)
#     from: QEMU "check" only flags offsets after EOF; no open check
#     cases: cowd-gde-past-eof
# G2  GD entry inside the header -> EIO on that table's range only
#     from: COWD's 4-sector header (a KDMV header is one sector: an entry
#     pointing into it would be 0, a hole, G7)
#     cases: cowd-gde-header
# G3  GT entry past EOF -> EIO on that grain only
#     from: QEMU vmdk_co_check "cluster offset points after EOF"
#     cases: cowd-gte-past-eof
# G6  GT entry inside the header -> EIO
#     from: COWD 4-sector header; libvmdk treats GTE 1 as sector 1
#     cases: cowd-gte-header
#
# Chains, a COWD redo log's parent (the rest of the L family:
# test-malformed-paths.sh)
# L5  parent name escaping the directory -> refused
#     from: CVE-2024-4467; parentFileNameHint is attacker data
#     cases: cowd-parent-escape

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

requires_built mkcowd
mkcowd="$abs_builddir/mkcowd"
malformed_start

# =====================================================================
# COWD.  c.vmdk: mkcowd's copy of c.raw, 20 MiB in 4 KiB grains (two
# tables of 16 MiB), grains 0-9 written with bytes 1-10 (allocated in
# order), 17 MiB + 64 KiB with 0x31.  Header offsets: version 4, flags 8,
# capacity 12, grainSize 16, GD sector 20, GD entries 24; the GD at
# sector 4.

mkdir c
cd c
truncate -s $(( 20 * M )) c.raw
for (( g = 0; g < 10; g++ )); do
    write_pattern c.raw $(( g * 4096 )) 4096 $(( g + 1 ))
done
write_pattern c.raw $(( 17 * M )) $G 49
"$mkcowd" -g 8 -D c-desc.vmdk c.raw c.vmdk
gt0=$(u32 c.vmdk 2048)
test "$gt0" -gt 4

expect_served C1 cowd-ok - c.vmdk <<EOF
data 0 4096 1
data $(( 9 * 4096 )) 4096 10
data $(( 17 * M )) $G 49
EOF
variant cv.vmdk c.vmdk 4 4 2
expect_error C1 cowd-version \
             "cv.vmdk: COWD header version is 2, only version 1 is known" cv.vmdk
variant cc0.vmdk c.vmdk 12 4 0
expect_error C2 cowd-capacity-0 "cc0.vmdk: COWD header capacity is 0 sectors" \
             cc0.vmdk
variant cg0.vmdk c.vmdk 16 4 0
expect_error C3 cowd-grain-0 \
             "cg0.vmdk: COWD header grainSize is 0 sectors, it must be a power of 2 from 1 to 2048" \
             cg0.vmdk
variant cg3.vmdk c.vmdk 16 4 3
expect_error C3 cowd-grain-3 "cg3.vmdk: COWD header grainSize is 3 sectors" \
             cg3.vmdk
variant cg4096.vmdk c.vmdk 16 4 4096
expect_error C3 cowd-grain-4096 \
             "cg4096.vmdk: COWD header grainSize is 4096 sectors" cg4096.vmdk
variant cgdh.vmdk c.vmdk 20 4 1
expect_error C4 cowd-gd-in-header \
             "cgdh.vmdk: COWD header grain directory sector is 1, inside the 2048-byte header" \
             cgdh.vmdk
variant cgdf.vmdk c.vmdk 20 4 1048576
expect_error C5 cowd-gd-past-eof \
             "~cgdf\.vmdk: COWD grain directory at sector 1048576 \(2 entries\) lies beyond the end of the file" \
             cgdf.vmdk
variant cgdn.vmdk c.vmdk 24 4 1
expect_error C6 cowd-gd-too-few \
             "cgdn.vmdk: COWD header says the grain directory has 1 entries, too few to cover the capacity of 40960 sectors (2 needed with 8-sector grains)" \
             cgdn.vmdk
head -c 100 c.vmdk > ct100.vmdk
expect_error C7 cowd-truncated-100 "ct100.vmdk: COWD header is truncated" \
             ct100.vmdk
head -c 1000 c.vmdk > ct1000.vmdk
expect_error C7 cowd-truncated-1000 \
             "ct1000.vmdk: COWD header is truncated: the file is 1000 bytes, the header 2048" \
             ct1000.vmdk
sed 's/"c.vmdk"/"ct1000.vmdk"/' c-desc.vmdk > ct-desc.vmdk
expect_error C7 cowd-truncated-desc \
             "~ct-desc\.vmdk: line [0-9]+: extent .*ct1000\.vmdk: COWD header is truncated" \
             ct-desc.vmdk

variant cgte.vmdk c.vmdk $(( gt0 * 512 + 5 * 4 )) 4 4000000000
expect_served G3 cowd-gte-past-eof \
              "cgte.vmdk: grain table 0 entry 5 = sector 4000000000 points outside the file" \
              cgte.vmdk <<EOF
eio $(( 5 * 4096 )) 4096
mapeio $(( 5 * 4096 )) 512
map 0 $(( 5 * 4096 ))
map $(( 6 * 4096 )) $(( 20 * M - 6 * 4096 ))
data $(( 4 * 4096 )) 4096 5
data $(( 6 * 4096 )) 4096 7
data $(( 17 * M )) $G 49
EOF
variant cgteh.vmdk c.vmdk $(( gt0 * 512 + 5 * 4 )) 4 2
expect_served G6 cowd-gte-header \
              "cgteh.vmdk: grain table 0 entry 5 = sector 2 points into the header" \
              cgteh.vmdk <<EOF
eio $(( 5 * 4096 )) 4096
data $(( 4 * 4096 )) 4096 5
data $(( 6 * 4096 )) 4096 7
EOF
variant cgde.vmdk c.vmdk $(( 2048 + 4 )) 4 4000000000
expect_served G1 cowd-gde-past-eof \
              "cgde.vmdk: grain directory entry 1 points outside the file" \
              cgde.vmdk <<EOF
eio $(( 17 * M )) $G
mapeio $(( 17 * M )) $G
map 0 $(( 16 * M ))
data 0 4096 1
data $(( 9 * 4096 )) 4096 10
ro cgde\.vmdk: grain directory entry 1 points into the header or outside the file
EOF
variant cgdeh.vmdk c.vmdk $(( 2048 + 4 )) 4 2
expect_served G2 cowd-gde-header \
              "cgdeh.vmdk: grain directory entry 1 points outside the file" \
              cgdeh.vmdk <<EOF
eio $(( 17 * M )) $G
data 0 4096 1
ro cgdeh\.vmdk: grain directory entry 1 points into the header or outside the file
EOF

# A child (redo log) names its parent in the header, where a root disk
# keeps its geometry (1024 bytes at 32).
"$mkcowd" -g 8 -p base.vmdk c.raw child.vmdk
cp child.vmdk cpu.vmdk
head -c 1024 /dev/zero | tr '\0' x |
    dd of=cpu.vmdk bs=1 seek=32 conv=notrunc status=none
expect_error C8 cowd-parent-unterminated \
             "cpu.vmdk: COWD parent file name is not NUL-terminated within its 1024 bytes" \
             cpu.vmdk
cdir=$(pwd -P)
"$mkcowd" -g 8 -p ../secret.vmdk c.raw cesc.vmdk
leak_check=yes
expect_error L5 cowd-parent-escape \
             "cesc.vmdk: parentFileNameHint \"../secret.vmdk\": open: ..: refusing a directory outside $cdir" \
             cesc.vmdk
leak_check=no
cd ..

malformed_finish
