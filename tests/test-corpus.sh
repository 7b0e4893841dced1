#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The held-out corpus of real VMDKs written by other software
# ($VMDK_CORPUS, see its MANIFEST.md): for every entry of expected.tsv,
#
# - raw_sha256 given: the plugin serves virtual_size_bytes bytes whose
#   sha256 is raw_sha256.  Hashing an 8 or 16 GiB blank disk takes a
#   minute here (sha256 runs at 200-400 MB/s), so disks over
#   CORPUS_HASH_MAX bytes (default 64 MiB) that qemu-img reads (the
#   hashes were made with qemu-img 7.2, the version here) are instead
#   copied by nbdcopy into a sparse raw file (what block status calls a
#   hole stays a hole) and compared with qemu-img's raw conversion of
#   the same file (holes in both skipped, everything else compared);
# - raw_sha256 "-" and qemu_readable "no": nbdkit refuses to start,
#   cleanly (non-zero exit, an error message, no crash).
#
# An entry that needs a feature not implemented yet is SKIPped, not
# failed, but only if the refusal says "not supported yet".  The corpus
# is read-only: each entry is copied to a scratch directory and its
# "prep" command (e.g. gunzip -k) is run there.  One line per entry.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy sha256sum timeout

: "${VMDK_CORPUS:=$abs_srcdir/../../shared/corpus}"
if [ ! -d "$VMDK_CORPUS" ] || [ ! -f "$VMDK_CORPUS/expected.tsv" ]; then
    echo "$0: no corpus at '$VMDK_CORPUS': test skipped"
    exit 77
fi

make_scratch big
cd "$scratch"
plugin="$VMDK_PLUGIN"
pass=0 fail=0 skip=0

result ()
{
    local verdict="$1" name="$2"
    shift 2
    printf '%-4s %s: %s\n' "$verdict" "$name" "$*"
    case "$verdict" in
        PASS) pass=$(( pass + 1 )) ;;
        FAIL) fail=$(( fail + 1 )) ;;
        SKIP) skip=$(( skip + 1 )) ;;
    esac
}

# sha256 of stdin, as bare hex.  OpenSSL uses SHA-NI where the CPU
# has it: several times faster than sha256sum over the 17 GiB of this
# corpus.
hash ()
{
    if command -v openssl >/dev/null; then
        openssl dgst -sha256 | awk '{ print $NF }'
    else
        sha256sum | cut -d' ' -f1
    fi
}

# The first error line of a log, shortened for the summary.
first_error ()
{
    grep -m1 'error:' "$1" | cut -c1-300 || echo "(no error message)"
}

while IFS=$'\t' read -r name main size sha readable size_source producer \
      ctype prep qerr; do
    [ "$name" != name ] || continue             # the header line
    [ -n "$name" ] || continue

    dir=$(dirname "$main")
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -r "$VMDK_CORPUS/$dir/." "$dir/"
    chmod -R u+w "$dir"
    if [ "$prep" != - ] && ! (eval "$prep") < /dev/null > prep.log 2>&1
    then
        result FAIL "$name" "prep command failed: $prep: $(head -c 300 prep.log)"
        continue
    fi

    log="$dir.log"
    rm -f size.out sum.out
    set +e
    if [ "$sha" != - ] && [ "$readable" = yes ] &&
       [ "$size" -gt "${CORPUS_HASH_MAX:-67108864}" ]; then
        # The same bytes as qemu-img reads: say so with its hash.
        rm -f ours.raw qemu.raw
        timeout 1200 nbdkit -r -U - "$plugin" "$main" --run '
            nbdinfo --size "$uri" > size.out && nbdcopy "$uri" ours.raw' \
            < /dev/null 2> "$log"
        r=$?
        if [ "$r" -eq 0 ] &&
           qemu-img convert -f vmdk -O raw "$main" qemu.raw &&
           qemu-img compare -q -f raw -F raw qemu.raw ours.raw; then
            echo "$sha" > sum.out
        fi
        rm -f ours.raw qemu.raw
    else
        timeout 1200 nbdkit -r -U - "$plugin" "$main" --run '
            nbdinfo --size "$uri" > size.out && nbdcopy "$uri" -' \
            < /dev/null 2> "$log" | hash > sum.out
        r=${PIPESTATUS[0]}
    fi
    set -e
    if ! check_no_crash "$r" "$log" 2>/dev/null; then
        result FAIL "$name" "crashed (status $r): $(first_error "$log")"
        continue
    fi

    if [ "$sha" = - ] && [ "$readable" = no ]; then
        # Expected: a clean refusal at startup.
        # The message must be about this image (not, say, a plugin
        # that failed to load).
        if [ "$r" -ne 0 ] && [ ! -s size.out ] &&
               grep 'error:' "$log" | grep -qF "$(basename "$main")"; then
            result PASS "$name" "refused as expected:" \
                   "$(first_error "$log" | sed 's/^nbdkit: error: //')"
        else
            result FAIL "$name" "expected a refusal at startup," \
                   "got status $r, size $(cat size.out 2>/dev/null)"
        fi
        continue
    fi

    if [ "$r" -ne 0 ] && [ ! -s size.out ]; then
        if grep -q 'not supported yet' "$log"; then
            result SKIP "$name" "(not supported yet)" \
                   "$(first_error "$log" | sed 's/^nbdkit: error: //')"
        else
            result FAIL "$name" "refused: $(first_error "$log")"
        fi
        continue
    fi
    got_size=$(cat size.out 2>/dev/null || :)
    got_sum=$(cat sum.out 2>/dev/null || :)
    if [ "$r" -ne 0 ]; then
        result FAIL "$name" "read failed (status $r): $(first_error "$log")"
    elif [ "$got_size" != "$size" ]; then
        result FAIL "$name" "virtual size $got_size, expected $size"
    elif [ "$got_sum" != "$sha" ]; then
        result FAIL "$name" "sha256 $got_sum, expected $sha"
    else
        result PASS "$name" "$size bytes, sha256 ${sha:0:16}... ($ctype," \
               "$producer)"
    fi
    rm -rf "$dir"
done < "$VMDK_CORPUS/expected.tsv"

echo "$0: $pass passed, $fail failed, $skip skipped (not supported yet)"
[ "$fail" -eq 0 ]
