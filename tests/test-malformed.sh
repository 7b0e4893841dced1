#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile VMDK input: one case for each pitfall known from
# the other implementations (shared/VMDK-FORMAT.md), each asserting the
# exact outcome, in both open modes (the default, read-write, and
# readonly=true):
#
#   refused  nbdkit stops at startup (get_ready) with a non-zero status
#            and the engine's message naming the file and the field or
#            value (a fixed string, or a regular expression after "~");
#   EIO      the image is served; reading the bad range fails with EIO
#            (twice: failures are not cached; the whole range and its
#            first sector), and the rest reads the expected bytes; the
#            server logs the engine's message;
#   served   the oddity is tolerated: the image reads the expected bytes.
#
# No case may crash (signal, sanitizer report, assertion), hang (every
# run has a timeout) or expose a host file: a recognizable secret file
# lies outside every image directory, and cases that name it check that
# neither the export nor the log ever contains it.  Every case runs
# even if an earlier one fails; the failures are listed at the end.
# Images come from qemu-img/qemu-io (KDMV, streamOptimized), tests/mkcowd
# (COWD) and tests/mksesparse (seSparse), patched with dd.
# MALFORMED_TIMEOUT (60 s) and MALFORMED_FIFO_TIMEOUT (5 s) bound each
# run; KEEP_SCRATCH=1 keeps the images and logs (tests/tmp/).
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and the script checks at the end that this
# table and the cases run agree).
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
# Grain directories and tables
# G1  GD entry past EOF -> EIO on that table's range only (the default
#     mode serves read-only)
#     from: QEMU "check" only flags offsets after EOF; no open check
#     cases: gde-past-eof cowd-gde-past-eof
# G2  GD entry inside the header -> EIO on that table's range only
#     from: COWD's 4-sector header (a KDMV header is one sector: an entry
#     pointing into it would be 0, a hole, G7)
#     cases: cowd-gde-header
# G3  GT entry past EOF -> EIO on that grain only
#     from: QEMU vmdk_co_check "cluster offset points after EOF"
#     cases: gte-past-eof cowd-gte-past-eof stream-gte-past-eof
# G4  GTE 1 without flag bit 2 -> EIO (with the flag and version 2 it is
#     a zeroed grain)
#     from: GTE 1 without zeroed-grain flag (VBox/libvmdk read sector 1)
#     cases: gte-1-without-flag gte-1-zeroed-grain
# G5  GT entry pointing into the metadata -> reads as it is, but a write
#     through it fails with EIO and the metadata is unchanged
#     from: no reader checks; QEMU would write over its own grain tables
#     cases: gte-into-metadata
# G6  GT entry inside the header -> EIO
#     from: COWD 4-sector header; libvmdk treats GTE 1 as sector 1
#     cases: cowd-gte-header
# G7  GD hole (entry 0) in an image whose other tables exist -> reads as
#     unallocated (zeroes); a write there gets a new table and reads back
#     from: GD hole (QEMU uninitialised offset: get_cluster_offset returns
#     before setting it, vmdk_pwritev writes through it anyway)
#     cases: gd-hole
#
# streamOptimized
# S1  grain marker lba differs from the grain asked for -> EIO
#     from: QEMU/VBox trust the GT and ignore lba
#     cases: stream-lba-mismatch
# S2  grain marker size 0 -> EIO
#     from: QEMU vmdk_read_extent rejects size 0
#     cases: stream-size-0
# S3  grain marker size over 2 grains + 500 -> EIO, never an overrun
#     from: VirtualBox inflate overrun (cbCompSize < 2 x grain vs its
#     buffer of one grain + 24); QEMU "> 2 clusters"
#     cases: stream-size-huge stream-size-over-bound
# S4  compressed data past EOF -> EIO
#     from: QEMU/VBox read the declared size blindly
#     cases: stream-size-past-eof
# S5  corrupt zlib data (header, data, Adler-32) -> EIO
#     from: zlib/libdeflate errors must not be ignored
#     cases: stream-zlib-header stream-zlib-data stream-zlib-adler
#     cases: stream-zlib-cut
# S6  data inflates short -> EIO
#     from: QEMU "rejects reads beyond decompressed length"
#     cases: stream-inflates-short
# S7  data inflates past the grain -> EIO, never an overrun
#     from: VirtualBox inflate overrun; QEMU decompresses into one grain
#     cases: stream-inflates-long
# S8  stream image truncated (GD in the header) -> EIO past the cut
#     from: "too many truncated vmdk images out there" (VBox)
#     cases: stream-truncated-at-grain stream-truncated-mid-grain
# S9  GD_AT_END footer with a bad magic -> refused
#     from: QEMU validates the footer (vmdk.c 904-953)
#     cases: stream-footer-ok stream-footer-magic
# S10 footer marker with a wrong type or size -> refused
#     from: QEMU footer marker size 0 / type 3 check
#     cases: stream-footer-marker-type stream-footer-marker-size
# S11 end-of-stream marker missing (truncated) -> refused
#     from: QEMU EOS check; footer + EOS are the last two sectors
#     cases: stream-eos-missing stream-cut-in-half
# S12 footer gdOffset GD_AT_END too -> refused
#     from: oslo.utils format_inspector footer checks
#     cases: stream-footer-gd-at-end
# S13 metadata marker type 4 (progress) -> skipped, never refused
#     from: open-vmdk MARKER_PROGRESS; VBox "shows up in very recent
#     images created by vSphere"
#     cases: stream-progress-marker stream-progress-before-footer
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
#     cases: parent-json-name cowd-parent-escape
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
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img qemu-io od dd truncate \
              timeout gzip mkfifo cmp
