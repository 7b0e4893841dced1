#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# streamOptimized writing, end to end.  Every image written is checked
# by check-stream (tests/check-stream.c, a strict reading of the format
# independent of lib/), compared with its raw model by qemu-img, and
# read back through the plugin:
#  1. nbdcopy of a raw disk with holes, zero runs, random and
#     compressible data into a new stream image: once with one
#     connection and one thread (then the grains must be in ascending
#     order), once as nbdcopy does by default (two connections working
#     on regions 128 MiB apart: the order is reported).
#  2. Appending to a stream image qemu-img made: rewrites of some
#     grains, partial grains, new grains; the old data stays.
#  3. A flush in the middle: a copy of the file taken while the server
#     still runs is a complete image of what was flushed.
#  4. kill -9 with unflushed writes in flight after a flush: the image
#     reopens (recovered from its markers, with a warning), everything
#     flushed reads back, every unflushed grain reads old or new; then
#     new writes and a clean shutdown leave a valid stream again.
#  5. Zero and trim of whole grains are not stored; fast zero of part
#     of a grain is refused.
#  6. A full disk (a file-size limit): once a written grain cannot be
#     stored, the flush fails with ENOSPC and reads and block status
#     fail with EIO, never serving what the file held before; the image
#     then reopens with every grain old or new, and check --repair
#     makes it clean.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_tool
requires_cmds nbdkit nbdcopy qemu-img qemu-io cmp
requires qemu-img --version
requires_built check-stream
requires_built test-write-nbd
check=$abs_builddir/check-stream
nbd=$abs_builddir/test-write-nbd

make_scratch
cd "$scratch"

M=$((1024 * 1024))
G=65536

# check_stream WHAT IMAGE [-o]: check-stream accepts IMAGE.
check_stream ()
{
    local what=$1 img=$2
    shift 2
    if "$check" "$@" "$img" > check.out 2>&1; then
        pass "$what: check-stream: $(cat check.out)"
    else
        fail "$what: check-stream rejects the image"; head -20 check.out
    fi
}

# check_all WHAT IMAGE RAW [CHECK-STREAM-OPTIONS]: the stream checks,
# qemu-img compare, and the plugin reading RAW's bytes back.
check_all ()
{
    local what=$1 img=$2 raw=$3
    shift 3
    check_stream "$what" "$img" "$@"
    check_image_equals "$what" "$img" "$raw"
    if serve file="$img" readonly=true \
             --run "nbdcopy --no-extents \"\$uri\" - | cmp - '$raw'"; then
        pass "$what: the plugin reads $raw's bytes"
    else
        fail "$what: the plugin reads other bytes than $raw"
    fi
}

# ---------------------------------------------------------------------
# 1. nbdcopy into a new stream image.

# A 300 MiB disk: compressible text, random data, explicit zeroes,
# holes, a sub-grain island, and data up to the last byte.
size=$((300 * M + 3 * 512))
truncate -s "$size" disk.raw
for (( i = 0; i < 40; i++ )); do
    { yes "$i nbdkit-vmdk stream writing test: moderately compressible" ||
          :; } | head -c $M |
        dd of=disk.raw bs=1M seek=$((i * 5)) conv=notrunc status=none
done
write_random disk.raw $((3 * M)) $((20 * M))
write_zeroes disk.raw $((60 * M)) $((10 * M))
write_random disk.raw $((140 * M + 4096)) 3000
write_random disk.raw $((200 * M)) $((2 * M))
write_random disk.raw $((size - 100000)) 100000

for mode in "-C 1 -T 1" ""; do
    rm -f new.vmdk
    # shellcheck disable=SC2086
    if serve file=new.vmdk create=true create-type=stream-optimized \
             create-size="$size" \
             --run "nbdcopy $mode disk.raw \"\$uri\"" 2> server.log; then
        pass "nbdcopy ${mode:-(default)}: into a new stream image"
    else
        fail "nbdcopy ${mode:-(default)}"; cat server.log; continue
    fi
    if [ -n "$mode" ]; then
        check_all "nbdcopy $mode" new.vmdk disk.raw -o
    else
        check_all "nbdcopy (default)" new.vmdk disk.raw
    fi
    echo "stream file: $(stat -c %s new.vmdk) bytes for $size"
done

