#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed input stops nbdkit at startup (get_ready) with a clear
# message naming the problem, a non-zero exit status, and no crash
# (no signal, no sanitizer report).  Every case is run even if an
# earlier one fails; the failures are listed at the end.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit qemu-img qemu-io
requires qemu-img --version

make_scratch
cd "$scratch"
plugin="$VMDK_PLUGIN"
failures=()

# expect_error NAME SUBSTRING NBDKIT-ARGS...
#   Runs nbdkit with the plugin and ARGS; it must fail at startup with
#   SUBSTRING (a fixed string; several, one a line, are alternatives)
#   in its stderr.  "--run 'exit 0'" makes a wrongly accepted image end
#   the run with status 0.  Each case is run twice: as the plugin opens
#   by default (read-write) and with readonly=true.
expect_error ()
{
    local name="$1" pattern="$2" mode st log
    shift 2
    for mode in default readonly=true; do
        log="$name.$mode.err"
        st=0
        if [ "$mode" = default ]; then
            nbdkit -U - "$plugin" "$@" --run 'exit 0' >"$log" 2>&1 || st=$?
        else
            nbdkit -U - "$plugin" "$@" "$mode" --run 'exit 0' \
                   >"$log" 2>&1 || st=$?
        fi
        cat "$log"
        if ! check_no_crash "$st" "$log"; then
            failures+=("$name ($mode): crashed (status $st)")
        elif [ "$st" -eq 0 ]; then
            failures+=("$name ($mode): accepted (status 0), expected: $pattern")
        elif ! grep -qF -- "$pattern" "$log"; then
            failures+=("$name ($mode): message lacks \"$pattern\": $(cat "$log")")
        fi
    done
}

# expect_ok NAME NBDKIT-ARGS...: a control case that must start.
expect_ok ()
{
    local name="$1" st=0
    shift
    nbdkit -U - "$plugin" "$@" --run 'nbdinfo --size "$uri"' \
           >"$name.err" 2>&1 || st=$?
    cat "$name.err"
    if [ "$st" -ne 0 ]; then
        failures+=("$name: control case failed (status $st)")
    fi
}