requires qemu-img --version
mkcowd="$abs_builddir/mkcowd"
mksesparse="$abs_builddir/mksesparse"
for p in "$mkcowd" "$mksesparse"; do
    if [ ! -x "$p" ]; then
        echo "$0: $p not built: test skipped"
        exit 77
    fi
done

make_scratch
cd "$scratch"
scratch=$(pwd -P)
plugin="$VMDK_PLUGIN"
G=65536
M=$(( 1024 * 1024 ))
failures=()
declare -A case_id=()

# A refusal takes milliseconds (seconds under valgrind): a run that
# takes longer than this hangs.  FIFO cases wait less (a hang is their
# likely failure).
T=${MALFORMED_TIMEOUT:-60}
T_FIFO=${MALFORMED_FIFO_TIMEOUT:-5}
if [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then T_FIFO=30; fi

# The host file that must never be served: outside every image
# directory, 1 MiB of one recognizable line, and a descriptor naming it
# (so that a parent name escaping the directory would serve it).
secret="nbdkit-vmdk-host-secret-$$-$RANDOM"
{ yes "$secret" || :; } | head -c "$M" > secret.raw
cat > secret.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=5ec2e75e
parentCID=ffffffff
createType="monolithicFlat"
RW 2048 FLAT "secret.raw" 0
EOF

# ---------------------------------------------------------------------
# Case runners.

# new_case ID NAME: register a case (names are unique).
new_case ()
{
    if [ -n "${case_id[$2]:-}" ]; then
        failures+=("$2: case name used twice")
    fi
    case_id[$2]=$1
}

fail () { failures+=("$*"); }

# matches LOG PATTERN: PATTERN is a fixed string, or "~REGEX" (ERE).
matches ()
{
    if [ "${2:0:1}" = "~" ]; then
        grep -qE -- "${2:1}" "$1"
    else
        grep -qF -- "$2" "$1"
    fi
}

# run_status NAME MODE STATUS LOG: common verdicts; returns 1 after
# recording a hang or crash.
run_status ()
{
    local name="$1" mode="$2" st="$3" log="$4"
    if [ "$st" -eq 124 ] || [ "$st" -eq 137 ]; then
        fail "$name ($mode): HUNG (killed by timeout, status $st)"
        return 1
    fi
    if [ "$st" -eq 119 ] && [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then
        fail "$name ($mode): valgrind reported errors (status 119)"
        return 1
    fi
    if ! check_no_crash "$st" "$log"; then
        fail "$name ($mode): CRASHED (status $st)"
        return 1
    fi
    if grep -qF -- "$secret" "$log"; then
        fail "$name ($mode): the host secret appears in the log"
    fi
}

# Set to yes around cases naming host files: a wrongly accepted image is
# then copied out and searched for the secret.
leak_check=no

# expect_error ID NAME PATTERN PLUGIN-ARGS...
#   nbdkit must refuse to start, with PATTERN in its messages.  Run as
#   the plugin opens by default (read-write) and with readonly=true.
expect_error ()
{
    local id="$1" name="$2" pattern="$3" mode st log t="${case_timeout:-$T}"
    local run='exit 0'
    shift 3
    new_case "$id" "$name"
    if [ "$leak_check" = yes ]; then
        run='nbdcopy "$uri" leak.out'
    fi
    for mode in default readonly=true; do
        log="$name.$mode.log"
        rm -f leak.out
        st=0
        if [ "$mode" = default ]; then
            timeout -k 5 "$t" nbdkit -U - "$plugin" "$@" --run "$run" \
                    >"$log" 2>&1 || st=$?
        else
            timeout -k 5 "$t" nbdkit -U - "$plugin" "$@" "$mode" \
                    --run "$run" >"$log" 2>&1 || st=$?
        fi
        cat "$log"
        run_status "$name" "$mode" "$st" "$log" || continue
        if [ -f leak.out ] &&
               grep -qaF -e "$secret" -e "root:x:0:0" leak.out; then
            fail "$name ($mode): LEAKED a host file into the export"
        fi
        if [ "$st" -eq 0 ]; then
            fail "$name ($mode): accepted (status 0), expected: $pattern"
        elif ! matches "$log" "$pattern"; then
            fail "$name ($mode): message lacks \"$pattern\": $(tail -3 "$log")"
        fi
    done
}

# The checks a served case runs against the export, one a line (offsets
# and lengths in bytes, BYTE the pattern of qemu-io read -P):
#   data OFF LEN BYTE   reads as LEN bytes of BYTE
#   eio OFF LEN         fails with EIO: twice, then its first sector twice
#   readable OFF LEN    reads (contents not checked)
#   mapeio OFF LEN      block status of the range fails with EIO
#   map OFF LEN         block status of the range works
#   weio OFF LEN BYTE   (default mode) writing fails with EIO
#   wdata OFF LEN BYTE  (default mode) writing works and reads back
#   size N              the export is N bytes
#   nosecret            the whole export does not contain the secret
#   ro REGEX            (default mode) served read-only, the reason
#                       matching REGEX; without it the default mode must
#                       serve the image writable
#   rwlog REGEX         (default mode) the log matches REGEX
cat > checks.sh <<'EOF'
# Run by nbdkit --run: checks.sh URI MODE CHECKS-FILE SECRET
uri="$1" mode="$2" secret="$4"
fails=0
bad () { echo "CHECK FAILED ($mode): $*"; fails=$(( fails + 1 )); }
qio () { timeout 60 qemu-io -f raw "$@" "$uri" > qio.out 2>&1; }
data ()
{
    qio -r -c "read -P $3 $1 $2" || bad "read $1 +$2 is not all $3: $(cat qio.out)"
}
readable () { qio -r -c "read $1 $2" || bad "read $1 +$2 failed: $(cat qio.out)"; }
eio ()
{
    local len
    for len in "$2" "$2" 512 512; do
        if qio -r -c "read $1 $len"; then
            bad "read $1 +$len succeeded, expected EIO"
        elif ! grep -q 'read failed: Input/output error' qio.out; then
            bad "read $1 +$len did not fail with EIO: $(cat qio.out)"
        fi
    done
}
mapeio ()
{
    if timeout 60 qemu-img map -f raw --output=json --start-offset="$1" \
               --max-length="$2" "$uri" > qio.out 2>&1; then
        bad "map $1 +$2 succeeded, expected EIO: $(cat qio.out)"
    elif ! grep -q 'Input/output error' qio.out; then
        bad "map $1 +$2 did not fail with EIO: $(cat qio.out)"
    fi
}
map ()
{
    timeout 60 qemu-img map -f raw --output=json --start-offset="$1" \
            --max-length="$2" "$uri" > qio.out 2>&1 ||
        bad "map $1 +$2 failed: $(cat qio.out)"
}
weio ()
{
    [ "$mode" = default ] || return 0
    if qio -c "write -P $3 $1 $2"; then
        bad "write $1 +$2 succeeded, expected EIO"
    elif ! grep -q 'write failed: Input/output error' qio.out; then
        bad "write $1 +$2 did not fail with EIO: $(cat qio.out)"
    fi
}
wdata ()
{
    [ "$mode" = default ] || return 0
    qio -c "write -P $3 $1 $2" || bad "write $1 +$2 failed: $(cat qio.out)"
    qio -r -c "read -P $3 $1 $2" || bad "write $1 +$2 did not read back: $(cat qio.out)"
}
size ()
{
    local s
    s=$(nbdinfo --size "$uri") || s="(nbdinfo failed)"
    [ "$s" = "$1" ] || bad "size is $s, expected $1"
}
nosecret ()
{
    rm -f export.out
    nbdcopy "$uri" export.out || bad "copying the export failed"
    if grep -qaF -e "$secret" -e "root:x:0:0" export.out; then
        bad "the export contains a host file"
    fi
    rm -f export.out
}
source "$3"
echo "checks ($mode): $fails failed"
[ "$fails" -eq 0 ]
EOF

# expect_served ID NAME MESSAGE FILE [PLUGIN-ARGS...] < CHECKS
#   nbdkit must serve FILE and pass CHECKS (above) in both modes, with
#   MESSAGE (fixed string or "~REGEX"; "-" for none) in its log.
expect_served ()
{
    local id="$1" name="$2" msg="$3" file="$4" mode st log checks re
    local t="${case_timeout:-$T}"
    shift 4
    new_case "$id" "$name"
    checks="$(cat)"
    grep -vE '^(ro|rwlog) ' <<<"$checks" > "$name.checks" || :
    for mode in default readonly=true; do
        log="$name.$mode.log"
        st=0
        if [ "$mode" = default ]; then
            timeout -k 5 "$t" nbdkit -U - "$plugin" "$file" "$@" \
                    --run "bash '$scratch/checks.sh' \"\$uri\" $mode $name.checks $secret" \
                    >"$log" 2>&1 || st=$?
        else
            timeout -k 5 "$t" nbdkit -U - "$plugin" "$file" "$@" "$mode" \
                    --run "bash '$scratch/checks.sh' \"\$uri\" $mode $name.checks $secret" \
                    >"$log" 2>&1 || st=$?
        fi
        cat "$log"
        run_status "$name" "$mode" "$st" "$log" || continue
        if [ "$st" -ne 0 ]; then
            fail "$name ($mode): status $st: $(grep -E 'CHECK FAILED|error:' "$log" | head -5)"
            continue
        fi
        if [ "$msg" != - ] && ! matches "$log" "$msg"; then
            fail "$name ($mode): message lacks \"$msg\""
        fi
        [ "$mode" = default ] || continue
        re=$(sed -n 's/^ro //p' <<<"$checks")
        if [ -n "$re" ]; then
            if ! grep -qE -- "serving read-only: .*$re" "$log"; then
                fail "$name ($mode): not served read-only for /$re/"
            fi
        elif grep -q 'serving read-only' "$log"; then
            fail "$name ($mode): served read-only: $(grep 'serving read-only' "$log")"
        fi
        while read -r re; do
            if ! grep -qE -- "$re" "$log"; then
                fail "$name ($mode): log lacks /$re/"
            fi
        done < <(sed -n 's/^rwlog //p' <<<"$checks")
    done
}

# patch FILE OFFSET BYTES (printf %b escapes): overwrite in place.
patch ()
{
    printf '%b' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# variant COPY ORIGINAL OFFSET BYTES VALUE: COPY is ORIGINAL with one
# little-endian field changed.
variant ()
{
    cp "$2" "$1"
    put_le "$1" "$3" "$4" "$5"
}

# zlib_zeros N: a zlib stream (RFC 1950) of N zero bytes on stdout: the
# deflate data of gzip, between a zlib header and the Adler-32 of N
# zeroes (a = 1, b = N mod 65521), big-endian.
zlib_zeros ()
{
    local b=$(( $1 % 65521 ))
    printf '\170\234'
    head -c "$1" /dev/zero | gzip -c -n -9 | tail -c +11 | head -c -8
    printf '%b' "$(printf '\\%03o\\%03o\\%03o\\%03o' \
                   $(( b >> 8 )) $(( b & 255 )) 0 1)"
}

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

# =====================================================================
# streamOptimized.  st.vmdk: qemu-img's copy of st.raw, 32 grains and a
# 3584-byte tail grain, grain K filled with byte K+1 (the tail with
# 0x21); grain tables at the start, grains in order after them.

mkdir s
cd s
make_stream_image st.raw st.vmdk
fsize=$(stat -c %s st.vmdk)
m2=$(grain_marker st.vmdk 2)
m3=$(grain_marker st.vmdk 3)
mt=$(grain_marker st.vmdk 32)
test "$(u64 st.vmdk "$m2")" -eq 256
csize3=$(u32 st.vmdk $(( m3 + 8 )))

# stream_bad ID NAME MESSAGE-REGEX FILE GRAIN: grain GRAIN of FILE is
# broken: EIO there, the neighbours read.
stream_bad ()
{
    local g="$5" len=$G
    if [ "$g" -eq 32 ]; then len=3584; fi
    expect_served "$1" "$2" "~$4: $3" "$4" <<EOF
eio $(( g * G )) $len
data $(( g > 0 ? (g - 1) * G : G )) $G $(( g > 0 ? g : 2 ))
data $(( g < 31 ? (g + 1) * G : 0 )) $G $(( g < 31 ? g + 2 : 1 ))
ro streamOptimized \(compressed\) extents are read-only
EOF
}

variant lba.vmdk st.vmdk "$m2" 8 384
stream_bad S1 stream-lba-mismatch \
           "grain marker at offset $m2: lba field is 384, expected 256" \
           lba.vmdk 2
variant sz0.vmdk st.vmdk $(( m2 + 8 )) 4 0
stream_bad S2 stream-size-0 "grain marker at offset $m2: size field is 0," \
           sz0.vmdk 2
variant szh.vmdk st.vmdk $(( m2 + 8 )) 4 4294967295
stream_bad S3 stream-size-huge \
           "grain marker at offset $m2: size field is 4294967295, expected 1 to 131572" \
           szh.vmdk 2
variant szb.vmdk st.vmdk $(( m2 + 8 )) 4 131573
stream_bad S3 stream-size-over-bound \
           "grain marker at offset $m2: size field is 131573, expected 1 to 131572" \
           szb.vmdk 2
# The tail grain is the last before the end-of-stream marker.
past=$(( fsize - mt - 12 + 1 ))
variant szeof.vmdk st.vmdk $(( mt + 8 )) 4 "$past"
stream_bad S4 stream-size-past-eof \
           "grain marker at offset $mt: size field $past runs past the end of the file" \
           szeof.vmdk 32
variant gteeof.vmdk st.vmdk "$(kdmv_gte_offset st.vmdk 5)" 4 4000000
stream_bad G3 stream-gte-past-eof \
           "grain table 0 entry 5 = 4000000 points outside the file" \
           gteeof.vmdk 5

variant zh.vmdk st.vmdk $(( m2 + 12 )) 2 0
stream_bad S5 stream-zlib-header \
           "grain marker at offset $m2: its [0-9]+ bytes of compressed data are not valid zlib data" \
           zh.vmdk 2
variant zd.vmdk st.vmdk $(( m2 + 14 )) 1 255
stream_bad S5 stream-zlib-data \
           "grain marker at offset $m2: its [0-9]+ bytes of compressed data are not valid zlib data" \
           zd.vmdk 2
last=$(( m3 + 12 + csize3 - 1 ))
variant za.vmdk st.vmdk "$last" 1 $(( $(od -An -t u1 -j "$last" -N 1 st.vmdk) ^ 1 ))
stream_bad S5 stream-zlib-adler \
           "grain marker at offset $m3: its $csize3 bytes of compressed data are not valid zlib data" \
           za.vmdk 3

csize2=$(u32 st.vmdk $(( m2 + 8 )))
variant zc.vmdk st.vmdk $(( m2 + 8 )) 4 $(( csize2 / 2 ))
stream_bad S5 stream-zlib-cut \
           "grain marker at offset $m2: its $(( csize2 / 2 )) bytes of compressed data (are not valid zlib data|end before the zlib stream does)" \
           zc.vmdk 2

# Valid zlib data of the wrong length in grain 3 (lba kept).
zlib_zeros 1000 > short.z
zlib_zeros 65537 > long.z
test "$(stat -c %s long.z)" -lt 400             # fits the marker's sector
cp st.vmdk short.vmdk
{ le_bytes "$(stat -c %s short.z)" 4; cat short.z; } |
    dd of=short.vmdk bs=1 seek=$(( m3 + 8 )) conv=notrunc status=none
stream_bad S6 stream-inflates-short \
           "grain marker at offset $m3: data inflates to 1000 bytes, expected 65536" \
           short.vmdk 3
cp st.vmdk long.vmdk
{ le_bytes "$(stat -c %s long.z)" 4; cat long.z; } |
    dd of=long.vmdk bs=1 seek=$(( m3 + 8 )) conv=notrunc status=none
stream_bad S7 stream-inflates-long \
           "grain marker at offset $m3: the compressed data inflates to more than the grain size \(65536 bytes\)" \
           long.vmdk 3

# Truncated with the GD in the header: grains before the cut read,
# those after fail.
m16=$(grain_marker st.vmdk 16)
head -c "$m16" st.vmdk > cut.vmdk
expect_served S8 stream-truncated-at-grain \
              "~cut\.vmdk: grain table 0 entry 16 = [0-9]+ points outside the file" \
              cut.vmdk <<EOF
data 0 $G 1
data $(( 15 * G )) $G 16
eio $(( 16 * G )) $G
eio $(( 31 * G )) $G
ro streamOptimized
EOF
head -c $(( m16 + 40 )) st.vmdk > cutmid.vmdk
expect_served S8 stream-truncated-mid-grain \
              "~cutmid\.vmdk: grain marker at offset $m16: size field [0-9]+ runs past the end of the file" \
              cutmid.vmdk <<EOF
data $(( 15 * G )) $G 16
eio $(( 16 * G )) $G
ro streamOptimized
EOF

# GD_AT_END (header gdOffset all ones; footer marker, footer, EOS last).
stream_gd_at_end st.vmdk atend.vmdk
afs=$(stat -c %s atend.vmdk)
expect_served S9 stream-footer-ok - atend.vmdk <<EOF
data 0 $G 1
data $(( 31 * G )) $G 32
data $(( 32 * G )) 3584 33
ro streamOptimized
EOF
cp atend.vmdk fmagic.vmdk
patch fmagic.vmdk $(( afs - 1024 )) 'XXXX'
expect_error S9 stream-footer-magic \
             'footer: fmagic.vmdk: bad magic 0x58585858 in sparse header (expected "KDMV")' \
             fmagic.vmdk
nofooter="gdOffset is GD_AT_END but there is no valid footer marker, footer and end-of-stream marker in the last 3 sectors"
variant fmtype.vmdk atend.vmdk $(( afs - 1536 + 12 )) 4 2
expect_error S10 stream-footer-marker-type "fmtype.vmdk: $nofooter" fmtype.vmdk
variant fmsize.vmdk atend.vmdk $(( afs - 1536 + 8 )) 4 7
expect_error S10 stream-footer-marker-size "fmsize.vmdk: $nofooter" fmsize.vmdk
head -c $(( afs - 512 )) atend.vmdk > noeos.vmdk
expect_error S11 stream-eos-missing "noeos.vmdk: $nofooter" noeos.vmdk
half=$(( afs / 1024 ))
head -c $(( half * 512 )) atend.vmdk > half.vmdk
expect_error S11 stream-cut-in-half "half.vmdk: $nofooter" half.vmdk
variant fgd.vmdk atend.vmdk $(( afs - 1024 + 56 )) 8 -1
expect_error S12 stream-footer-gd-at-end \
             "fgd.vmdk: footer gdOffset is GD_AT_END too" fgd.vmdk

# A progress marker (type 4) between grains 4 and 5: every grain-table
# entry (primary and redundant) at or after it moves one sector on.
insert_marker ()
{
    local in="$1" out="$2" type="$3" at="$4" sec dir gt t i n nr v
    local -a e
    sec=$(( at / 512 ))
    { head -c "$at" "$in"; metadata_marker "$type"; tail -c +$(( at + 1 )) "$in"; } \
        > "$out"
    n=$(u32 "$in" 44)
    nr=$(( ($(u64 "$in" 12) + n * $(u64 "$in" 20) - 1) / (n * $(u64 "$in" 20)) ))
    for dir in "$(u64 "$in" 56)" "$(u64 "$in" 48)"; do
        for (( t = 0; t < nr; t++ )); do
            gt=$(u32 "$in" $(( dir * 512 + 4 * t )))
            [ "$gt" -ne 0 ] || continue
            test $(( gt * 512 )) -lt "$at"
            read -r -d '' -a e < <(od -An -t u4 -v -j $(( gt * 512 )) \
                                      -N $(( n * 4 )) "$in") || :
            for (( i = 0; i < n; i++ )); do
                v=${e[$i]}
                if [ "$v" -ge "$sec" ]; then
                    put_le "$out" $(( gt * 512 + 4 * i )) 4 $(( v + 1 ))
                fi
            done
        done
    done
}
insert_marker st.vmdk progress.vmdk 4 "$(grain_marker st.vmdk 5)"
test "$(grain_marker progress.vmdk 5)" -eq $(( $(grain_marker st.vmdk 5) + 512 ))
test "$(u32 progress.vmdk $(( $(grain_marker st.vmdk 5) + 12 )))" -eq 4
expect_served S13 stream-progress-marker - progress.vmdk <<EOF
data $(( 4 * G )) $G 5
data $(( 5 * G )) $G 6
data $(( 31 * G )) $G 32
data $(( 32 * G )) 3584 33
ro streamOptimized
EOF
{ head -c $(( afs - 1536 )) atend.vmdk; metadata_marker 4; tail -c 1536 atend.vmdk; } \
    > progress-end.vmdk
expect_served S13 stream-progress-before-footer - progress-end.vmdk <<EOF
data 0 $G 1
data $(( 32 * G )) 3584 33
ro streamOptimized
EOF
cd ..

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

# =====================================================================
# Descriptors.

mkdir d
cd d
ddir=$(pwd -P)
truncate -s 1M x.vmdk
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
    head -c 512 ../k/s.vmdk
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
    cp ../k/s.vmdk "$out"
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
cp -a two two-magic
patch two-magic/d-s002.vmdk 0 'XXXX'
expect_error K1 bad-magic-in-sparse-extent \
             'd-s002.vmdk: sparse extent has neither "KDMV" nor "COWD" magic' \
             two-magic/d.vmdk
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

# =====================================================================
# The pitfall table (top of this file) and the cases run must agree.

set +x
declare -A table_id=()
id=
while IFS= read -r line; do
    if [[ $line =~ ^#\ ([A-Z][0-9]+)\  ]]; then
        id=${BASH_REMATCH[1]}
    elif [[ $line =~ ^#\ +cases:\ (.*)$ ]]; then
        read -r -a names <<< "${BASH_REMATCH[1]}"
        for n in "${names[@]}"; do
            if [ -n "${table_id[$n]:-}" ]; then
                fail "table: case $n listed twice"
            fi
            table_id[$n]=$id
        done
    fi
done < <(sed -n '/^# Pitfall table/,/^source /p' "$abs_srcdir/$testname.sh")
for n in "${!case_id[@]}"; do
    if [ "${table_id[$n]:-}" != "${case_id[$n]}" ]; then
        fail "table: case $n ran as ${case_id[$n]} but the table says '${table_id[$n]:-}'"
    fi
done
for n in "${!table_id[@]}"; do
    if [ -z "${case_id[$n]:-}" ]; then
        fail "table: case $n (${table_id[$n]}) never ran"
    fi
done

echo "$0: ${#case_id[@]} cases"
if [ ${#failures[@]} -gt 0 ]; then
    echo "$0: ${#failures[@]} failure(s):"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "$0: all cases passed"
