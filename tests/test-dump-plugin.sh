#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The plugin's face to nbdkit: --dump-plugin (standard fields and our
# vmdk_* feature lines, which other tests and users can check), --help
# (config help), and the command line (unknown and repeated parameters
# are refused, gt-cache= is validated, the magic key works).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds nbdkit nbdinfo qemu-img
requires qemu-img --version

make_scratch
cd "$scratch"
plugin="$VMDK_PLUGIN"

nbdkit "$plugin" --dump-plugin > dump
cat dump

# Standard nbdkit fields.
grep -qx "path=$plugin" dump
grep -qx 'name=vmdk' dump
grep -qx 'api_version=2' dump
grep -qx 'magic_config_key=file' dump
grep -qx 'thread_model=parallel' dump
grep -qx 'max_thread_model=parallel' dump
grep -qx 'errno_is_preserved=1' dump
grep -qx 'has_pread=1' dump
grep -qx 'has_extents=1' dump
grep -qx 'has_get_ready=1' dump
grep -qx 'has_dump_plugin=1' dump
grep -qx 'has_config_help=1' dump
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' \
              "$abs_top_builddir/config.h")
grep -qx "version=$version" dump

# Our feature lines.
subformats=$(sed -n 's/^vmdk_subformats=//p' dump)
for sf in monolithicSparse monolithicFlat twoGbMaxExtentSparse \
          twoGbMaxExtentFlat streamOptimized vmfs custom; do
    [[ ",$subformats," == *",$sf,"* ]]
done
types=$(sed -n 's/^vmdk_extent_types=//p' dump)
for t in SPARSE FLAT VMFS ZERO; do
    [[ ",$types," == *",$t,"* ]]
done
# The create types, with nbdkit-vddk's names.
grep -qx 'vmdk_create=yes' dump
create_types=$(sed -n 's/^vmdk_create_types=//p' dump)
for t in monolithic-sparse monolithic-flat split-sparse split-flat \
         vmfs-flat vmfs-thin vmfs-sparse stream-optimized; do
    [[ ",$create_types," == *",$t,"* ]]
done
write=$(sed -n 's/^vmdk_write=//p' dump)
case "$write" in
    no)  not grep -q '^has_pwrite=' dump ;;
    yes) grep -qx 'has_pwrite=1' dump ;;
    *)   echo "$0: vmdk_write=$write" >&2; exit 1 ;;
esac
# Every plugin-specific line is vmdk_<feature>=<value>.
sed -n '/^has_extents=1$/,$p' dump | sed 1d | grep -v '^has_' |
    while read -r line; do
        [[ $line =~ ^vmdk_[a-z0-9_]+=.+$ ]]
    done

# --help includes our config help.
nbdkit "$plugin" --help > help
grep -qF '[file=]<FILENAME>' help
grep -q 'gt-cache=<SIZE>' help
grep -q 'allow-dir=<DIR>' help
grep -q 'allow-devices=true' help
grep -q 'create-size=<SIZE>' help
grep -q 'create-parent=<FILE>' help

# The command line.
qemu-img create -q -f vmdk d.vmdk 1M
cp d.vmdk e.vmdk

# expect_reject SUBSTRING ARGS...: nbdkit refuses to start.
expect_reject ()
{
    local pattern="$1" st=0
    shift
    nbdkit -U - "$plugin" "$@" --run 'exit 0' > err 2>&1 || st=$?
    cat err
    check_no_crash "$st" err
    test "$st" -ne 0
    grep -qF -- "$pattern" err
}

expect_reject "unknown parameter 'foo'" d.vmdk foo=bar
expect_reject "unknown parameter 'File'" d.vmdk File=d.vmdk
expect_reject "file parameter given more than once" file=d.vmdk file=e.vmdk
expect_reject "file parameter given more than once" d.vmdk e.vmdk
expect_reject "file parameter given more than once" d.vmdk file=d.vmdk
expect_reject "gt-cache parameter given more than once" \
              d.vmdk gt-cache=1M gt-cache=2M
expect_reject "too small" d.vmdk gt-cache=1k
expect_reject "could not parse size string (lots)" d.vmdk gt-cache=lots
expect_reject "you must supply the file=<FILENAME> parameter"
expect_reject "you must supply the file=<FILENAME> parameter" gt-cache=1M

# And what is accepted: magic key, explicit key, sizes with suffixes.
test "$(nbdinfo --size -- [ nbdkit "$plugin" d.vmdk ])" -eq 1048576
test "$(nbdinfo --size -- [ nbdkit "$plugin" file=d.vmdk gt-cache=64k ])" \
     -eq 1048576
test "$(nbdinfo --size -- [ nbdkit "$plugin" gt-cache=1G file=d.vmdk ])" \
     -eq 1048576