# patch FILE OFFSET BYTES (printf escapes): overwrite in place.
patch ()
{
    printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

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

# --- Sparse headers ---------------------------------------------------

qemu-img create -q -f vmdk -o subformat=monolithicSparse s.vmdk 10M
qemu-io -f vmdk -c 'write -P 1 0 1M' s.vmdk
expect_ok sparse-ok s.vmdk

head -c 100 s.vmdk > trunc.vmdk
expect_error truncated-header "sparse header is truncated (100 of 512 bytes)" \
             trunc.vmdk

head -c 4 s.vmdk > trunc4.vmdk
expect_error truncated-header-4 "sparse header is truncated" trunc4.vmdk

cp s.vmdk g0.vmdk
patch g0.vmdk 20 '\0\0\0\0\0\0\0\0'
expect_error grain-size-0 "grainSize 0 sectors is invalid" g0.vmdk

cp s.vmdk g30.vmdk                              # 2^30 sectors
patch g30.vmdk 20 '\0\0\0\100\0\0\0\0'
expect_error grain-size-2^30 "grainSize 1073741824 sectors is invalid" g30.vmdk

cp s.vmdk g63.vmdk                              # 2^63 sectors
patch g63.vmdk 20 '\0\0\0\0\0\0\0\200'
expect_error grain-size-2^63 "grainSize 9223372036854775808 sectors is invalid" \
             g63.vmdk

cp s.vmdk g3.vmdk                               # not a power of 2
patch g3.vmdk 20 '\3\0\0\0\0\0\0\0'
expect_error grain-size-3 "grainSize 3 sectors is invalid" g3.vmdk

cp s.vmdk n0.vmdk
patch n0.vmdk 44 '\0\0\0\0'
expect_error numgtes-0 "numGTEsPerGT 0 is invalid" n0.vmdk

cp s.vmdk nbig.vmdk
patch nbig.vmdk 44 '\377\377\377\377'
expect_error numgtes-huge "numGTEsPerGT 4294967295 is invalid" nbig.vmdk

cp s.vmdk cap.vmdk                              # 2^62 sectors
patch cap.vmdk 12 '\0\0\0\0\0\0\0\100'
expect_error capacity-huge "capacity 4611686018427387904 sectors is too large" \
             cap.vmdk

cp s.vmdk gd.vmdk
patch gd.vmdk 56 '\0\0\0\0\0\0\020\0'
expect_error gd-beyond-eof "lies beyond the end of the file" gd.vmdk

cp s.vmdk ver.vmdk
patch ver.vmdk 4 '\011\0\0\0'
expect_error header-version "sparse header version 9 is not supported" ver.vmdk

cp s.vmdk crlf.vmdk                             # newline detector
patch crlf.vmdk 73 '\n \n\n'
expect_error crlf "corrupted by CR/LF translation" crlf.vmdk

{ printf 'KDMV'; head -c 508 /dev/urandom; } > kdmv-junk.vmdk
expect_error kdmv-junk "sparse header" kdmv-junk.vmdk

# --- Extent files -----------------------------------------------------

mkdir two
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse two/d.vmdk 3G
test -f two/d-s002.vmdk
expect_ok two-ok two/d.vmdk
cp -a two two-missing
rm two-missing/d-s002.vmdk
expect_error missing-sparse-extent \
             "d-s002.vmdk: No such file or directory" two-missing/d.vmdk

cp -a two two-magic
patch two-magic/d-s002.vmdk 0 'XXXX'
expect_error bad-magic-in-sparse-extent \
             'sparse extent has neither "KDMV" nor "COWD" magic' \
             two-magic/d.vmdk

mkdir twof
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentFlat twof/d.vmdk 3G
rm twof/d-f001.vmdk
expect_error missing-flat-extent \
             "d-f001.vmdk: No such file or directory" twof/d.vmdk

# --- Descriptors ------------------------------------------------------

mkdir d
cd d
truncate -s 1M x.vmdk
desc ok.vmdk monolithicFlat 'RW 2048 FLAT "x.vmdk" 0'
expect_ok flat-ok ok.vmdk

desc size-abc.vmdk monolithicSparse 'RW abc SPARSE "x.vmdk"'
expect_error extent-size-abc "the size in sectors must be a positive number" \
             size-abc.vmdk
desc size-0.vmdk monolithicFlat 'RW 0 FLAT "x.vmdk" 0'
expect_error extent-size-0 "the size in sectors must be a positive number" \
             size-0.vmdk
desc size-big.vmdk monolithicFlat 'RW 99999999999999999999 FLAT "x.vmdk" 0'
expect_error extent-size-overflow \
             "the size in sectors must be a positive number" size-big.vmdk
desc total-big.vmdk monolithicFlat 'RW 18014398509481983 FLAT "x.vmdk" 0' \
     'RW 18014398509481983 FLAT "x.vmdk" 0'
expect_error extents-sum-overflow "more than 2^63 bytes" total-big.vmdk

desc rdm.vmdk monolithicFlat 'RW 100 VMFSRDM "x.vmdk"'
expect_error extent-vmfsrdm "extent type is not supported" rdm.vmdk
desc flat-nooff.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk"'
expect_error flat-without-offset "a FLAT extent needs an offset" flat-nooff.vmdk
desc access.vmdk monolithicFlat 'RX 100 FLAT "x.vmdk" 0' 'RW 100 FLAT "x.vmdk" 0'
expect_error bad-line "cannot parse descriptor line" access.vmdk
desc quote.vmdk monolithicFlat 'RW 100 FLAT "x.vmdk 0'
expect_error unterminated-quote "unterminated quoted file name" quote.vmdk
desc noname.vmdk monolithicFlat 'RW 100 FLAT "" 0'
expect_error empty-name "file name is empty" noname.vmdk
desc noext.vmdk monolithicFlat
expect_error no-extents "descriptor has no extent lines" noext.vmdk
printf '# Disk DescriptorFile\nversion=1\nRW 100 FLAT "x.vmdk" 0\n' > noct.vmdk
expect_error no-createtype "descriptor has no createType" noct.vmdk
desc ct.vmdk fullDevice 'RW 100 FLAT "x.vmdk" 0'
expect_error unknown-createtype 'createType="fullDevice" is not supported' ct.vmdk
desc ct2.vmdk fooBar 'RW 100 FLAT "x.vmdk" 0'
expect_error unknown-createtype-2 'createType="fooBar" is not supported' ct2.vmdk
sed 's/^version=1/version=9/' ok.vmdk > v9.vmdk
expect_error bad-version "version=9 is not supported" v9.vmdk

# Extent names that escape the descriptor's directory are refused.
truncate -s 1M ../escape.vmdk
desc abs.vmdk monolithicFlat 'RW 8 FLAT "/etc/passwd" 0'
expect_error absolute-path "outside" abs.vmdk
desc dotdot.vmdk monolithicFlat 'RW 100 FLAT "../escape.vmdk" 0'
expect_error dotdot-path "outside" dotdot.vmdk
ln -s ../escape.vmdk link-out.vmdk
desc symlink.vmdk monolithicFlat 'RW 100 FLAT "link-out.vmdk" 0'
expect_error symlink-outside "outside" symlink.vmdk
ln -s /etc/passwd link-abs.vmdk
desc symlink-abs.vmdk monolithicFlat 'RW 1 FLAT "link-abs.vmdk" 0'
expect_error symlink-absolute "outside" symlink-abs.vmdk
# A symlink that stays inside is fine.
ln -s x.vmdk link-in.vmdk
desc symlink-in.vmdk monolithicFlat 'RW 2048 FLAT "link-in.vmdk" 0'
expect_ok symlink-inside symlink-in.vmdk
# Not a regular file.
mkdir sub
desc dir.vmdk monolithicFlat 'RW 100 FLAT "sub" 0'
expect_error extent-is-directory $'not a regular file\nIs a directory' dir.vmdk

# Descriptor over 1 MiB.
{
    cat ok.vmdk
    for (( i = 0; i < 20000; i++ )); do
        echo "# padding padding padding padding padding padding $i"
    done
} > big.vmdk
test "$(stat -c %s big.vmdk)" -gt 1048576
expect_error descriptor-over-1MiB "larger than the limit of 1048576" big.vmdk

# Non-VMDK input.
head -c 100000 /dev/urandom > junk.vmdk
expect_error junk "not a VMDK file" junk.vmdk
printf 'hello world\n' > text.vmdk
expect_error text "not a VMDK file" text.vmdk
: > empty.vmdk
expect_error empty "not a VMDK file" empty.vmdk
expect_error directory "not a regular file" sub
expect_error nonexistent "No such file or directory" nonexistent.vmdk
cd ..

# --- Summary ----------------------------------------------------------

set +x
if [ ${#failures[@]} -gt 0 ]; then
    echo "$0: ${#failures[@]} case(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "$0: all cases passed"
