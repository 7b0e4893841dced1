# shellcheck shell=bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# shellcheck disable=SC2034  # G, M, T_FIFO: for the family scripts
# shellcheck disable=SC2154  # abs_srcdir, testname: from functions.sh
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The case runners of the malformed-input tests (test-malformed-*.sh),
# one script per family of pitfalls.  Each case asserts the exact
# outcome of one hostile input, in both open modes (the default,
# read-write, and readonly=true):
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
# MALFORMED_TIMEOUT (60 s) and MALFORMED_FIFO_TIMEOUT (5 s) bound each
# run; KEEP_SCRATCH=1 keeps the images and logs (tests/tmp/).
#
# A family script starts with its pitfall table: under a line
# "# Pitfall table", one entry per pitfall, "# ID  pitfall -> expected
# outcome", where it comes from ("from:"), and the cases covering it
# ("cases:"; each case is labelled with its ID, and malformed_finish
# checks that the table and the cases run agree).  The table ends at
# the script's first "source " line.  Then:
#
#   source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
#   source "$abs_srcdir/malformed.sh"
#   set -euo pipefail
#   set -x
#   malformed_start [COMMAND...]    # skips unless COMMANDs exist
#   ... cases: expect_error, expect_served ...
#   malformed_finish

G=65536
M=$(( 1024 * 1024 ))
failures=()
declare -A case_id=()

# A refusal takes milliseconds (seconds under valgrind): a run that
# takes longer than this hangs.  FIFO cases wait less (a hang is their
# likely failure).
T=${MALFORMED_TIMEOUT:-60}
T_FIFO=${MALFORMED_FIFO_TIMEOUT:-20}
if [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then T_FIFO=30; fi

# Set to yes around cases naming host files: a wrongly accepted image is
# then copied out and searched for the secret.
leak_check=no

# malformed_start [COMMAND...]: skip unless the plugin, the programs
# every case uses and COMMANDs are there; then make the scratch
# directory (the current directory from now on, $scratch its physical
# path), the secret host file and checks.sh.
malformed_start ()
{
    requires_plugin
    requires_cmds nbdkit nbdinfo nbdcopy qemu-img qemu-io od dd truncate \
                  timeout cmp "$@"
    requires qemu-img --version
    make_scratch
    cd "$scratch" || return
    scratch=$(pwd -P)
    plugin="$VMDK_PLUGIN"
    make_secret
    write_checks_sh
}

# make_secret: the host file that must never be served, in $scratch
# (outside every image directory, which are its subdirectories): 1 MiB
# of one recognizable line, secret.raw, and a descriptor naming it,
# secret.vmdk (so that a parent name escaping the directory would
# serve it).  $secret is the line.
make_secret ()
{
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
}

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

# fail WHAT...: record a failure; the script goes on to the next case.
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

# write_checks_sh: $scratch/checks.sh, run by nbdkit --run in
# expect_served.  The checks a served case runs against the export, one
# a line (offsets and lengths in bytes, BYTE the pattern of qemu-io
# read -P):
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
# (ro and rwlog are checked by expect_served on the log.)
write_checks_sh ()
{
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
}

# expect_served ID NAME MESSAGE FILE [PLUGIN-ARGS...] < CHECKS
#   nbdkit must serve FILE and pass CHECKS (write_checks_sh above) in
#   both modes, with MESSAGE (fixed string or "~REGEX"; "-" for none) in
#   its log.
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

# ---------------------------------------------------------------------
# Making bad images.

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

# ---------------------------------------------------------------------
# The end.

# malformed_finish: check that the script's pitfall table and the cases
# run agree, print the number of cases, list the failures; exit 1 if
# there were any.
malformed_finish ()
{
    { set +x; } 2>/dev/null
    check_pitfall_table "$abs_srcdir/$testname.sh"
    echo "$0: ${#case_id[@]} cases"
    if [ ${#failures[@]} -gt 0 ]; then
        echo "$0: ${#failures[@]} failure(s):"
        printf '  %s\n' "${failures[@]}"
        exit 1
    fi
    echo "$0: all cases passed"
}

# check_pitfall_table SCRIPT: every case listed in SCRIPT's pitfall
# table ran under the ID it is listed under, and every case that ran is
# listed.
check_pitfall_table ()
{
    local line id='' n names
    local -A table_id=()
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
    done < <(sed -n '/^# Pitfall table/,/^source /p' "$1")
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
}
