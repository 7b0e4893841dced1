#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Hostile parent chains and file names (extents and parents escaping
# their directory, host files, devices, FIFOs): one case for each
# pitfall known from the other implementations (shared/VMDK-FORMAT.md),
# each asserting the exact outcome (refused, EIO or served:
# tests/malformed.sh) in both open modes, the default (read-write) and
# readonly=true.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
#
# Chains
# L1  parentCID does not match the parent's CID -> refused (served with a
#     warning under ignore-parent-cid=true)
#     from: QEMU iotest 225 (checked lazily, reads fail later)
#     cases: chain-ok parentcid-mismatch parentcid-mismatch-ignored
# L2  parent missing -> refused
#     from: QEMU opens backing files by name
#     cases: parent-missing
# L3  loop A -> B -> A, A -> A -> refused
#     from: no reader checks for cycles (infinite recursion)
#     cases: chain-loop chain-self-loop
# L4  deeper than 128 links -> refused (128 served)
#     from: stack and fd exhaustion
#     cases: chain-depth-128 chain-depth-129
# L5  parent name escaping the directory (.., absolute, symlink); json:
#     parent names are plain files -> refused
#     from: CVE-2024-4467; parentFileNameHint is attacker data
#     cases: parent-dotdot parent-absolute-outside parent-symlink-escape
#     cases: parent-json-name
#     (cowd-parent-escape, a COWD redo log's parent: test-malformed-cowd.sh)
# L6  parentCID set but no parentFileNameHint -> refused
#     from: libvmdk refuses reads with no parent
#     cases: parentcid-without-hint
# L7  parent is a FIFO -> refused, never blocks
#     from: open(2) of a FIFO for reading waits for a writer
#     cases: parent-fifo
#
# Paths
# F1  absolute extent name outside the directory -> refused
#     from: CVE-2022-47951 FLAT extent naming a host file
#     cases: absolute-path absolute-secret
# F2  ".." escape, also after our own directory's absolute prefix
#     -> refused
#     from: CVE-2022-47951; VBox does not filter ".."
#     cases: dotdot-path own-dir-then-dotdot
# F3  symlink escaping the directory (file, or a directory on the way)
#     -> refused
#     from: CVE-2022-47951 variants
#     (a symlink staying inside is served; under valgrind, which lacks
#     openat2, the engine's fallback refuses every symlink)
#     cases: symlink-outside symlinked-subdir symlink-inside
# F4  symlink into /etc -> refused
#     from: CVE-2022-47951 variants
#     cases: symlink-absolute
# F5  directory as an extent or as the image -> refused
#     from: read(2) on a directory fails late
#     cases: extent-is-directory directory
# F6  device node as an extent, via a symlink to /dev or inside the
#     directory, or as the image -> refused
#     from: device extents are refused unless enabled (Decisions)
#     cases: dev-zero-symlink dev-null-symlink dev-node-inside
#     cases: image-is-dev-zero
# F7  FIFO as an extent or as the image -> refused, never blocks
#     from: open(2) of a FIFO for reading waits for a writer
#     cases: fifo-extent image-is-fifo
# F8  image file that does not exist -> refused
#     from: plain usage error, must not crash
#     cases: nonexistent

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

malformed_start mkfifo

# =====================================================================
# Chains: descriptors with one ZERO extent over a parent (the reads
# fall through to the parent where the child is unallocated; ZERO
# extents never are, so only the open path matters here).

mkdir l
cd l
ldir=$(pwd -P)

