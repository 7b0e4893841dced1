# shellcheck shell=bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Helpers for the end-to-end shell tests.  Source it first thing:
#
#   source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
#   set -euo pipefail
#   set -x
#
# Exit status of a test: 0 pass, 1 fail, 77 skip (automake convention).
#
# Environment (from AM_TESTS_ENVIRONMENT in tests/Makefile.am; defaults
# below make a test runnable by hand from tests/ too):
#   VMDK_PLUGIN    absolute path of nbdkit-vmdk-plugin.so
#   VMDK_FILTER    absolute path of nbdkit-vmdk-filter.so
#   VMDK_TOOL      absolute path of the vmdk command
#   abs_srcdir, abs_builddir
#   KEEP_SCRATCH=1 keeps the scratch directory for debugging.

: "${abs_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
: "${abs_builddir:=$(pwd)}"
: "${abs_top_builddir:=$(cd "$abs_builddir/.." && pwd)}"
: "${VMDK_PLUGIN:=$abs_top_builddir/plugin/.libs/nbdkit-vmdk-plugin.so}"
: "${VMDK_FILTER:=$abs_top_builddir/filter/.libs/nbdkit-vmdk-filter.so}"
: "${VMDK_TOOL:=$abs_top_builddir/tool/vmdk}"
export abs_srcdir abs_builddir abs_top_builddir VMDK_PLUGIN VMDK_FILTER VMDK_TOOL

testname=$(basename "$0" .sh)

# ---------------------------------------------------------------------
# Cleanup hooks.
#
# cleanup_fn CMD [ARGS...] registers a command to run when the script
# exits, however it exits.  Hooks run last-registered first (so an
# nbdkit started in a scratch directory is killed before the directory
# is removed).  A hook that fails turns a passing test into a failure
# (this is how kill_nbdkit reports a server that would not stop).

_cleanup_hooks=()

cleanup_fn ()
{
    local q
    q=$(printf '%q ' "$@")
    _cleanup_hooks+=("$q")
}

