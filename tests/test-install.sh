#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# "make install DESTDIR=..." installs exactly the plugin, as
# nbdkit-vmdk-plugin.so in nbdkit's plugin directory (so that
# "nbdkit vmdk file=..." finds it), and the filter, as
# nbdkit-vmdk-filter.so in nbdkit's filter directory (so that
# "--filter=vmdk" finds it), with no libtool .la next to them, the vmdk
# command in bindir, and their man pages; the installed plugin and
# filter load and serve; "make uninstall" removes it all again; and the
# POD sources are clean.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_plugin
requires_cmds make nbdkit nbdinfo pkg-config podchecker qemu-img
requires pkg-config --exists nbdkit
requires test -f "$abs_top_builddir/plugin/Makefile"

make_scratch
destdir="$scratch/destdir"
mkdir "$destdir"

# The PODs: no errors and no warnings.
for pod in "$abs_srcdir/../plugin/nbdkit-vmdk-plugin.pod" \
           "$abs_srcdir/../filter/nbdkit-vmdk-filter.pod" \
           "$abs_srcdir/../tool/vmdk.pod"; do
    podchecker -warnings -warnings "$pod" > "$scratch/pod.out" 2>&1 || {
        cat "$scratch/pod.out"
        exit 1
    }
    cat "$scratch/pod.out"
    not grep -E 'WARNING|ERROR' "$scratch/pod.out"
done

# Run make in the build tree, isolated from the "make check" that runs
# this test (its MAKEFLAGS would carry TESTS= and the jobserver).
submake ()
{
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u TESTS \
        make -C "$abs_top_builddir" "$@" DESTDIR="$destdir"
}

submake install > "$scratch/install.log" 2>&1 || {
    cat "$scratch/install.log"
    exit 1
}
(cd "$destdir" && find . ! -type d | sort) > "$scratch/installed"
cat "$scratch/installed"

# installed_dir KIND: where the KIND (plugin, filter) should be:
# nbdkit's KINDdir, unless configure was given --with-KINDdir (as
# distcheck does); ask make for that value.
installed_dir ()
{
    local dir configured
    dir=$(pkg-config --variable="$1dir" nbdkit)
    configured=$(printf 'print-dir:\n\t@echo $(%sdir)\n' "$1" |
                 env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
                     make -s -C "$abs_top_builddir/$1" -f Makefile -f - \
                     print-dir)
    if [ "$configured" != "$dir" ]; then
        echo "$0: configured $1dir $configured (pkg-config: $dir)" >&2
        dir="$configured"
    fi
    echo "$dir"
}
so="$destdir$(installed_dir plugin)/nbdkit-vmdk-plugin.so"
filter_so="$destdir$(installed_dir filter)/nbdkit-vmdk-filter.so"
test -f "$so"
test ! -L "$so"
test -f "$filter_so"
test ! -L "$filter_so"

# No libtool archive, nor anything of lib/ (a convenience library).
not grep -E '\.la$|\.a$|libvmdk' "$scratch/installed"

# check_man_page NAME TEXT: NAME.1 is installed in man1, titled NAME,
# and (when man is there) renders with TEXT in it.
check_man_page ()
{
    local page
    page=$(grep "/man1/$1\\.1\$" "$scratch/installed")
    test -n "$page"
    grep -m1 '^\.TH ' "$destdir/$page" | grep -qiE "^\\.TH \"?$1\"? 1 "
    if command -v man >/dev/null 2>&1; then
        MANWIDTH=80 man -l "$destdir/$page" > "$scratch/man.txt" 2>/dev/null
        grep -q "$2" "$scratch/man.txt"
    fi
}

# The plugin's and the filter's man pages.
check_man_page nbdkit-vmdk-plugin nbdkit-vmdk-plugin
check_man_page nbdkit-vmdk-filter nbdkit-vmdk-filter

# The vmdk command, to bindir.
bindir=$(printf 'print-bindir:\n\t@echo $(bindir)\n' |
         env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
             make -s -C "$abs_top_builddir/tool" -f Makefile -f - print-bindir)
grep -qx "\.$bindir/vmdk" "$scratch/installed"
test -x "$destdir$bindir/vmdk"
"$destdir$bindir/vmdk" --version | grep -q '^vmdk (nbdkit-vmdk) '

# Its man page.
check_man_page vmdk 'vmdk resize IMAGE SIZE'

# Exactly these files: the plugin, the filter, the command and their
# man pages.
test "$(wc -l < "$scratch/installed")" -eq 6

# The installed plugin loads and serves.
nbdkit "$so" --dump-plugin > "$scratch/dump"
grep -qx 'name=vmdk' "$scratch/dump"
qemu-img create -q -f vmdk "$scratch/d.vmdk" 1M
test "$(nbdinfo --size -- [ nbdkit "$so" "$scratch/d.vmdk" ])" -eq 1048576
test "$(nbdinfo --size -- [ nbdkit --filter="$filter_so" file \
                                   "$scratch/d.vmdk" ])" -eq 1048576

# Uninstall leaves nothing behind.
submake uninstall > "$scratch/uninstall.log" 2>&1 || {
    cat "$scratch/uninstall.log"
    exit 1
}
test -z "$(cd "$destdir" && find . ! -type d)"
