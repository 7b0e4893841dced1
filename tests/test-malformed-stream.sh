#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2119  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Malformed and hostile streamOptimized images (grain markers, zlib
# data, truncation, footers): one case for each pitfall known from the
# other implementations (shared/VMDK-FORMAT.md), each asserting the
# exact outcome (refused, EIO or served: tests/malformed.sh) in both
# open modes, the default (read-write) and readonly=true.  Images come
# from qemu-img, patched with dd.
#
# Pitfall table.  ID, pitfall -> expected outcome, where it comes from
# ("from:"), and the cases covering it ("cases:"; each case below is
# labelled with its ID, and malformed_finish checks that this table and
# the cases run agree).
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
# Grain tables, on a streamOptimized image (the rest of the G family:
# test-malformed-kdmv.sh and test-malformed-cowd.sh)
# G3  GT entry past EOF -> EIO on that grain only
#     from: QEMU vmdk_co_check "cluster offset points after EOF"
#     cases: stream-gte-past-eof

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
source "$abs_srcdir/malformed.sh"
set -euo pipefail
set -x

malformed_start gzip

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

# stream_bad ID NAME MESSAGE-REGEX FILE GRAIN [RO-REASON]: grain GRAIN
# of FILE is broken: EIO there, the neighbours read.  The default mode
# serves it writable; only a bad last grain, or an entry outside the
# file, keeps it read-only, for RO-REASON.
stream_bad ()
{
    local g="$5" len=$G ro=""
    if [ "$g" -eq 32 ]; then len=3584; fi
    if [ -n "${6:-}" ]; then ro="ro $6"; fi
    expect_served "$1" "$2" "~$4: $3" "$4" <<EOF
eio $(( g * G )) $len
data $(( g > 0 ? (g - 1) * G : G )) $G $(( g > 0 ? g : 2 ))
data $(( g < 31 ? (g + 1) * G : 0 )) $G $(( g < 31 ? g + 2 : 1 ))
$ro
EOF
}
last_bad="the last grain's marker is invalid"
outside="a grain table entry points before overHead or past the end of the file"

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
           szeof.vmdk 32 "$last_bad"
variant gteeof.vmdk st.vmdk "$(kdmv_gte_offset st.vmdk 5)" 4 4000000
stream_bad G3 stream-gte-past-eof \
           "grain table 0 entry 5 = 4000000 points outside the file" \
           gteeof.vmdk 5 "$outside"

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
ro $outside
EOF
head -c $(( m16 + 40 )) st.vmdk > cutmid.vmdk
expect_served S8 stream-truncated-mid-grain \
              "~cutmid\.vmdk: grain marker at offset $m16: size field [0-9]+ runs past the end of the file" \
              cutmid.vmdk <<EOF
data $(( 15 * G )) $G 16
eio $(( 16 * G )) $G
ro $outside
EOF

# GD_AT_END (header gdOffset all ones; footer marker, footer, EOS last).
stream_gd_at_end st.vmdk atend.vmdk
afs=$(stat -c %s atend.vmdk)
expect_served S9 stream-footer-ok - atend.vmdk <<EOF
data 0 $G 1
data $(( 31 * G )) $G 32
data $(( 32 * G )) 3584 33
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
EOF
{ head -c $(( afs - 1536 )) atend.vmdk; metadata_marker 4; tail -c 1536 atend.vmdk; } \
    > progress-end.vmdk
expect_served S13 stream-progress-before-footer - progress-end.vmdk <<EOF
data 0 $G 1
data $(( 32 * G )) 3584 33
EOF
cd ..

malformed_finish
