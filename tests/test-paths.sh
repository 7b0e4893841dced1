#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# What extent and parent names may open, and the parameters that widen
# it: allow-dir=DIR (names leaving the image's directory may resolve
# beneath DIR) and allow-devices=true (block devices may back extents).
# The default refusals themselves are cases of test-malformed-paths.sh;
# here each opt-in is checked both ways: refused without it, served
# byte-identical with it, and never a step further than it allows.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img qemu-io timeout

make_scratch
cd "$scratch"
plugin="$VMDK_PLUGIN"
failures=()

# refused NAME PATTERN ARGS...: nbdkit must stop at startup within 20 s
# with PATTERN (fixed string) in its messages, without crashing.
refused ()
{
    local name="$1" pattern="$2" st=0
    shift 2
    timeout 20 nbdkit -U - "$plugin" "$@" --run 'exit 0' >"$name.log" 2>&1 ||
        st=$?
    cat "$name.log"
    if ! check_no_crash "$st" "$name.log"; then
        failures+=("$name: crashed (status $st)")
    elif [ "$st" -eq 124 ]; then
        failures+=("$name: hung at startup")
    elif [ "$st" -eq 0 ]; then
        failures+=("$name: accepted, expected a refusal: $pattern")
    elif ! grep -qF -- "$pattern" "$name.log"; then
        failures+=("$name: message lacks \"$pattern\"")
    fi
}

# served NAME EXPECTED-RAW ARGS...: the plugin serves exactly
# EXPECTED-RAW (and, with readonly=true, still does).
served ()
{
    local name="$1" expected="$2" mode
    shift 2
    for mode in readonly=false readonly=true; do
        rm -f "$name.raw"
        if ! nbdkit -U - "$plugin" "$@" "$mode" \
               --run "nbdcopy \"\$uri\" $name.raw" >"$name.log" 2>&1; then
            cat "$name.log"
            failures+=("$name ($mode): not served")
        elif ! cmp "$expected" "$name.raw"; then
            failures+=("$name ($mode): contents differ from $expected")
        fi
    done
}

mkdir img store other secret
printf 'TOP SECRET host file\n%.0s' {1..64} > secret/secret.txt
head -c 1M /dev/urandom > store/x.raw
ln -s ../secret/secret.txt store/escape.raw     # escapes store/

# --- allow-dir: absolute names and ".." ------------------------------

desc img/abs.vmdk monolithicFlat "RW 2048 FLAT \"$scratch/store/x.raw\" 0"
desc img/dotdot.vmdk monolithicFlat 'RW 2048 FLAT "../store/x.raw" 0'
refused abs-default "refusing a file outside" file=img/abs.vmdk
refused dotdot-default "refusing a file outside" file=img/dotdot.vmdk
served abs-allowed store/x.raw file=img/abs.vmdk allow-dir=store
served dotdot-allowed store/x.raw file=img/dotdot.vmdk allow-dir="$scratch/store"
# Several allow-dir: the one that contains the name is used.
served two-allowed store/x.raw file=img/dotdot.vmdk allow-dir=other \
       allow-dir=store
# Another allowed directory does not allow this one.
refused wrong-dir "outside $scratch/img and the allowed directories" \
        file=img/dotdot.vmdk allow-dir=other
# A symlink inside an allowed directory may not leave it, and the
# secret never reaches the client.
desc img/escape.vmdk monolithicFlat 'RW 1 FLAT "../store/escape.raw" 0'
refused symlink-escapes-allowed "refusing a file outside" \
        file=img/escape.vmdk allow-dir=store
