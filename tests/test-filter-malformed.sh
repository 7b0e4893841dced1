#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Hostile single-file images through the filter (the file plugin
# below): the cases of test-malformed.sh that apply to one file, with
# the IDs of its pitfall table.  Each runs under a timeout (a served
# image twice, read-write and with nbdkit -r), and must end as expected:
#
#   refused  the client's connection fails, and the log has the
#            engine's message (nbdkit keeps running: the next client
#            would try again);
#   served   the image is served: bad ranges fail with EIO (twice, and
#            their first sector), block status of a bad table fails
#            with EIO, the rest reads the expected bytes.
#
# Never a crash (signal, sanitizer report) or a hang.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_cmds nbdkit nbdinfo qemu-img qemu-io od dd timeout
requires_built test-write-nbd
requires_built mkcowd

make_scratch
cd "$scratch"
G=65536
M=$(( 1024 * 1024 ))
T=${MALFORMED_TIMEOUT:-60}
nbd_client="$abs_builddir/test-write-nbd"

# serve NAME MODE FILE RUN: the filter over FILE, the client RUN; the
# log in NAME.MODE.log; sets st.
serve_case ()
{
    local log="$1.$2.log" ro=()
    if [ "$2" = ro ]; then ro=(-r); fi
    st=0
    timeout -k 5 "$T" nbdkit "${ro[@]}" -U - file "$3" \
            --filter="$VMDK_FILTER" --run "$4" > "$log" 2>&1 || st=$?
    cat "$log"
}

# survived NAME MODE: no hang, no crash.
survived ()
{
    local log="$1.$2.log"
    if [ "$st" -eq 124 ] || [ "$st" -eq 137 ]; then
        fail "$1 ($2): HUNG (status $st)"
        return 1
    fi
    if ! check_no_crash "$st" "$log"; then
        fail "$1 ($2): CRASHED (status $st)"
        return 1
    fi
}

# refused ID NAME PATTERN FILE: the connection fails with PATTERN (a
# fixed string) in the log.  Only read-write: opening read-only parses
# the same, and reads less.
refused ()
{
    local id="$1" name="$2" pattern="$3" file="$4" mode
    for mode in rw; do
        serve_case "$name" "$mode" "$file" 'nbdinfo --size "$uri"'
        survived "$name" "$mode" || continue
        if [ "$st" -ne 0 ] && grep -qF -- "$pattern" "$name.$mode.log"; then
            pass "$id $name ($mode): refused"
        else
            fail "$id $name ($mode): status $st, expected \"$pattern\""
        fi
    done
}

# served ID NAME PATTERN FILE CMD...: served, and test-write-nbd's
# commands CMD pass; PATTERN ("-": none) is in the log.
served ()
{
    local id="$1" name="$2" pattern="$3" file="$4" mode
    shift 4
    for mode in rw ro; do
        serve_case "$name" "$mode" "$file" \
                   "'$nbd_client' \"\$uri\" ${*@Q}"
        survived "$name" "$mode" || continue
        if [ "$st" -eq 0 ] &&
           { [ "$pattern" = - ] || grep -qF -- "$pattern" "$name.$mode.log"; }; then
            pass "$id $name ($mode): served as expected"
        else
            fail "$id $name ($mode): status $st, or no \"$pattern\""
        fi
    done
}

# eio OFF LEN: the commands that check a bad range fails with EIO.
eio ()
{
    echo "!EIO:r:$1:$2:0" "!EIO:r:$1:$2:0" "!EIO:r:$1:512:0" "!EIO:r:$1:512:0"
}

# variant COPY ORIGINAL OFFSET BYTES VALUE
variant ()
{
    cp "$2" "$1"
    put_le "$1" "$3" "$4" "$5"
}

# ---------------------------------------------------------------------
# KDMV headers.  s.vmdk: 10 MiB, the first MiB byte 1.

qemu-img create -q -f vmdk -o subformat=monolithicSparse s.vmdk 10M
qemu-io -f vmdk -c 'write -P 1 0 1M' s.vmdk
served K1 sparse-ok - s.vmdk "size:$(( 10 * M ))" "r:0:$M:1" "r:$M:$M:0"

printf 'KDMX' > typo.vmdk
tail -c +5 s.vmdk >> typo.vmdk
refused K1 kdmv-magic-typo "image below: not a VMDK file" typo.vmdk
: > empty.vmdk
refused K1 empty "image below: not a VMDK file" empty.vmdk
head -c 100 s.vmdk > trunc.vmdk
refused K2 truncated-header \
        "image below: sparse header is truncated (100 of 512 bytes)" trunc.vmdk
variant ver.vmdk s.vmdk 4 4 9
refused K3 header-version-9 \
        "image below: sparse header version 9 is not supported" ver.vmdk
variant g3.vmdk s.vmdk 20 8 3
refused K4 grain-size-3 \
        "image below: sparse header grainSize 3 sectors is invalid" g3.vmdk
variant n0.vmdk s.vmdk 44 4 0
refused K5 numgtes-0 "image below: sparse header numGTEsPerGT 0 is invalid" \
        n0.vmdk
variant cap.vmdk s.vmdk 12 8 $(( 1 << 62 ))
refused K6 capacity-huge \
        "image below: sparse header capacity 4611686018427387904 sectors is too large" \
        cap.vmdk
variant gd.vmdk s.vmdk 56 8 $(( 1 << 44 ))
refused K9 gd-beyond-eof \
        "image below: grain directory at sector 17592186044416 (1 entries) lies beyond the end of the file" \
        gd.vmdk
cp s.vmdk crlf.vmdk
printf '\n \n\n' | dd of=crlf.vmdk bs=1 seek=73 conv=notrunc status=none
refused K12 crlf \
        "image below: sparse header newline detector bytes are wrong" crlf.vmdk

