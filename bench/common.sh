# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)
# shellcheck shell=bash

# What the benchmarks share (sourced by bench.sh, bench-filter.sh and
# bench-tool.sh): usage and errors, the data generators, sizes and medians.

# usage [STATUS]: the synopsis line of the script's header ("#   " + the
# script's name), then exit.
usage ()
{
  sed -n 's/^#   //p' "$0" | head -n1 | sed 's/^/usage: /'
  exit "${1:-0}"
}

die ()
{
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# Data generators: BYTES bytes on stdout.

# Random bytes, fast.
random_bytes ()                 # random_bytes BYTES
{
  # head closes the pipe early: that is not a failure here.
  if command -v openssl >/dev/null; then
    ( set +o pipefail
      openssl enc -aes-128-ctr -nosalt -pbkdf2 \
        -pass pass:"nbdkit-vmdk-bench-$RANDOM$RANDOM" </dev/zero 2>/dev/null |
        head -c "$1" )
  else
    head -c "$1" /dev/urandom
  fi
}

# Moderately compressible bytes: every 4 KiB block is 1536 random bytes
# and 2560 bytes of a text line naming the block, repeated.  zlib packs
# a 64 KiB grain of it to about 40%.
compressible_bytes ()           # compressible_bytes BYTES
{
  python3 - "$1" <<'EOF'
import os, sys
total = int(sys.argv[1])
out = sys.stdout.buffer
block = 0
left = total
while left > 0:
    blocks = min(256, (left + 4095) // 4096)
    rnd = os.urandom(1536 * blocks)
    parts = []
    for i in range(blocks):
        line = b"%010d nbdkit-vmdk benchmark: moderately compressible text\n" % block
        parts.append(rnd[i * 1536:(i + 1) * 1536])
        parts.append((line * (2560 // len(line) + 1))[:2560])
        block += 1
    chunk = b"".join(parts)[:left]
    out.write(chunk)
    left -= len(chunk)
EOF
}

# SIZE -> bytes (K, M, G, T suffixes, powers of 1024).
to_bytes ()
{
  local n=${1%[KkMmGgTt]} s=${1: -1}
  [[ $n =~ ^[0-9]+$ ]] || die "bad size $1"
  case "$s" in
    K|k) echo $((n << 10)) ;;
    M|m) echo $((n << 20)) ;;
    G|g) echo $((n << 30)) ;;
    T|t) echo $((n << 40)) ;;
    *) echo "$1" ;;
  esac
}

median ()                       # median NUMBERS...
{
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "-"; exit }
      if (NR % 2) m = v[(NR + 1) / 2]
      else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m
    }'
}