# ---------------------------------------------------------------------
# 2. Appending to qemu-img's stream image.

truncate -s $((64 * M)) app.raw
write_random app.raw 0 $((4 * M))
write_random app.raw $((40 * M)) $((2 * M))
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized app.raw app.vmdk
# qemu-img writes the CID without leading zeroes: make it so here (the
# writer must give it 8 digits, as VMware writes it).
dd if=app.vmdk bs=512 skip=1 count=20 status=none | tr -d '\0' |
    sed 's/^CID=.*/CID=abcdef1/' > desc.txt
grep -qx 'CID=abcdef1' desc.txt
dd if=/dev/zero of=app.vmdk bs=512 seek=1 count=20 conv=notrunc status=none
dd if=desc.txt of=app.vmdk bs=512 seek=1 conv=notrunc status=none
ops=(-c "write -P 0x11 $((M + 3 * G)) $((2 * G))"        # rewrite 2 grains
     -c "write -P 0x22 $((2 * M + 512)) 1000"            # part of a grain
     -c "write -P 0x33 $((20 * M)) $((3 * G + 5))"       # new grains
     -c "write -P 0x44 $((64 * M - 512)) 512"            # the last sector
     -c "write -z $((40 * M)) $G")                       # zero a grain
qemu-io -f raw "${ops[@]}" app.raw > /dev/null
args=""
for o in "${ops[@]}"; do
    if [ "$o" != -c ]; then args+=" -c '$o'"; fi
done
if serve file=app.vmdk --run "qemu-io -f raw $args \"\$uri\" > /dev/null"
then
    pass "append: written over qemu-img's stream image"
else
    fail "append: writes failed"
fi
check_all "append" app.vmdk app.raw
check_image_consistent "append" app.vmdk

# ---------------------------------------------------------------------
# 3. A copy taken after a flush, while the server runs.

rm -f live.vmdk
truncate -s $((100 * M)) live.raw
serve file=live.vmdk create=true create-type=stream-optimized \
      create-size=100M --run true
start_server file="$scratch/live.vmdk"
"$nbd" "$uri" "w:0:$((3 * M)):17" "w:$((50 * M + 100)):$((M)):18" f
write_pattern live.raw 0 $((3 * M)) 17
write_pattern live.raw $((50 * M + 100)) $M 18
cp live.vmdk live-copy.vmdk
# More writes after the flush: the copy must not depend on them.
"$nbd" "$uri" "w:$((10 * M)):$((2 * M)):19" "w:$((G + 7)):100:20"
check_all "copy after a flush" live-copy.vmdk live.raw
stop_server
write_pattern live.raw $((10 * M)) $((2 * M)) 19
write_pattern live.raw $((G + 7)) 100 20
check_all "after a clean shutdown" live.vmdk live.raw

# ---------------------------------------------------------------------
# 4. kill -9 with unflushed writes after a flush.

rm -f crash.vmdk crash.raw
serve file=crash.vmdk create=true create-type=stream-optimized \
      create-size=200M --run true
start_server file="$scratch/crash.vmdk"
: > a.cmds
: > b.cmds
for (( g = 0; g < 400; g += 3 )); do
    echo "w:$((g * G)):$G:$(( g % 200 + 1 ))" >> a.cmds
    echo "?w:$(((g + 1) * G)):$G:$(( g % 200 + 2 ))" >> b.cmds
    echo "?w:$((g * G)):$G:250" >> b.cmds              # rewrites A
done
echo f >> a.cmds
if "$nbd" "$uri" - < a.cmds; then
    pass "crash: batch A written and flushed"
else
    fail "crash: batch A"
fi
"$nbd" "$uri" - < b.cmds > b.out 2>&1 &
client=$!
# Kill once some of batch B is stored (the tail is then gone).
for (( i = 0; i < 600; i++ )); do
    [ "$(grep -c ': ok' b.out || :)" -lt 40 ] || break
    sleep 0.1
done
stop_server KILL
wait $client || :
if [ "$(u8 crash.vmdk 72)" = 1 ]; then
    pass "crash: the header says the stream was not closed cleanly"
else
    fail "crash: uncleanShutdown is $(u8 crash.vmdk 72) after the kill"