# link FILE CID PARENTCID [PARENT-NAME]
link ()
{
    {
        printf '# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\n' \
               "$2" "$3"
        if [ $# -ge 4 ]; then printf 'parentFileNameHint="%s"\n' "$4"; fi
        printf 'createType="custom"\n\nRW 8 ZERO\n'
    } > "$1"
}
link base.vmdk 0000000b ffffffff
link child.vmdk 0000000c 0000000b base.vmdk
expect_served L1 chain-ok - child.vmdk <<EOF
size 4096
data 0 4096 0
EOF
link bad-cid.vmdk 0000000c 0000000a base.vmdk
expect_error L1 parentcid-mismatch \
             "bad-cid.vmdk: parentCID=0000000a does not match CID=0000000b of its parent base.vmdk" \
             bad-cid.vmdk
expect_served L1 parentcid-mismatch-ignored \
              "warning: bad-cid.vmdk: parentCID=0000000a does not match CID=0000000b of its parent base.vmdk: opening anyway" \
              bad-cid.vmdk ignore-parent-cid=true <<EOF
size 4096
EOF
link orphan.vmdk 0000000c 0000000b gone.vmdk
expect_error L2 parent-missing \
             "orphan.vmdk: parent \"gone.vmdk\": open: $ldir/gone.vmdk: No such file or directory" \
             orphan.vmdk
link loop-a.vmdk 0000000a 0000000b loop-b.vmdk
link loop-b.vmdk 0000000b 0000000a loop-a.vmdk
expect_error L3 chain-loop \
             "loop-a.vmdk: the parent chain loops back to this file (parentFileNameHint cycle)" \
             loop-a.vmdk
link self.vmdk 0000000a 0000000a self.vmdk
expect_error L3 chain-self-loop \
             "self.vmdk: the parent chain loops back to this file (parentFileNameHint cycle)" \
             self.vmdk
# link-K names link-(K+1); link-129 is the base: 129 links from link-1.
for (( i = 1; i <= 128; i++ )); do
    link "link-$i.vmdk" "$(printf '%08x' "$i")" "$(printf '%08x' $(( i + 1 )))" \
         "link-$(( i + 1 )).vmdk"
done
link link-129.vmdk 00000081 ffffffff
expect_served L4 chain-depth-128 - link-2.vmdk <<EOF
size 4096
EOF
expect_error L4 chain-depth-129 \
             "link-129.vmdk: the parent chain is deeper than 128 links" link-1.vmdk

leak_check=yes
link esc-dotdot.vmdk 0000000c 5ec2e75e ../secret.vmdk
expect_error L5 parent-dotdot \
             "esc-dotdot.vmdk: parentFileNameHint \"../secret.vmdk\": open: ..: refusing a directory outside $ldir" \
             esc-dotdot.vmdk
link esc-abs.vmdk 0000000c 5ec2e75e "$scratch/secret.vmdk"
expect_error L5 parent-absolute-outside \
             "esc-abs.vmdk: parentFileNameHint \"$scratch/secret.vmdk\": open: $scratch: refusing a directory outside $ldir" \
             esc-abs.vmdk
ln -s ../secret.vmdk secret-link.vmdk
link esc-link.vmdk 0000000c 5ec2e75e secret-link.vmdk
expect_error L5 parent-symlink-escape \
             "esc-link.vmdk: parent \"secret-link.vmdk\": open: secret-link.vmdk: refusing a file outside $ldir" \
             esc-link.vmdk
link esc-json.vmdk 0000000c 5ec2e75e "json:{'file.filename':'$scratch/secret.vmdk'}"
expect_error L5 parent-json-name \
             "~esc-json\.vmdk: parentFileNameHint \"json:.*\": open: .*json:.*: No such file or directory" \
             esc-json.vmdk
leak_check=no

link nohint.vmdk 0000000c 0000000b
expect_error L6 parentcid-without-hint \
             "nohint.vmdk: parentCID is 0000000b (not ffffffff) but there is no parentFileNameHint naming the parent" \
             nohint.vmdk

mkfifo parent.fifo
link fifo-child.vmdk 0000000c 0000000b parent.fifo
case_timeout=$T_FIFO expect_error L7 parent-fifo \
        "fifo-child.vmdk: parent \"parent.fifo\": open: parent.fifo: not a regular file" \
        fifo-child.vmdk
cd ..
# =====================================================================
# Paths: extent names must resolve to regular files inside the
# directory of the file naming them.

mkdir p
cd p
pdir=$(pwd -P)
truncate -s 1M x.vmdk
leak_check=yes
desc abs.vmdk monolithicFlat 'RW 8 FLAT "/etc/passwd" 0'
expect_error F1 absolute-path \
             "open: /etc/passwd: refusing a file outside $pdir (absolute path, \"..\" or symlink escaping the directory; allow-dir permits more)" \
             abs.vmdk
desc abs2.vmdk monolithicFlat "RW 2048 FLAT \"$scratch/secret.raw\" 0"
expect_error F1 absolute-secret \
             "open: $scratch/secret.raw: refusing a file outside $pdir" abs2.vmdk
desc dotdot.vmdk monolithicFlat 'RW 2048 FLAT "../secret.raw" 0'
expect_error F2 dotdot-path \
             "open: ../secret.raw: refusing a file outside $pdir" dotdot.vmdk
desc owndd.vmdk monolithicFlat "RW 2048 FLAT \"$pdir/../secret.raw\" 0"
expect_error F2 own-dir-then-dotdot \
             "open: $pdir/../secret.raw: refusing a file outside $pdir" owndd.vmdk
ln -s ../secret.raw link-out.vmdk
desc symlink.vmdk monolithicFlat 'RW 2048 FLAT "link-out.vmdk" 0'
expect_error F3 symlink-outside \
             "open: link-out.vmdk: refusing a file outside $pdir" symlink.vmdk
ln -s .. up
desc subdir.vmdk monolithicFlat 'RW 2048 FLAT "up/secret.raw" 0'
expect_error F3 symlinked-subdir \
             "open: up/secret.raw: refusing a file outside $pdir" subdir.vmdk
ln -s x.vmdk link-in.vmdk
desc symlink-in.vmdk monolithicFlat 'RW 2048 FLAT "link-in.vmdk" 0'
if [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then
    # valgrind has no openat2: the engine's fallback walk refuses every
    # symlink (stricter than RESOLVE_BENEATH, never weaker).
    expect_error F3 symlink-inside \
                 "open: link-in.vmdk: refusing a file outside $pdir" \
                 symlink-in.vmdk
else
    expect_served F3 symlink-inside - symlink-in.vmdk <<EOF
size $M
data 0 $M 0
EOF
fi
ln -s /etc/passwd link-abs.vmdk
desc symlink-abs.vmdk monolithicFlat 'RW 1 FLAT "link-abs.vmdk" 0'
expect_error F4 symlink-absolute \
             "open: link-abs.vmdk: refusing a file outside $pdir" symlink-abs.vmdk

mkdir sub
desc dir.vmdk monolithicFlat 'RW 100 FLAT "sub" 0'
expect_error F5 extent-is-directory \
             "~dir\.vmdk: line 8: extent .*(open: sub: not a regular file|sub: Is a directory)" \
             dir.vmdk
expect_error F5 directory "$pdir/sub: not a regular file" sub

ln -s /dev/zero zero.raw
desc devzero.vmdk monolithicFlat 'RW 100 FLAT "zero.raw" 0'
expect_error F6 dev-zero-symlink \
             "open: zero.raw: refusing a file outside $pdir" devzero.vmdk
ln -s /dev/null null.raw
desc devnull.vmdk monolithicFlat 'RW 100 FLAT "null.raw" 0'
expect_error F6 dev-null-symlink \
             "open: null.raw: refusing a file outside $pdir" devnull.vmdk
if mknod zero.dev c 1 5 2>/dev/null; then
    desc devnode.vmdk monolithicFlat 'RW 100 FLAT "zero.dev" 0'
    expect_error F6 dev-node-inside \
                 "open: zero.dev: not a regular file" \
                 devnode.vmdk
else
    # Unprivileged: no device node can be made here; the case is
    # recorded (a symlink to /dev/zero is refused earlier anyway).
    echo "$0: mknod not permitted: dev-node-inside not run"
    new_case F6 dev-node-inside
fi
expect_error F6 image-is-dev-zero "/dev/zero: not a regular file" /dev/zero

mkfifo extent.fifo
desc fifo.vmdk monolithicFlat 'RW 100 FLAT "extent.fifo" 0'
case_timeout=$T_FIFO expect_error F7 fifo-extent \
        "open: extent.fifo: not a regular file" fifo.vmdk
case_timeout=$T_FIFO expect_error F7 image-is-fifo \
        "$pdir/extent.fifo: not a regular file" extent.fifo
leak_check=no

expect_error F8 nonexistent "nonexistent.vmdk: No such file or directory" \
             nonexistent.vmdk
cd ..

malformed_finish
