#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Build nbdkit-vmdk in the source tree:
#
#   scripts/build.sh [CONFIGURE-ARGS...]
#
# runs autoreconf -fi when ./configure is missing or older than
# configure.ac, ./configure --enable-werror CONFIGURE-ARGS when there is
# no Makefile yet, then make -j$(nproc) (override with VMDK_JOBS=N).
#
# The other scripts source this file for its functions:
#   vmdk_jobs, vmdk_test_jobs            make -j for builds and for tests
#   vmdk_build DIR [CONFIGURE-ARGS...]   the same, in the tree DIR
#   vmdk_configure DIR [CONFIGURE-ARGS...]  only the first two steps
#   vmdk_mirror SRC DEST                 copy the sources of SRC to DEST

set -euo pipefail

vmdk_srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

vmdk_jobs ()
{
  echo "${VMDK_JOBS:-$(nproc)}"
}

# Tests run one more at a time than there are cores: they spend part of
# their time waiting for fsync, servers starting and sockets, so on 2
# cores -j3 took make check from 272 s to 239 s (override with
# VMDK_TEST_JOBS=N).
vmdk_test_jobs ()
{
  echo "${VMDK_TEST_JOBS:-$(( $(nproc) + 1 ))}"
}

# vmdk_configure DIR [CONFIGURE-ARGS...]: autoreconf (when needed) and
# configure the tree DIR in place, unless it has a Makefile already.
# Returns non-zero if any step fails.
vmdk_configure ()
{
  local dir=$1
  shift
  (
    set -euo pipefail
    cd "$dir"
    if [ ! -x configure ] || [ configure.ac -nt configure ]; then
      echo "build.sh: $dir: autoreconf -fi"
      autoreconf -fi
    fi
    if [ ! -f Makefile ]; then
      echo "build.sh: $dir: ./configure --enable-werror $*"
      ./configure --enable-werror "$@"
    fi
  )
}

# vmdk_build DIR [CONFIGURE-ARGS...]: configure and build the tree DIR.
# Returns non-zero if any step fails.
vmdk_build ()
{
  local dir=$1
  vmdk_configure "$@" || return
  echo "build.sh: $dir: make -j$(vmdk_jobs)"
  make -C "$dir" -j"$(vmdk_jobs)"
}

vmdk_configured_with ()
{
  [ -x "$1/config.status" ] &&
    "$1/config.status" --config | grep -q -- "$2"
}

# vmdk_mirror SRC DEST: copy the source files of SRC (not its build
# products) into DEST, keeping timestamps, so that DEST can be built with
# different options.  A second build cannot be a VPATH build of SRC once
# SRC is configured in place: automake's configure refuses that ("source
# directory already configured").  Files already in DEST that are
# unchanged keep their timestamps, so rebuilds are incremental.
vmdk_mirror ()
{
  local src=$1 dest=$2
  mkdir -p "$dest"
  if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked files, minus what .gitignore excludes (build
    # products, build-*/), minus tracked files deleted in the work tree.
    (
      cd "$src"
      git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done |
        tar --null -T - -cf -
    ) | tar -xf - -C "$dest"
  else
    # Not a git checkout (a release tarball): copy all, then clean.
    (cd "$src" && tar --exclude='./build-*' --exclude=./.git -cf - .) |
      tar -xf - -C "$dest"
    if [ -f "$dest/Makefile" ]; then
      make -C "$dest" distclean >/dev/null
    fi
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  vmdk_build "$vmdk_srcdir" "$@"
fi
