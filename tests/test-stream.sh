#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# streamOptimized (compressed grains) end to end.
#
# 1. Images written by qemu-img from random, compressible (text), mixed,
#    explicitly zero and unallocated grains, in several sizes (one
#    sector, one exact grain, a partial last grain, more than one grain
#    table), read byte-identical to "qemu-img convert -O raw": with and
#    without extents, 4 KiB at a time (every grain served from the
#    inflated-grain cache, each inflated once) and at an offset that is
#    not grain aligned (requests straddle grains).  The map equals qemu's: unallocated grains are
#    holes.  Writes are refused.
#
# 2. Hostile markers, made by patching one grain of a qemu image: wrong
#    lba, size 0, huge size, size just over the limit, size running past
#    the end of the file, corrupt zlib header and data, data inflating
#    short or long.  Each gives EIO for that grain's range only (whole
#    and 4 KiB reads, twice: failures are not cached), names the field
#    in the error, the rest of the disk still reads correctly and the
#    server survives.
#
# 3. Truncation.  Decision: an image whose header points at the grain
#    directory (what qemu-img writes) opens, reads correctly up to the
#    cut and gives EIO after it (the grain table or marker lies past the
#    end of the file); an image with gdOffset = GD_AT_END needs its
#    footer, so cut short it is refused at open.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img qemu-io jq od cmp
requires qemu-img --version
requires_filter offset

make_scratch
cd "$scratch"

plugin="$VMDK_PLUGIN"
G=65536

# ---------------------------------------------------------------------
# Helpers.

seq -f "%012g: some compressible text, the quick brown fox jumps" 1 4000 \
    > text.bin
truncate -s $G text.bin

# fill FILE FIRST LAST: grains FIRST..LAST by kind (grain number mod 8):
# 0,1 random; 2,3 text; 4 explicit zeroes (qemu leaves it unallocated);
# 5 hole; 6 half text, half random; 7 one random sector in zeroes.
fill ()
{
    local f="$1" g
    for (( g = $2; g <= $3; g++ )); do
        case $(( g % 8 )) in
            0|1) write_random "$f" $(( g * G )) $G ;;
            2|3) dd if=text.bin of="$f" bs=$G seek="$g" conv=notrunc \
                    status=none ;;
            4) write_zeroes "$f" $(( g * G )) $G ;;
            5) ;;
            6) dd if=text.bin of="$f" bs=$(( G / 2 )) count=1 \
                  seek=$(( 2 * g )) conv=notrunc status=none
               write_random "$f" $(( g * G + G / 2 )) $(( G / 2 )) ;;
            7) write_random "$f" $(( g * G + 1536 )) 512 ;;
        esac
    done
}

