#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Crash consistency: a server killed with SIGKILL in the middle of
# writing leaves an image that is consistent, with everything that was
# flushed intact.
#
# For each of a few kill timings, on a fresh monolithicSparse image:
#   1. batch A: 200 whole-grain writes of known patterns to random
#      grains, then flush;
#   2. batch B: two clients writing about 1500 other patterns each to
#      random grains (some over batch A's grains, in place, most into
#      unallocated grains, so allocating), with a flush every 400
#      writes; the server is killed with SIGKILL while they write;
#   3. then: qemu-img check finds no errors (status 0, or 3 for leaked
#      grains only), every batch A grain not rewritten by B is intact,
#      every B write acknowledged before a flush that succeeded reads
#      back, every other B grain reads either its old or its new pattern (fresh
#      grains as a whole; in-place overwrites per 4 KiB page, since a
#      killed process can leave a write torn between pages, which NBD
#      allows for unflushed writes), QEMU and the plugin read the same
#      image;
#   4. the crashed image is reopened and written (batch C, flushed,
#      clean shutdown), and checks again.
#
# TEST_CRASH_SEED=N repeats a run.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img shuf od
requires_built test-write-nbd
nbd=$abs_builddir/test-write-nbd

make_scratch
cd "$scratch"

seed=${TEST_CRASH_SEED:-$RANDOM}
echo "$0: seed $seed (TEST_CRASH_SEED=$seed repeats this run)"
RANDOM=$seed

G=65536
NG=4096                         # 256 MiB

iteration=0
# Batch B takes about 0.4 s here: kill early, in the middle, late.
for delay in 0.02 0.08 0.15 0.25 0.$(( RANDOM % 4 ))$(( RANDOM % 10 )); do
    iteration=$((iteration + 1))
    what="kill after ${delay}s"
    rm -f img.vmdk ./*.cmds
    qemu-img create -q -f vmdk img.vmdk $((NG * G))

    # Patterns: old[g] is what grain g holds after batch A (0 if not
    # written), new[g] what batch B writes.  B grains are distinct.
    mapfile -t grains < <(shuf -i 0-$((NG - 1)) --random-source=<(
        yes "$seed.$iteration"))
    declare -A old=() new=()
    : > a.cmds
    for (( k = 0; k < 200; k++ )); do
        g=${grains[$k]}
        old[$g]=$(( 1 + k % 120 ))
        echo "w:$((g * G)):$G:${old[$g]}" >> a.cmds
    done
    echo f >> a.cmds
    # B: 100 of A's grains (in place), then 2900 fresh ones, split over
    # two clients; flushes on the way.
    : > b1.cmds; : > b2.cmds
    for (( k = 100; k < 3100; k++ )); do
        g=${grains[$k]}
        new[$g]=$(( 130 + k % 120 ))
        f=b$(( k % 2 + 1 )).cmds
        echo "?w:$((g * G)):$G:${new[$g]}" >> $f
        if (( k % 400 == 0 )); then echo "?f" >> $f; fi
    done

    start_server file="$scratch/img.vmdk"
    if "$nbd" "$uri" - < a.cmds; then
        pass "$what: batch A written and flushed"
    else
        fail "$what: batch A"
    fi
    "$nbd" "$uri" - < b1.cmds > b1.out 2>&1 &
    c1=$!
    "$nbd" "$uri" - < b2.cmds > b2.out 2>&1 &
    c2=$!
    sleep "$delay"
    stop_server KILL
    wait $c1 $c2 || :
    done_b=$(cat b1.out b2.out | grep -c failed || :)
    echo "$what: $done_b of 3000 batch B writes failed (not sent before the kill)"

    unclean=$(u8 img.vmdk 72)
    echo "$what: uncleanShutdown = $unclean"
    check_image_consistent "$what" img.vmdk

    # Checks through the plugin, read-only.
    : > v.cmds
    for g in "${!old[@]}"; do
        if [ -z "${new[$g]:-}" ]; then
            echo "r:$((g * G)):$G:${old[$g]}" >> v.cmds
        fi
    done
    # B writes acknowledged before a flush that succeeded are durable.
    declare -A durable=()
    for f in b1.out b2.out; do
        for g in $(awk -F: '/^\?f: ok/ { for (; n > 0; n--) print w[n] }
                            /^\?w:.*: ok/ { w[++n] = $2 / 65536 }' $f); do
            durable[$g]=1
        done
    done
    echo "$what: ${#durable[@]} batch B writes were flushed before the kill"
    for g in "${!new[@]}"; do
        if [ -n "${durable[$g]:-}" ]; then
            echo "r:$((g * G)):$G:${new[$g]}" >> v.cmds
        elif [ -n "${old[$g]:-}" ]; then
            echo "oldnew:$((g * G)):$G:4096:${old[$g]}:${new[$g]}" >> v.cmds
        else
            echo "oldnew:$((g * G)):$G:$G:0:${new[$g]}" >> v.cmds
        fi
    done
    if serve file=img.vmdk readonly=true \
            --run "'$nbd' \"\$uri\" - < v.cmds"; then
        pass "$what: batch A intact, each B grain old or new"
    else
        fail "$what: data after the crash"
    fi
    if serve file=img.vmdk readonly=true \
            --run 'qemu-img compare -q -f vmdk -F raw img.vmdk "$uri"'; then
        pass "$what: QEMU and the plugin read the same"
    else
        fail "$what: QEMU and the plugin read the crashed image differently"
    fi

    # Batch C on the crashed image, clean shutdown.
    : > c.cmds
    for (( k = 3100; k < 3150; k++ )); do
        echo "w:$((${grains[$k]} * G + 512)):1000:250" >> c.cmds
    done
    g=${grains[0]}
    echo "w:$((g * G)):$G:251" >> c.cmds
    echo f >> c.cmds
    for (( k = 3100; k < 3150; k++ )); do
        echo "r:$((${grains[$k]} * G + 512)):1000:250" >> c.cmds
        echo "r:$((${grains[$k]} * G)):512:0" >> c.cmds
    done
    start_server file="$scratch/img.vmdk"
    if "$nbd" "$uri" - < c.cmds; then
        pass "$what: the crashed image takes new writes"
    else
        fail "$what: writing to the crashed image"
    fi
    stop_server
    unclean=$(u8 img.vmdk 72)
    if [ "$unclean" = 0 ]; then
        pass "$what: uncleanShutdown is 0 after a clean shutdown"
    else
        fail "$what: uncleanShutdown is $unclean after a clean shutdown"
    fi
    check_image_consistent "$what, then batch C" img.vmdk
    if qemu-io -r -f vmdk -c "read -P 251 $((g * G)) $G" img.vmdk \
            | grep -q "read $G/$G"; then
        pass "$what: QEMU reads batch C"
    else
        fail "$what: QEMU does not read batch C"
    fi
    unset old new durable
done

check_summary "seed $seed"