fi
# Flushed data reads back; the unflushed grains read old or new.
: > v.cmds
for (( g = 0; g < 400; g += 3 )); do
    echo "oldnew:$((g * G)):$G:$G:$(( g % 200 + 1 )):250" >> v.cmds
    echo "oldnew:$(((g + 1) * G)):$G:$G:0:$(( g % 200 + 2 ))" >> v.cmds
    echo "r:$(((g + 2) * G)):$G:0" >> v.cmds
done
if serve file=crash.vmdk readonly=true \
         --run "'$nbd' \"\$uri\" - < v.cmds" 2> recover.log; then
    pass "crash: every flushed grain reads back, every other old or new"
else
    fail "crash: data after the kill"; cat recover.log
fi
if grep -q 'recovered [0-9]* grains' recover.log; then
    pass "crash: $(grep -o 'recovered [0-9]* grains[^(]*' recover.log)"
else
    fail "crash: no recovery reported"; cat recover.log
fi
# Then writes (including partial grains over recovered ones) and a
# clean shutdown make a complete stream again.
serve file=crash.vmdk readonly=true --run 'nbdcopy "$uri" crash.raw'
cmds=("w:$((5 * G + 10)):1000:99" "w:$((399 * G)):$G:98" f)
serve file=crash.vmdk --run "'$nbd' \"\$uri\" ${cmds[*]}"
write_pattern crash.raw $((5 * G + 10)) 1000 99
write_pattern crash.raw $((399 * G)) $G 98
check_all "crash, then written and closed" crash.vmdk crash.raw

# ---------------------------------------------------------------------
# 5. Zero and trim.

rm -f z.vmdk
truncate -s $((8 * M)) z.raw
write_random z.raw 0 $((8 * M))
serve file=z.vmdk create=true create-type=stream-optimized create-size=8M \
      --run 'nbdcopy z.raw "$uri"'
cmds=("z:0:$G" "z:$((2 * G)):$((3 * G)):trim" "t:$((6 * G)):$G"
      "!ENOTSUP:z:$((8 * G + 512)):4096:fast" "z:$((10 * G + 512)):4096"
      "map:0:$G:3" "map:$((2 * G)):$((3 * G)):3" f)
if serve file=z.vmdk --run "'$nbd' \"\$uri\" ${cmds[*]}"; then
    pass "zero, trim: whole grains unallocated, fast zero of part refused"
else
    fail "zero, trim"
fi
write_zeroes z.raw 0 $G
write_zeroes z.raw $((2 * G)) $((3 * G))
write_zeroes z.raw $((6 * G)) $G
write_zeroes z.raw $((10 * G + 512)) 4096
check_all "zero and trim" z.vmdk z.raw

# ---------------------------------------------------------------------
# 6. A full disk.  RLIMIT_FSIZE makes pwrite past it fail with EFBIG
# (SIGXFSZ ignored); 64 constant grains take 64 sectors, past the
# 4 KiB of room left.

rm -f full.vmdk
serve file=full.vmdk create=true create-type=stream-optimized create-size=8M \
      --run true
limit_kib=$(( $(stat -c %s full.vmdk) / 1024 + 4 ))
cmds=("?w:0:$((4 * M)):85" "!ENOSPC:f" "!EIO:r:0:$G:85" "!EIO:r:$((6 * M)):$G:0"
      "!EIO:map:0:$G:0")
if ( trap '' XFSZ; ulimit -f "$limit_kib"
     serve file=full.vmdk --run "'$nbd' \"\$uri\" ${cmds[*]}" ) 2> full.log
then
    pass "full disk: the flush fails, then reads and block status fail"
else
    fail "full disk"; cat full.log
fi
if serve file=full.vmdk readonly=true \
         --run "'$nbd' \"\$uri\" oldnew:0:$((4 * M)):$G:0:85 r:$((4 * M)):$((4 * M)):0" \
         2> full-reopen.log; then
    pass "full disk: reopened, every grain old or new"
else
    fail "full disk: reopened"; cat full-reopen.log
fi
vmdk check --repair full.vmdk > repair.out 2>&1 || :
if vmdk check full.vmdk > check.out 2>&1; then
    pass "full disk: clean after check --repair"
    check_stream "full disk, repaired" full.vmdk
else
    fail "full disk: check after repair"; cat repair.out check.out
fi

check_summary