# make_image NAME SIZE FIRST LAST [FIRST LAST]...: NAME.raw of SIZE
# bytes with grains filled, the tail of the disk random, and
# NAME.vmdk, qemu-img's streamOptimized copy of it.
make_image ()
{
    local name="$1" size="$2"
    shift 2
    rm -f "$name.raw" "$name.vmdk"
    truncate -s "$size" "$name.raw"
    while [ $# -ge 2 ]; do
        fill "$name.raw" "$1" "$2"
        shift 2
    done
    write_random "$name.raw" $(( size > 1000 ? size - 1000 : 0 )) 1000
    truncate -s "$size" "$name.raw"
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized \
             "$name.raw" "$name.vmdk"
}

# data_grains VMDK: how many grains qemu says are allocated.
data_grains ()
{
    qemu-img map --output=json "$1" |
        jq '[.[] | select(.data) | ((.length + 65535) / 65536 | floor)] | add // 0'
}

# ---------------------------------------------------------------------
# 1. Good images.

good_image ()
{
    local name="$1" size="$2" n
    local vmdk="$name.vmdk"

    qemu-img convert -f vmdk -O raw "$vmdk" qemu.raw
    cmp "$name.raw" qemu.raw

    test "$(nbdinfo --size -- [ nbdkit "$plugin" "$vmdk" ])" -eq "$size"
    nbdinfo --is readonly -- [ nbdkit "$plugin" "$vmdk" ]

    for opts in "" "--no-extents"; do
        rm -f out.raw
        nbdkit -U - "$plugin" "$vmdk" \
               --run "nbdcopy $opts \"\$uri\" out.raw"
        cmp qemu.raw out.raw
    done

    # 4 KiB at a time (the blocksize filter splits every request): each
    # allocated grain is inflated once, one cache miss each.
    rm -f out.raw cache.log
    nbdkit -f -v -D vmdk.cache=1 -U - --filter=blocksize "$plugin" "$vmdk" \
           maxdata=4096 --run 'nbdcopy --no-extents "$uri" out.raw' \
           2> cache.log
    cmp qemu.raw out.raw
    n=$(data_grains "$vmdk")
    grep -E "inflated-grain cache.* $n misses" cache.log

    # Not grain aligned, whole requests and 4 KiB pieces: requests
    # straddle grains, and concurrent requests share grains.
    if [ "$size" -gt 3000 ]; then
        for split in no yes; do
            filter=()
            if [ $split = yes ]; then
                filter=(--filter=blocksize maxdata=4096)
            fi
            rm -f out.raw
            nbdkit -f -v -D vmdk.cache=1 -U - --filter=offset \
                   "$plugin" "$vmdk" "${filter[@]}" \
                   offset=1536 range=$(( size - 3000 )) \
                   --run 'nbdcopy "$uri" out.raw' 2> cache.log
            grep 'inflated-grain cache' cache.log
            cmp out.raw <(tail -c +1537 qemu.raw | head -c $(( size - 3000 )))
        done
    fi

    # The map is qemu's: compressed grains data, the rest holes.
    nbdkit -U - "$plugin" "$vmdk" --run 'nbdinfo --map "$uri"' |
        normalize_map > map.actual
    qemu-img map --output=json "$vmdk" | qemu_json_to_map > map.expected
    diff -u map.expected map.actual

    # Writes are refused.
    if nbdkit -U - "$plugin" "$vmdk" \
              --run 'qemu-io -f raw -c "write 0 512" "$uri"'; then
        echo "$0: a write succeeded" >&2
        exit 1
    fi
    rm -f qemu.raw out.raw
}

make_image one-sector 512 0 0
good_image one-sector 512

make_image one-grain $G 0 0
good_image one-grain $G

make_image tail $(( 32 * G + 3584 )) 0 31
good_image tail $(( 32 * G + 3584 ))

# Past the first grain table (512 grains): 40 MiB plus 3 sectors.
make_image big $(( 640 * G + 1536 )) 0 63 500 540
good_image big $(( 640 * G + 1536 ))

# ---------------------------------------------------------------------
# 2. Hostile grain markers, patched into tail.vmdk (32 grains + a
#    3584-byte tail grain; grain 0 is random, 2 is text).

size=$(( 32 * G + 3584 ))
fsize=$(stat -c %s tail.vmdk)

# check_bad K MESSAGE: serve bad.vmdk whose grain K is broken; expect
# EIO for exactly that grain and MESSAGE in the log.
check_bad ()
{
    local k="$1" msg="$2" start=$(( $1 * G )) len r=0
    len=$(( size - start < G ? size - start : G ))

    cat > check.sh <<EOF
set -x
uri="\$1"
fails ()
{
    timeout 60 qemu-io -r -f raw -c "read \$1 \$2" "\$uri" \
        > qemu-io.out 2>&1 && return 1
    cat qemu-io.out
    grep 'Input/output error' qemu-io.out
}
fails $start $len
fails $start $len
fails $(( start + len - 512 )) 512
fails $(( start + len - 512 )) 512
# Still serving.
timeout 60 qemu-io -r -f raw -c "read $(( start == 0 ? G : 0 )) 4096" "\$uri"
EOF
    nbdkit -f -v -U - "$plugin" bad.vmdk --run 'bash check.sh "$uri"' \
           2> bad.log || r=$?
    check_no_crash "$r" bad.log
    test "$r" -eq 0
    grep "error: .*bad.vmdk: grain marker at offset .*$msg" bad.log

    # A whole copy fails.  (Its own server: nbdkit 1.32 can abort on
    # an assertion when a multi-connection client hangs up after an
    # error while other replies are in flight; that is not ours.)
    if nbdcopy --no-extents -- [ nbdkit "$plugin" bad.vmdk ] null: ; then
        echo "$0: copying bad.vmdk succeeded" >&2
        exit 1
    fi

    # Everything but the bad grain reads correctly.
    if [ "$start" -gt 0 ]; then
        rm -f part.raw
        nbdcopy -- [ nbdkit --filter=offset "$plugin" bad.vmdk \
                            offset=0 range="$start" ] part.raw
        cmp part.raw <(head -c "$start" tail.raw)
    fi
    if [ $(( start + len )) -lt "$size" ]; then
        rm -f part.raw
        nbdcopy -- [ nbdkit --filter=offset "$plugin" bad.vmdk \
                            offset=$(( start + len )) \
                            range=$(( size - start - len )) ] part.raw
        cmp part.raw <(tail -c +$(( start + len + 1 )) tail.raw)
    fi
}

m0=$(grain_marker tail.vmdk 0)
m2=$(grain_marker tail.vmdk 2)
m3=$(grain_marker tail.vmdk 3)
mt=$(grain_marker tail.vmdk 32)
test "$(u64 tail.vmdk "$m2")" -eq 256
csize2=$(u32 tail.vmdk $(( m2 + 8 )))
csizet=$(u32 tail.vmdk $(( mt + 8 )))

cp tail.vmdk bad.vmdk; put_le bad.vmdk "$m2" 8 384
check_bad 2 "lba field is 384, expected 256"

cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 8 )) 4 0
check_bad 2 "size field is 0,"

cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 8 )) 4 4294967295
check_bad 2 "size field is 4294967295, expected 1 to 131572"
cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 8 )) 4 131573
check_bad 2 "size field is 131573, expected 1 to 131572"

# The tail grain is the last before the end-of-stream marker.
cp tail.vmdk bad.vmdk
put_le bad.vmdk $(( mt + 8 )) 4 $(( fsize - mt - 12 + 1 ))
check_bad 32 "size field $(( fsize - mt - 12 + 1 )) runs past the end"

cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 12 )) 2 0
check_bad 2 "bytes of compressed data are not valid zlib data"
cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m0 + 14 )) 1 255
check_bad 0 "bytes of compressed data are not valid zlib data"
# A flipped byte in stored (random) data: only the Adler-32 sees it.
cp tail.vmdk bad.vmdk
put_le bad.vmdk $(( m0 + 12 + 30000 )) 1 $(( $(od -An -t u1 -j $(( m0 + 12 + 30000 )) -N 1 tail.vmdk) ^ 1 ))
check_bad 0 "not valid zlib data"
# Compressed data cut short (the size covers only half of it).
cp tail.vmdk bad.vmdk; put_le bad.vmdk $(( m2 + 8 )) 4 $(( csize2 / 2 ))
check_bad 2 "not valid zlib data\|end before the zlib stream does"

# Valid zlib data of the wrong length: grain 3 gets the tail grain's
# data (3584 bytes inflated), lba kept.
cp tail.vmdk bad.vmdk
dd if=tail.vmdk of=bad.vmdk bs=1 skip=$(( mt + 8 )) seek=$(( m3 + 8 )) \
   count=$(( 4 + csizet )) conv=notrunc status=none
check_bad 3 "data inflates to 3584 bytes, expected 65536"

# ... and longer than the grain: grain 3 gets a grain and one byte of
# zeroes (compressed by Python's zlib, if there is one).
if python3 -c 'import zlib' 2>/dev/null; then
    cp tail.vmdk bad.vmdk
    python3 - "$m3" <<'EOF'
import struct, sys, zlib
m3 = int(sys.argv[1])
data = zlib.compress(bytes(65537))
with open("bad.vmdk", "r+b") as f:
    f.seek(m3 + 8)
    f.write(struct.pack("<I", len(data)) + data)
EOF
    check_bad 3 "inflates to more than the grain size"
fi

# ---------------------------------------------------------------------
# 3. Truncation.

# GD in the header (as qemu-img writes): reads fail only past the cut.
head -c $(( $(stat -c %s big.vmdk) / 1024 * 512 )) big.vmdk > bad.vmdk
cat > check.sh <<EOF
set -x
uri="\$1"
timeout 60 qemu-io -r -f raw -c "read 0 $G" "\$uri"
nbdcopy -- [ nbdkit --filter=offset "$plugin" bad.vmdk \
                    offset=0 range=$(( 4 * G )) ] part.raw
cmp part.raw <(head -c $(( 4 * G )) big.raw)
if timeout 60 qemu-io -r -f raw -c "read $(( 520 * G )) $G" "\$uri" \
   > qemu-io.out 2>&1
then exit 1; fi
grep 'Input/output error' qemu-io.out
timeout 60 qemu-io -r -f raw -c "read 0 4096" "\$uri"
EOF
r=0
rm -f part.raw
nbdkit -f -v -U - "$plugin" bad.vmdk --run 'bash check.sh "$uri"' 2> bad.log || r=$?
check_no_crash "$r" bad.log
test "$r" -eq 0
grep -E "error: .*bad.vmdk: (grain table .* points outside the file|grain marker at offset .*(cut short|runs past the end))" bad.log
if nbdcopy -- [ nbdkit "$plugin" bad.vmdk ] null: ; then exit 1; fi

# GD_AT_END: rewrite tail.vmdk the way VMware streams it (header
# gdOffset = GD_AT_END; footer marker, footer, end-of-stream marker
# last).  Whole, it reads like the original (and qemu agrees); cut in
# half, it is refused at open.
stream_gd_at_end tail.vmdk atend.vmdk
qemu-img convert -f vmdk -O raw atend.vmdk qemu.raw
cmp tail.raw qemu.raw
rm -f out.raw
nbdkit -U - "$plugin" atend.vmdk --run 'nbdcopy --no-extents "$uri" out.raw'
cmp tail.raw out.raw

head -c $(( $(stat -c %s atend.vmdk) / 1024 * 512 )) atend.vmdk > bad.vmdk
r=0
nbdkit -U - "$plugin" bad.vmdk --run 'nbdinfo "$uri"' 2> bad.log || r=$?
cat bad.log
check_no_crash "$r" bad.log
test "$r" -ne 0
grep "bad.vmdk: gdOffset is GD_AT_END but there is no valid footer" bad.log