if grep -q "TOP SECRET" ./*.log ./*.raw; then
    failures+=("the secret file leaked into a log")
fi
# ".." inside the allowed directory cannot climb out of it either.
desc img/climb.vmdk monolithicFlat 'RW 1 FLAT "../store/../secret/secret.txt" 0'
refused dotdot-through-allowed "refusing a file outside" \
        file=img/climb.vmdk allow-dir=store
refused allow-dir-missing "does-not-exist: No such file or directory" \
        file=img/abs.vmdk allow-dir=does-not-exist

# --- allow-dir: a parent elsewhere (qemu-img writes absolute names) ---

qemu-img create -q -f vmdk store/base.vmdk 4M
qemu-io -f vmdk -c 'write -P 0x17 0 1M' -c 'write -P 0x18 3M 512' \
        store/base.vmdk >/dev/null
qemu-img create -q -f vmdk -b "$scratch/store/base.vmdk" -F vmdk \
         img/child.vmdk
qemu-io -f vmdk -c 'write -P 0x29 512k 1M' img/child.vmdk >/dev/null
qemu-img convert -f vmdk -O raw img/child.vmdk child.expected
refused parent-default "refusing a directory outside" file=img/child.vmdk
served parent-allowed child.expected file=img/child.vmdk allow-dir=store

# --- Files that are not regular: never opened, never waited for -------

mkfifo img/fifo
desc img/fifo.vmdk monolithicFlat 'RW 1 FLAT "fifo" 0'
refused fifo "fifo: not a regular file" file=img/fifo.vmdk
refused fifo-readonly "fifo: not a regular file" file=img/fifo.vmdk \
        readonly=true
desc img/chardev.vmdk monolithicFlat 'RW 1 FLAT "/dev/zero" 0'
refused chardev "refusing a file outside" file=img/chardev.vmdk
refused chardev-allowed "/dev/zero: not a regular file" \
        file=img/chardev.vmdk allow-dir=/dev allow-devices=true

# --- allow-devices: a loop device as a FLAT extent --------------------

dev=
if [ "$(id -u)" -eq 0 ] && command -v losetup >/dev/null; then
    truncate -s 8M disk.img
    head -c 4M /dev/urandom | dd of=disk.img conv=notrunc status=none
    dev=$(losetup -f --show disk.img 2>/dev/null) || dev=
fi
if [ -n "$dev" ]; then
    cleanup_fn losetup -d "$dev"
    desc img/full.vmdk fullDevice "RW 16384 FLAT \"$dev\" 0"
    refused fulldevice-default \
            'createType="fullDevice" is not supported without allow-devices=true' \
            file=img/full.vmdk
    refused fulldevice-devices-false \
            'createType="fullDevice" is not supported without allow-devices=true' \
            file=img/full.vmdk allow-dir=/dev allow-devices=false
    desc img/flatdev.vmdk monolithicFlat "RW 16384 FLAT \"$dev\" 0"
    refused device-dir-only "is a block device (refused unless devices are allowed" \
            file=img/flatdev.vmdk allow-dir=/dev
    refused device-no-dir "refusing a file outside" file=img/flatdev.vmdk \
            allow-devices=true
    served device-allowed disk.img file=img/full.vmdk allow-dir=/dev \
           allow-devices=true

    # partitionedDevice: a partition-like slice of the device, then a
    # ZERO extent.  A write lands at the slice's offset on the device.
    desc img/part.vmdk partitionedDevice "RW 2048 FLAT \"$dev\" 4096" \
         'RW 2048 ZERO'
    dd if=disk.img bs=512 skip=4096 count=2048 status=none > part.expected
    head -c 1M /dev/zero >> part.expected
    served partitioned part.expected file=img/part.vmdk allow-dir=/dev \
           allow-devices=true
    if ! nbdkit -U - "$plugin" file=img/part.vmdk allow-dir=/dev \
           allow-devices=true \
           --run 'qemu-io -f raw -c "write -P 0x5a 4096 8192" -c flush "$uri"' \
           > part-write.log 2>&1; then
        cat part-write.log
        failures+=("partitioned: write failed")
    else
        head -c 8192 /dev/zero | tr '\0' Z > part-write.expected  # 0x5a
        dd if="$dev" bs=512 skip=$((4096 + 8)) count=16 status=none \
           > part-write.got
        cmp part-write.expected part-write.got ||
            failures+=("partitioned: the write did not land at sector 4104")
    fi
else
    echo "$0: no loop device (not root, or no losetup): device cases skipped"
fi

set +x
if [ ${#failures[@]} -gt 0 ]; then
    echo "$0: ${#failures[@]} case(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
echo "$0: all cases passed"