_run_cleanup_hooks ()
{
    local status=$? i
    { set +x; } 2>/dev/null
    set +e
    trap '' INT QUIT TERM
    for (( i = ${#_cleanup_hooks[@]} - 1; i >= 0; i-- )); do
        if ! eval "${_cleanup_hooks[$i]}"; then
            echo "$0: cleanup hook failed: ${_cleanup_hooks[$i]}" >&2
            if [ "$status" -eq 0 ]; then status=1; fi
        fi
    done
    exit "$status"
}
trap _run_cleanup_hooks EXIT
trap 'exit 1' INT QUIT TERM

# ---------------------------------------------------------------------
# Skips.

# requires CMD [ARGS...]
#   With one word: skip (exit 77) unless CMD is on $PATH.
#   With arguments: skip unless running "CMD ARGS..." succeeds, e.g.
#   requires qemu-img --version.
requires ()
{
    if [ $# -eq 1 ]; then
        if ! command -v "$1" >/dev/null 2>&1; then
            echo "$0: '$1' is not available: test skipped"
            exit 77
        fi
    elif ! "$@" </dev/null >/dev/null 2>&1; then
        echo "$0: '$*' failed: test skipped"
        exit 77
    fi
}

# requires_cmds CMD... : skip unless every CMD is on $PATH.
requires_cmds ()
{
    local c
    for c in "$@"; do requires "$c"; done
}

# requires_plugin: skip unless the plugin has been built.
requires_plugin ()
{
    if [ ! -f "$VMDK_PLUGIN" ]; then
        echo "$0: $VMDK_PLUGIN not built: test skipped"
        exit 77
    fi
}

# requires_vmdk_filter: skip unless the vmdk filter has been built.
requires_vmdk_filter ()
{
    if [ ! -f "$VMDK_FILTER" ]; then
        echo "$0: $VMDK_FILTER not built: test skipped"
        exit 77
    fi
}

# requires_tool: skip unless the vmdk command has been built.
requires_tool ()
{
    if [ ! -x "$VMDK_TOOL" ]; then
        echo "$0: $VMDK_TOOL not built: test skipped"
        exit 77
    fi
}

# vmdk ARGS...: the vmdk command of the build tree.
vmdk ()
{
    "$VMDK_TOOL" "$@"
}

# tool_refuses WHAT PATTERN ARGS...: counted check that "vmdk ARGS..."
# fails with status 1, without crashing, with PATTERN (a grep basic
# regex) in its stderr (kept in $TMPDIR, out of the test's way).
tool_refuses ()
{
    local what="$1" pattern="$2" rc=0 err="${TMPDIR:-/tmp}/tool-refuses.err"
    shift 2
    "$VMDK_TOOL" "$@" > /dev/null 2> "$err" || rc=$?
    if [ "$rc" -eq 1 ] && check_no_crash "$rc" "$err" &&
           grep -q -- "$pattern" "$err"; then
        pass "$what refused: $(grep -m1 '^vmdk' "$err")"
    else
        fail "$what: status $rc, expected a refusal matching '$pattern'"
        cat "$err"
    fi
}

# requires_filter NAME: skip unless nbdkit has the filter.
requires_filter ()
{
    requires nbdkit --filter="$1" null --dump-plugin
}

# requires_free_space DIR MIB: skip unless DIR has MIB MiB free.
requires_free_space ()
{
    local avail
    avail=$(df -Pk "$1" | awk 'NR == 2 { print int($4 / 1024) }')
    if [ "$avail" -lt "$2" ]; then
        echo "$0: only $avail MiB free in $1, need $2: test skipped"
        exit 77
    fi
}

# ---------------------------------------------------------------------
# Scratch directory.

# make_scratch [big]
#   Sets $scratch to a fresh, empty per-test directory, removed at exit
#   unless KEEP_SCRATCH=1, and TMPDIR to its tmp/ subdirectory.  It is $abs_builddir/tmp/<testname> unless
#   that is on tmpfs (RAM) and "big" is given, in which case it is
#   /var/tmp/nbdkit-vmdk-<testname>.<pid> (big sparse files must not
#   land in memory).
make_scratch ()
{
    local base="$abs_builddir/tmp"
    mkdir -p "$base"
    if [ "${1:-}" = big ] && [ "$(stat -f -c %T "$base")" = tmpfs ]; then
        base=/var/tmp
        scratch="$base/nbdkit-vmdk-$testname.$$"
    else
        scratch="$base/$testname"
    fi
    rm -rf "$scratch"
    mkdir -p "$scratch/tmp"
    if [ "${KEEP_SCRATCH:-0}" != 1 ]; then
        cleanup_fn rm -rf "$scratch"
    fi
    # Whatever the test and the programs it runs put in the temporary
    # directory goes with the scratch directory.
    export TMPDIR="$scratch/tmp"
}

# ---------------------------------------------------------------------
# nbdkit as a daemon.

# start_nbdkit -P PIDFILE -U SOCKET [ARGS...]
#   Starts "nbdkit -v -P PIDFILE -U SOCKET ARGS..." as a daemon (no -f),
#   with stderr appended to PIDFILE.log, waits for the pidfile and the
#   socket, and registers kill_nbdkit.  Fails the test if nbdkit fails
#   to start.
start_nbdkit ()
{
    local pidfile sock i
    if [ "$1" != -P ] || [ "$3" != -U ]; then
        echo "$0: start_nbdkit: -P pidfile -U socket must come first" >&2
        return 1
    fi
    pidfile="$2"
    sock="$4"
    rm -f "$pidfile" "$sock"
    if ! nbdkit -v "$@" 2>>"$pidfile.log"; then
        cat "$pidfile.log" >&2
        echo "$0: start_nbdkit: nbdkit failed to start" >&2
        return 1
    fi
    for (( i = 0; i < 600; i++ )); do
        if [ -s "$pidfile" ] && [ -S "$sock" ]; then break; fi
        sleep 0.1
    done
    if ! [ -s "$pidfile" ] || ! [ -S "$sock" ]; then
        cat "$pidfile.log" >&2
        echo "$0: start_nbdkit: no pidfile/socket after 60 s" >&2
        return 1
    fi
    cleanup_fn kill_nbdkit "$pidfile"
}

# kill_nbdkit PIDFILE [SIGNAL]: send SIGNAL (default TERM; KILL to
# simulate a crash), wait up to 60 s; if it is still running, SIGKILL it
# and fail.  Harmless if it has already been killed.
kill_nbdkit ()
{
    local pid i sig="${2:-TERM}"
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    rm -f "$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for (( i = 0; i < 600; i++ )); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$0: nbdkit (pid $pid) did not exit after SIG$sig" >&2
    kill -KILL "$pid" 2>/dev/null || :
    return 1
}

# nbdkit_peak_rss_kib PIDFILE: print VmHWM of the daemon in KiB.
nbdkit_peak_rss_kib ()
{
    awk '/^VmHWM:/ { print $2 }' "/proc/$(cat "$1")/status"
}

# ---------------------------------------------------------------------
# Checking a server's verdict.

# not CMD [ARGS...]: succeed only if CMD fails.  Use it instead of
# "! CMD", which never stops a "set -e" script.
not ()
{
    if "$@"; then
        echo "$0: unexpectedly succeeded: $*" >&2
        return 1
    fi
    return 0
}

# check_no_crash STATUS LOGFILE: fail if a command died of a signal or
# a sanitizer (including UBSan's "runtime error:") / core dump message
# appears in its log.
check_no_crash ()
{
    if [ "$1" -ge 128 ]; then
        echo "$0: exit status $1: killed by a signal" >&2
        cat "$2" >&2
        return 1
    fi
    local re='Sanitizer|runtime error:|core dumped|Segmentation fault'
    re+='|Aborted|assertion'
    if grep -E "$re" "$2" >&2; then
        echo "$0: crash reported in $2" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------
# Raw reference images.  Offsets and lengths are in bytes.

# write_random FILE OFFSET LENGTH: random bytes (allocated).
write_random ()
{
    dd if=/dev/urandom of="$1" bs=64K count="$3" seek="$2" \
       iflag=count_bytes,fullblock oflag=seek_bytes conv=notrunc status=none
}

# write_zeroes FILE OFFSET LENGTH: explicit zero bytes (allocated in the
# raw file, a zero run).
write_zeroes ()
{
    dd if=/dev/zero of="$1" bs=64K count="$3" seek="$2" \
       iflag=count_bytes,fullblock oflag=seek_bytes conv=notrunc status=none
}

# write_pattern FILE OFFSET LENGTH BYTE: LENGTH copies of BYTE (0-255).
write_pattern ()
{
    local oct
    oct=$(printf '\\%03o' "$4")
    head -c "$3" /dev/zero | tr '\0' "$oct" |
        dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc \
           iflag=fullblock status=none
}

# punch_hole FILE OFFSET LENGTH: deallocate (reads as zero).
punch_hole ()
{
    fallocate -p -o "$2" -l "$3" "$1"
}

# make_reference FILE SIZE
#   A sparse raw disk of SIZE bytes (a multiple of 512) with, for the
#   64 KiB grain of qemu-img's VMDKs: data at 0, at a non-grain offset
#   straddling a grain boundary, a whole-grain run, an explicit zero run
#   in the middle of data, a one-sector island, holes in between, data
#   just before and across every 2 GiB extent boundary, and data ending
#   exactly at the last byte (in a partial last grain if SIZE is odd).
make_reference ()
{
    local f="$1" size="$2" G=65536 b two=$((2 * 1024 * 1024 * 1024))
    rm -f "$f"
    truncate -s "$size" "$f"
    write_random "$f" 0 $((3 * G))                    # grains 0-2
    write_random "$f" $((5 * G - 1234)) 5000          # across grain 4/5
    write_zeroes "$f" $((G + 4096)) $((G))            # zero run in data
    write_random "$f" $((9 * G + 512)) 512            # one sector
    write_random "$f" $((17 * G)) $((4 * G))          # grains 17-20
    write_zeroes "$f" $((30 * G)) $((2 * G))          # allocated zeroes
    if [ "$size" -gt $((64 * 1024 * 1024)) ]; then    # past 1 GT (32 MiB)
        write_random "$f" $((32 * 1024 * 1024 - 700)) 1400
        write_random "$f" $((40 * 1024 * 1024 + 3 * 512)) $((3 * G + 7))
    fi
    for (( b = two; b < size; b += two )); do
        write_random "$f" $((b - 3 * G / 2)) $((3 * G))   # across boundary
        write_random "$f" $((b + 7 * G)) 1000
    done
    write_random "$f" $((size - 70000)) 70000         # up to the end
    # Writes past the end would have grown the file.
    truncate -s "$size" "$f"
}

# raw_data_ranges RAW: the allocated (data) ranges of a raw file as
# qemu-img map sees them (SEEK_DATA/SEEK_HOLE), one "start length" a line.
raw_data_ranges ()
{
    qemu-img map -f raw --output=json "$1" |
        jq -r '.[] | select(.data == true) | "\(.start) \(.length)"'
}

# compare_raw REF OUT: fail unless OUT has REF's size and contents.
#   qemu-img compare skips ranges that are holes in both files (and
#   compares every other byte), so this is fast on big sparse files
#   where cmp would read gigabytes of holes.
compare_raw ()
{
    local a b
    a=$(stat -c %s "$1")
    b=$(stat -c %s "$2")
    if [ "$a" != "$b" ]; then
        echo "$0: $2 is $b bytes, expected $a (as $1)" >&2
        return 1
    fi
    qemu-img compare -q -f raw -F raw "$1" "$2"
}

# fingerprint DIR: one line per file in DIR with its size, mtime and,
# for files under 256 MiB, its sha256 (hashing gigabytes of holes is
# slow), to check that serving an image left it unchanged.
fingerprint ()
{
    local f
    for f in "$1"/*; do
        if [ "$(stat -c %s "$f")" -lt $(( 256 * 1024 * 1024 )) ]; then
            echo "$(stat -c '%n %s %y' "$f") $(sha256sum < "$f")"
        else
            stat -c '%n %s %y' "$f"
        fi
    done
}

# ---------------------------------------------------------------------
# Text descriptors.

# desc FILE CREATETYPE EXTENT-LINE...: write a text descriptor.
desc ()
{
    local f="$1" ct="$2" l
    shift 2
    {
        printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
        printf 'parentCID=ffffffff\ncreateType="%s"\n\n# Extent description\n' "$ct"
        for l in "$@"; do printf '%s\n' "$l"; done
    } > "$f"
}

# ---------------------------------------------------------------------
# Binary fields of VMDK files (little-endian; offsets in bytes).

# u32 FILE OFFSET, u64 FILE OFFSET (and u8, u32s, put_u32): see
# "Binary fields of image files" below.

# le_bytes VALUE N: write VALUE as N little-endian bytes to stdout
# (VALUE -1 gives all ones).
le_bytes ()
{
    local v="$1" n="$2" i esc=""
    for (( i = 0; i < n; i++ )); do
        esc+=$(printf '\\%03o' $(( (v >> (8 * i)) & 255 )))
    done
    printf '%b' "$esc"
}

# put_le FILE OFFSET BYTES VALUE: store VALUE little-endian in BYTES
# bytes at OFFSET, in place.
put_le ()
{
    le_bytes "$4" "$3" |
        dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# kdmv_gte_offset VMDK K: the byte offset of grain K's grain-table
# entry in a hosted sparse (KDMV) file, through the primary grain
# directory named by the header (gdOffset at 56, numGTEsPerGT at 44).
# Fails if K's table is a grain-directory hole.
kdmv_gte_offset ()
{
    local gd n gt
    gd=$(u64 "$1" 56)
    n=$(u32 "$1" 44)
    gt=$(u32 "$1" $(( gd * 512 + 4 * ($2 / n) )))
    test "$gt" -gt 0
    echo $(( gt * 512 + 4 * ($2 % n) ))
}

# grain_marker VMDK K: the byte offset of grain K's grain marker in a
# streamOptimized file whose header holds the real gdOffset (as
# qemu-img writes them).
grain_marker ()
{
    local sec
    sec=$(u32 "$1" "$(kdmv_gte_offset "$1" "$2")")
    test "$sec" -gt 1
    echo $(( sec * 512 ))
}

# metadata_marker TYPE [NUMSECTORS]: a 512-byte streamOptimized
# metadata marker on stdout (0 end-of-stream, 1 GT, 2 GD, 3 footer,
# 4 progress).
metadata_marker ()
{
    le_bytes "${2:-0}" 8
    le_bytes 0 4
    le_bytes "$1" 4
    head -c 496 /dev/zero
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

# stream_gd_at_end IN OUT: rewrite a streamOptimized image written by
# qemu-img (real gdOffset in the header, an end-of-stream marker last)
# the way VMware streams one: header gdOffset = GD_AT_END, and at the
# end a footer marker, the footer (the original header, with the real
# gdOffset) and the end-of-stream marker.
stream_gd_at_end ()
{
    local in="$1" out="$2" fsize
    fsize=$(stat -c %s "$in")
    test "$(u64 "$in" $(( fsize - 512 + 8 )))" -eq 0     # ends with EOS
    {
        head -c $(( fsize - 512 )) "$in"
        metadata_marker 3 1
        head -c 512 "$in"
        metadata_marker 0
    } > "$out"
    put_le "$out" 56 8 -1
}

# ---------------------------------------------------------------------
# Maps.  The common form is "START LENGTH TYPE" a line, TYPE being the
# NBD base:allocation flags (0 data, 2 zero, 3 hole,zero), adjacent
# entries of one type merged.  (Debian's awk is mawk: print big numbers
# with %.0f, never %d or plain print.)

# normalize_map < "nbdinfo --map" output
normalize_map ()
{
    awk '{
        if (n && $3 == pt && $1 == ps + pl) pl += $2
        else {
            if (n) printf "%.0f %.0f %d\n", ps, pl, pt
            ps = $1; pl = $2; pt = $3; n = 1
        }
    }
    END { if (n) printf "%.0f %.0f %d\n", ps, pl, pt }'
}

# qemu_json_to_map [SHIFT] < "qemu-img map --output=json" output
#   data -> 0; present zero (allocated zeroes, zeroed grain) -> 2;
#   not present (unallocated) -> 3.  SHIFT is added to every start.
qemu_json_to_map ()
{
    jq -r --argjson shift "${1:-0}" '.[] |
        "\(.start + $shift) \(.length) \(if .data then 0
                                    elif .present then 2 else 3 end)"' |
        normalize_map
}

# check_zero_ranges MAP REF
#   Every range that MAP (normalized) calls zero (type 2 or 3) reads as
#   zeroes in the raw file REF.  Only the parts that are allocated in
#   REF need reading (REF's holes are zero by definition), so this stays
#   cheap for big sparse files.
check_zero_ranges ()
{
    local opts=$- r=0
    { set +x; } 2>/dev/null         # the loop would flood the log
    _check_zero_ranges "$@" || r=$?
    if [[ $opts == *x* ]]; then set -x; fi
    return "$r"
}

_check_zero_ranges ()
{
    local map="$1" ref="$2" s l t d ds dl a b
    local -a data
    mapfile -t data < <(raw_data_ranges "$ref")
    while read -r s l t; do
        [ $(( t & 2 )) -ne 0 ] || continue
        for d in "${data[@]}"; do
            read -r ds dl <<<"$d"
            a=$(( s > ds ? s : ds ))
            b=$(( s + l < ds + dl ? s + l : ds + dl ))
            if [ "$a" -lt "$b" ]; then
                if ! cmp -s -i "$a:0" -n $(( b - a )) "$ref" /dev/zero; then
                    echo "$0: $map says [$s, +$l) is zero but $ref has" \
                         "data in [$a, $b)" >&2
                    return 1
                fi
            fi
        done
    done < "$map"
}

# ---------------------------------------------------------------------
# Counted checks, for the tests that go on after a failed check and
# report every failure of a run: each check logs a PASS: or FAIL: line
# through pass / fail, and the test ends with check_summary.

checks_passed=0
checks_failed=0

# pass WHAT...: log a check that passed.
pass ()
{
    echo "PASS: $*"
    checks_passed=$((checks_passed + 1))
}

# fail WHAT...: log a check that failed and count it; the test goes on.
fail ()
{
    echo "FAIL: $*"
    checks_failed=$((checks_failed + 1))
}

# check_summary [NOTE]: print the counts (and NOTE, e.g. the seed that
# repeats the run); exit 1 if any check failed.  The last line of a
# test that uses pass / fail.
check_summary ()
{
    echo "$0: $checks_passed passed, $checks_failed failed${1:+ ($1)}"
    if [ "$checks_failed" -ne 0 ]; then exit 1; fi
}

# ---------------------------------------------------------------------
# Servers of the plugin.

# serve ARGS...: "nbdkit -U - $VMDK_PLUGIN ARGS...", where ARGS are the
# plugin's parameters and nbdkit options, usually with --run CMD (in
# which $uri names the server).  A test may redefine serve (to add
# readonly=true, a filter, ...); refuse and check_served_equals use
# whatever serve is defined.
serve ()
{
    nbdkit -U - "$VMDK_PLUGIN" "$@"
}

# refuse WHAT PATTERN ARGS...: counted check that "serve ARGS..." fails
# at startup, without crashing (check_no_crash), with PATTERN (a grep
# basic regex) in its stderr.  The stderr is left in err.txt.
refuse ()
{
    local what="$1" pattern="$2" rc=0
    shift 2
    serve "$@" --run true 2> err.txt || rc=$?
    if [ "$rc" -ne 0 ] && grep -q -- "$pattern" err.txt &&
       check_no_crash "$rc" err.txt; then
        pass "$what refused: $(grep -m1 -- "$pattern" err.txt)"
    else
        fail "$what: expected refusal matching '$pattern' (exit $rc)"
        cat err.txt
    fi
}

# start_server ARGS...: a daemon serving the plugin with parameters
# ARGS (start_nbdkit, pidfile $scratch/nbdkit.pid, socket
# $scratch/nbdkit.sock), for a test that talks to one server from
# several commands or inspects the files while it runs.  Sets $uri.
start_server ()
{
    start_nbdkit -P "$scratch/nbdkit.pid" -U "$scratch/nbdkit.sock" \
                 "$VMDK_PLUGIN" "$@"
    # shellcheck disable=SC2034 # for the caller
    uri="nbd+unix:///?socket=$scratch/nbdkit.sock"
}

# stop_server [SIGNAL]: kill_nbdkit the daemon of start_server (SIGTERM:
# a clean shutdown; KILL: a crash).
stop_server ()
{
    kill_nbdkit "$scratch/nbdkit.pid" "$@"
}

# ---------------------------------------------------------------------
# Counted checks of a written image against a raw model.

# check_image_consistent WHAT IMAGE: "qemu-img check" finds IMAGE
# consistent: status 0, or 3 (leaked grains only, which allocating
# writers racing or killed may leave).  Its report is in check.out,
# shown on failure.
check_image_consistent ()
{
    local rc=0
    qemu-img check -f vmdk "$2" > check.out 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then
        pass "$1: qemu-img check (status $rc)"
    else
        fail "$1: qemu-img check exit status $rc"
        cat check.out
    fi
}

# check_image_equals WHAT IMAGE RAW: QEMU reads IMAGE (offline) as RAW.
check_image_equals ()
{
    if qemu-img compare -q -f vmdk -F raw "$2" "$3"; then
        pass "$1: qemu-img compare: the image equals $3"
    else
        fail "$1: qemu-img compare: the image differs from $3"
    fi
}

# check_served_equals WHAT IMAGE RAW [ARGS...]: a new server of IMAGE
# (plugin parameters ARGS) reads as RAW (qemu-img compare over NBD, which
# skips what block status calls holes in both, so it is quick on big
# sparse disks).
check_served_equals ()
{
    local what="$1" img="$2" raw="$3"
    shift 3
    if serve file="$img" "$@" \
            --run "qemu-img compare -q -f raw -F raw '$raw' \"\$uri\""; then
        pass "$what: a new server reads as $raw"
    else
        fail "$what: a new server reads other data than $raw"
    fi
}

# ---------------------------------------------------------------------
# Binary fields of image files: little-endian unsigned integers at a
# byte OFFSET, printed in decimal.

# u8 FILE OFFSET, u32 FILE OFFSET, u64 FILE OFFSET
u8 ()  { od -An -v --endian=little -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32 () { od -An -v --endian=little -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
u64 () { od -An -v --endian=little -tu8 -j "$2" -N8 "$1" | tr -d ' '; }

# u32s FILE OFFSET COUNT: COUNT u32 fields from OFFSET, one a line
# (fewer if the file ends first).
u32s ()
{
    od -An -v --endian=little -tu4 -j "$2" -N $(( $3 * 4 )) "$1" |
        tr -s ' ' '\n' | grep -v '^$' || :
}

# put_u32 FILE OFFSET VALUE: store VALUE (0 to 2^32 - 1) in place.
put_u32 () { put_le "$1" "$2" 4 "$3"; }

# ---------------------------------------------------------------------
# Built helpers.

# requires_built PROGRAM: skip unless tests/PROGRAM has been built (the
# libnbd helpers such as test-write-nbd are built only when configure
# found libnbd).
requires_built ()
{
    if [ ! -x "$abs_builddir/$1" ]; then
        echo "$0: $abs_builddir/$1 not built: test skipped"
        exit 77
    fi
}

# ---------------------------------------------------------------------
# The filter (--filter=vmdk).

# make_filter_images: in the current directory, ref.raw (make_reference,
# 80 MiB: three grain tables of qemu-img's images) and qemu-img's
# ms.vmdk (monolithicSparse) and so.vmdk (streamOptimized) of it.
make_filter_images ()
{
    make_reference ref.raw $(( 80 * 1024 * 1024 ))
    qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse \
             ref.raw ms.vmdk
    qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized \
             ref.raw so.vmdk
}

# check_filter_reads WHAT RAW NBDKIT-ARGS...: "nbdkit -U - NBDKIT-ARGS"
# (a plugin with --filter=vmdk) serves RAW: nbdcopy with and without
# block status (so a wrong hole cannot hide a difference) and cmp.
check_filter_reads ()
{
    local what="$1" raw="$2"
    shift 2
    rm -f out.raw out-noext.raw
    if nbdkit -U - "$@" \
              --run 'nbdcopy "$uri" out.raw &&
                     nbdcopy --no-extents "$uri" out-noext.raw' &&
       cmp "$raw" out.raw && cmp "$raw" out-noext.raw; then
        pass "$what: reads as $raw"
    else
        fail "$what: does not read as $raw"
    fi
    rm -f out.raw out-noext.raw
}

# ---------------------------------------------------------------------
# Small images of the hostile-input tests (test-malformed.sh and
# test-filter-malformed.sh patch copies of them).

# make_two_table_image VMDK: qemu-img's monolithicSparse of 40 MiB (two
# tables of 512 64 KiB grains), grains 0-4 written with bytes
# 0x11-0x15 (allocated in that order), grain 528 (33 MiB, table 1)
# with 0x21.
make_two_table_image ()
{
    qemu-img create -q -f vmdk -o subformat=monolithicSparse "$1" 40M
    qemu-io -f vmdk -c 'write -P 0x11 0 64k' -c 'write -P 0x12 64k 64k' \
            -c 'write -P 0x13 128k 64k' -c 'write -P 0x14 192k 64k' \
            -c 'write -P 0x15 256k 64k' -c 'write -P 0x21 33M 64k' "$1"
}

# make_stream_image RAW VMDK: RAW of 32 64 KiB grains and a 3584-byte
# tail grain, grain K filled with byte K+1 (the tail with 0x21), and
# VMDK, qemu-img's streamOptimized copy of it (grain tables at the
# start, grains in order after them).
make_stream_image ()
{
    local g G=65536
    rm -f "$1"
    truncate -s $(( 32 * G + 3584 )) "$1"
    for (( g = 0; g <= 32; g++ )); do
        write_pattern "$1" $(( g * G )) $(( g < 32 ? G : 3584 )) $(( g + 1 ))
    done
    qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized "$1" "$2"
}
