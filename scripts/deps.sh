#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Install whatever is missing to build and test nbdkit-vmdk on Debian 12.
# Idempotent and silent when everything is already installed.  Run as
# root (as CI does); otherwise sudo is used for apt-get.

set -euo pipefail

packages=(
  # Build.
  gcc make autoconf automake libtool pkg-config perl
  nbdkit nbdkit-plugin-dev zlib1g-dev libdeflate-dev
  # Tests and tools.
  libnbd-bin libnbd-dev qemu-utils fio valgrind clang jq procps
  # The filter's test over curl: an HTTP server that honours Range.
  lighttpd
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [ "$status" != installed ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps.sh: installing missing packages: ${missing[*]}" >&2

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "deps.sh: not root and sudo is not available: install as root:" >&2
    echo "  apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
