# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Helpers shared by the benchmark scripts (bench.sh, bench-tool.sh),
# sourced by them.  to_bytes calls the script's own die.

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
