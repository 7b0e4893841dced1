#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Relative paths under a daemonized nbdkit.  A daemonized nbdkit
# chdir("/")s after get_ready, and "--run" or "-f" would hide a plugin
# that resolves names against the working directory, so this test
# starts a real daemon (start_nbdkit) from another directory, with a
# relative file= and descriptors whose extent names are relative
# (including a subdirectory), then reads through the socket.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo nbdcopy qemu-img jq fallocate
requires qemu-img --version

make_scratch big
requires_free_space "$scratch" 512
cd "$scratch"
plugin="$VMDK_PLUGIN"
mkdir -p img/parts elsewhere/deeper

# 1. twoGbMaxExtentSparse: two extent files, named relatively.
size=$(( 2 * 1024 * 1024 * 1024 + 1024 * 1024 + 512 ))
make_reference two.raw "$size"
qemu-img convert -f raw -O vmdk -o subformat=twoGbMaxExtentSparse \
         two.raw img/two.vmdk
grep -a '^RW .* "two-s002.vmdk"' img/two.vmdk

# 2. A hand-written "custom" descriptor mixing a SPARSE extent and FLAT
#    and ZERO extents, the files in a subdirectory.
mib=$(( 1024 * 1024 ))
make_reference a.raw $(( 3 * mib ))
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse \
         a.raw img/parts/a.vmdk
make_reference img/parts/b.raw $(( 4 * mib ))
cat > img/custom.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="custom"

# Extent description
RW $(( 3 * mib / 512 )) SPARSE "parts/a.vmdk"
RW $(( 2 * mib / 512 )) FLAT "parts/b.raw" $(( 2 * mib / 512 ))
RW $(( 1 * mib / 512 )) ZERO
RDONLY $(( 1 * mib / 512 )) FLAT "./parts/b.raw" 0
EOF
{
    cat a.raw
    dd if=img/parts/b.raw bs=1M skip=2 count=2 status=none
    head -c "$mib" /dev/zero
    dd if=img/parts/b.raw bs=1M count=1 status=none
} > custom.raw

check_daemon ()
{
    local name="$1" file="$2" ref="$3" pid

    # Started from elsewhere/deeper with a path relative to it.
    cd elsewhere/deeper
    start_nbdkit -P "$scratch/$name.pid" -U "$scratch/$name.sock" \
                 "$plugin" file="$file"
    cd "$scratch"
    pid=$(cat "$name.pid")
    # It really is a daemon that has left our working directory.
    test "$(readlink "/proc/$pid/cwd")" = /

    uri="nbd+unix:///?socket=$scratch/$name.sock"
    test "$(nbdinfo --size "$uri")" -eq "$(stat -c %s "$ref")"
    rm -f out.raw
    nbdcopy "$uri" out.raw
    compare_raw "$ref" out.raw
    rm -f out.raw
    nbdcopy --no-extents "$uri" out.raw
    compare_raw "$ref" out.raw
    # Block status goes to the extent files too (SEEK_DATA for FLAT).
    nbdinfo --map "$uri" | normalize_map > "$name.map"
    cat "$name.map"
    check_zero_ranges "$name.map" "$ref"
    rm -f out.raw

    kill_nbdkit "$name.pid"
}

check_daemon two ../../img/two.vmdk two.raw
check_daemon custom ../../img/custom.vmdk custom.raw
# Symlinked directory components and "." / ".." in file= itself.
ln -s ../img elsewhere/link
check_daemon custom-link ../link/./custom.vmdk custom.raw