# ---------------------------------------------------------------------
# Grain directories and tables.  k.vmdk: 40 MiB (two tables), grains
# 0-4 bytes 0x11-0x15, and 33 MiB byte 0x21.

make_two_table_image k.vmdk
gd=$(u64 k.vmdk 56)
gte3=$(kdmv_gte_offset k.vmdk 3)

variant gde.vmdk k.vmdk $(( gd * 512 + 4 )) 4 4000000000
# shellcheck disable=SC2046
served G1 gde-past-eof \
       "image below: grain directory entry 1 points outside the file" \
       gde.vmdk $(eio $(( 33 * M )) $G) "!EIO:map:$(( 33 * M )):$G:0" \
       "r:0:$G:17" "r:$(( 256 * 1024 )):$G:21" "r:$(( 32 * M - G )):$G:0"
variant gte.vmdk k.vmdk "$gte3" 4 4000000000
# shellcheck disable=SC2046
served G3 gte-past-eof \
       "image below: grain table 0 entry 3 = 4000000000 points outside the file" \
       gte.vmdk $(eio $(( 3 * G )) $G) "r:$(( 2 * G )):$G:19" \
       "r:$(( 4 * G )):$G:21" "r:$(( 33 * M )):$G:33"
variant gte1.vmdk k.vmdk "$gte3" 4 1
# shellcheck disable=SC2046
served G4 gte-1-without-flag \
       "image below: grain table 0 entry 3 = 1, a zeroed grain, but the header flags" \
       gte1.vmdk $(eio $(( 3 * G )) $G) "r:$(( 2 * G )):$G:19"

# ---------------------------------------------------------------------
# streamOptimized.  st.vmdk: 32 grains and a 3584-byte tail, grain K
# byte K+1.

make_stream_image st.raw st.vmdk
fsize=$(stat -c %s st.vmdk)
m2=$(grain_marker st.vmdk 2)
mt=$(grain_marker st.vmdk 32)
served S0 stream-ok - st.vmdk "r:0:$G:1" "r:$(( 31 * G )):$G:32" \
       "r:$(( 32 * G )):3584:33"

# stream_bad ID NAME MESSAGE FILE GRAIN: EIO on GRAIN (a whole-grain
# read, and reads of its start, as a batch of grains and alone), its
# neighbours read.
stream_bad ()
{
    local g="$5" len=$G
    if [ "$g" -eq 32 ]; then len=3584; fi
    # shellcheck disable=SC2046
    served "$1" "$2" "image below: $3" "$4" $(eio $(( g * G )) "$len") \
           "!EIO:r:$(( (g - 1) * G )):$(( G + len )):0" \
           "r:$(( (g - 1) * G )):$G:$g" \
           "r:$(( g < 31 ? (g + 1) * G : 0 )):$G:$(( g < 31 ? g + 2 : 1 ))"
}

variant lba.vmdk st.vmdk "$m2" 8 384
stream_bad S1 stream-lba-mismatch \
           "grain marker at offset $m2: lba field is 384, expected 256" lba.vmdk 2
variant sz0.vmdk st.vmdk $(( m2 + 8 )) 4 0
stream_bad S2 stream-size-0 "grain marker at offset $m2: size field is 0," \
           sz0.vmdk 2
variant szh.vmdk st.vmdk $(( m2 + 8 )) 4 4294967295
stream_bad S3 stream-size-huge \
           "grain marker at offset $m2: size field is 4294967295" szh.vmdk 2
past=$(( fsize - mt - 12 + 1 ))
variant szeof.vmdk st.vmdk $(( mt + 8 )) 4 "$past"
stream_bad S4 stream-size-past-eof \
           "grain marker at offset $mt: size field $past runs past the end of the file" \
           szeof.vmdk 32
variant zd.vmdk st.vmdk $(( m2 + 14 )) 1 255
stream_bad S5 stream-zlib-data \
           "grain marker at offset $m2: its" zd.vmdk 2
m16=$(grain_marker st.vmdk 16)
head -c $(( m16 + 40 )) st.vmdk > cutmid.vmdk
# shellcheck disable=SC2046
served S8 stream-truncated-mid-grain \
       "image below: grain marker at offset $m16: size field" cutmid.vmdk \
       $(eio $(( 16 * G )) $G) $(eio $(( 31 * G )) $G) \
       "!EIO:r:$(( 15 * G )):$(( 2 * G )):0" "r:$(( 15 * G )):$G:16"

stream_gd_at_end st.vmdk atend.vmdk
afs=$(stat -c %s atend.vmdk)
served S9 stream-footer-ok - atend.vmdk "r:$(( 31 * G )):$G:32"
cp atend.vmdk fmagic.vmdk
printf XXXX | dd of=fmagic.vmdk bs=1 seek=$(( afs - 1024 )) conv=notrunc \
                 status=none
refused S9 stream-footer-magic \
        'footer: image below: bad magic 0x58585858 in sparse header' fmagic.vmdk
head -c $(( afs - 512 )) atend.vmdk > noeos.vmdk
refused S11 stream-eos-missing \
        "image below: gdOffset is GD_AT_END but there is no valid footer" noeos.vmdk

# ---------------------------------------------------------------------
# COWD: a truncated header.

truncate -s $(( 4 * M )) c.raw
write_pattern c.raw 0 $G 7
"$abs_builddir/mkcowd" -q c.raw c.vmdk
served C0 cowd-ok - c.vmdk "r:0:$G:7" "r:$G:$G:0"
head -c 1000 c.vmdk > ctrunc.vmdk
refused C7 cowd-truncated-1000 "image below: COWD header is truncated" \
        ctrunc.vmdk

check_summary
