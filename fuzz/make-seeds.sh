#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Generate the seed corpora of the fuzz targets:
#
#   make-seeds.sh OUTDIR
#
# writes OUTDIR/fuzz-image/, OUTDIR/fuzz-header/, OUTDIR/fuzz-descriptor/
# (OUTDIR is emptied first).  Seeds are generated at build time and
# never committed.  Sources, each skipped with a note if unavailable:
#
#   1. craft-seeds.py (python3): tiny hand-made images of every kind;
#   2. qemu-img: monolithicSparse, streamOptimized, zeroed grains, flat
#      and split images, a backing chain;
#   3. the real-world files in $VMDK_CORPUS (default ../shared/corpus
#      next to the source tree), copied at run time: their licences
#      differ, so they must never be committed here.
#
# Multi-file images (a descriptor and its extents, a child and its
# parent) are bundled into one input with "#%FILE name" marker lines,
# the format fuzz-image.c splits.  fuzz-image seeds are cut to
# FUZZ_SEED_MAX bytes (512 KiB, the -max_len of check-fuzz.sh).

set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 1
fi
out=$1
srcdir=${FUZZ_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
corpus=${VMDK_CORPUS:-$srcdir/../../shared/corpus}
max=${FUZZ_SEED_MAX:-524288}

rm -rf "$out"
mkdir -p "$out/fuzz-image" "$out/fuzz-header" "$out/fuzz-descriptor" \
         "$out/fuzz-check"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# add_image NAME FILE: an image seed (cut to $max bytes), plus its first
# sector as a header seed and, if it is text, a descriptor seed.
add_image ()
{
  local name=$1 file=$2
  head -c "$max" "$file" > "$out/fuzz-image/$name"
  add_header "$name" "$file"
  if is_text "$file"; then
    head -c 65536 "$file" > "$out/fuzz-descriptor/$name"
  fi
}

# is_text FILE: does FILE start like a text descriptor?
is_text ()
{
  [ "$(head -c 6 "$1" | tr -d '\0')" = "# Disk" ]
}

# magic FILE: the first 4 bytes of FILE, NULs dropped.
magic ()
{
  head -c 4 "$1" | tr -d '\0'
}

# add_header NAME FILE: the first sector of FILE if it has a magic we
# know, and the embedded descriptor of a KDMV file (at sector 1).
add_header ()
{
  local name=$1 file=$2 m
  m=$(magic "$file")
  case $m in
    $'\xbe\xba\xfe\xca')      # seSparse: constant and volatile header
      head -c 1024 "$file" > "$out/fuzz-header/$name"
      ;;
    KDMV|COWD)
      head -c 512 "$file" > "$out/fuzz-header/$name"
      if [ "$m" = KDMV ]; then
        dd if="$file" bs=512 skip=1 count=20 status=none |
          tr -d '\0' > "$tmp/desc"
        if is_text "$tmp/desc"; then
          cp "$tmp/desc" "$out/fuzz-descriptor/$name"
        fi
      fi
      ;;
  esac
}

# bundle NAME MAIN [FILE...]: MAIN then each FILE behind a marker line
# naming it by its base name.
bundle ()
{
  local name=$1 main=$2 f
  shift 2
  {
    cat "$main"
    for f in "$@"; do
      printf '\n#%%FILE %s\n' "$(basename "$f")"
      cat "$f"
    done
  } > "$tmp/bundle"
  add_image "$name" "$tmp/bundle"
  if is_text "$main"; then
    cp "$main" "$out/fuzz-descriptor/$name"
  fi
  for f in "$@"; do
    add_header "$name-$(basename "$f")" "$f"
  done
}

# 1. Crafted seeds.
if command -v python3 >/dev/null 2>&1; then
  python3 "$srcdir/craft-seeds.py" "$out"
else
  echo "make-seeds.sh: python3 not found: no crafted seeds" >&2
fi

# 2. qemu-img seeds.
if command -v qemu-img >/dev/null 2>&1; then
  q=$tmp/qemu
  mkdir -p "$q"
  # 1 MiB of raw data: text in some grains, zeroes in others, so that
  # the images have allocated, unallocated and (with zeroed_grain)
  # zeroed grains.
  raw=$q/raw
  truncate -s 1M "$raw"
  for off in 0 3 4 9 15; do
    head -c 65536 < <(yes "nbdkit-vmdk fuzz seed grain $off") |
      dd of="$raw" bs=65536 seek="$off" conv=notrunc status=none
  done
  qimg ()
  {
    qemu-img "$@" >/dev/null 2>&1
  }
  qio ()
  {
    command -v qemu-io >/dev/null 2>&1 && qemu-io "$@" >/dev/null 2>&1
  }
  for sub in monolithicSparse streamOptimized; do
    if qimg convert -f raw -O vmdk -o subformat=$sub "$raw" "$q/$sub.vmdk"
    then
      add_image "qemu-$sub" "$q/$sub.vmdk"
    fi
  done
  # Zeroed grains (GTE 1): zero writes of whole grains on an image
  # created with zeroed_grain=on.
  if (cd "$q" &&
      qimg create -f vmdk -o subformat=monolithicSparse,zeroed_grain=on \
        zg.vmdk 1M &&
      qio -f vmdk -c "write -P 0x55 0 64k" -c "write -P 0x66 256k 64k" \
        -c "write -z 64k 128k" -c "write -z 256k 64k" zg.vmdk); then
    add_image qemu-zeroed-grain-written "$q/zg.vmdk"
  fi
  for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    d=$q/$sub
    mkdir -p "$d"
    if (cd "$d" && qimg convert -f raw -O vmdk -o subformat=$sub "$raw" \
          img.vmdk); then
      mapfile -t extents < <(find "$d" -type f ! -name img.vmdk | sort)
      bundle "qemu-$sub" "$d/img.vmdk" "${extents[@]}"
    fi
  done
  # A backing chain: base, then a child naming it by a relative name.
  d=$q/chain
  mkdir -p "$d"
  if (cd "$d" &&
      qimg convert -f raw -O vmdk "$raw" base.vmdk &&
      qimg create -f vmdk -b base.vmdk -F vmdk child.vmdk &&
      qio -f vmdk -c "write -P 0xaa 128k 64k" child.vmdk); then
    bundle qemu-chain "$d/child.vmdk" "$d/base.vmdk"
  fi
else
  echo "make-seeds.sh: qemu-img not found: no qemu-img seeds" >&2
fi

# 3. Real-world files, if present (never committed: see above).
if [ -d "$corpus" ]; then
  for dir in "$corpus"/*/; do
    [ -d "$dir" ] || continue
    set_name=$(basename "$dir")
    mapfile -t files < <(find "$dir" -maxdepth 1 -type f \
                           \( -name '*.vmdk' -o -name '*.img' \) | sort)
    [ ${#files[@]} -gt 0 ] || continue
    descs=() others=()
    for f in "${files[@]}"; do
      if is_text "$f"; then
        descs+=("$f")
      else
        others+=("$f")
      fi
    done
    # Binary files stand alone if they are VMDK files (not raw extents
    # of a descriptor).
    for f in "${others[@]}"; do
      case $(magic "$f") in
        KDMV|COWD) add_image "corpus-$set_name-$(basename "$f")" "$f" ;;
        *) [ ${#descs[@]} -gt 0 ] ||
             add_image "corpus-$set_name-$(basename "$f")" "$f" ;;
      esac
    done
    # Descriptors come with every other file of their directory (cut
    # to 256 KiB each, so that big flat extents do not dominate).
    for f in "${descs[@]}"; do
      rest=()
      for g in "${files[@]}"; do
        if [ "$g" != "$f" ]; then
          head -c 262144 "$g" > "$tmp/$(basename "$g")"
          rest+=("$tmp/$(basename "$g")")
        fi
      done
      bundle "corpus-$set_name-$(basename "$f")" "$f" "${rest[@]}"
      for g in "${rest[@]}"; do rm -f "$g"; done
    done
    # Compressed extents (the seSparse sample is gzipped): its metadata
    # alone is 6 MiB, too big for an image seed; keep its header.
    for f in "$dir"*.vmdk.gz; do
      [ -f "$f" ] || continue
      head -c 1024 < <(zcat "$f") > "$out/fuzz-header/corpus-$set_name-$(basename "$f" .gz)"
    done
  done
else
  echo "make-seeds.sh: $corpus not found: no real-world seeds" >&2
fi

# 4. fuzz-check: every image seed, and qemu-img's sparse image broken
# each way vmdk check finds (the repair starts only on a finding).
cp "$out"/fuzz-image/* "$out/fuzz-check/"
# poke FILE OFFSET BYTES VALUE: VALUE as BYTES little-endian bytes.
poke ()
{
  local i s=
  for (( i = 0; i < $3; i++ )); do
    s+=$(printf '\\x%02x' $(( ($4 >> (8 * i)) & 255 )))
  done
  printf "$s" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
u32 ()
{
  od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '
}
if [ -f "${q:-}/monolithicSparse.vmdk" ]; then
  b=$q/monolithicSparse.vmdk c=$tmp/check.vmdk
  gt=$(( $(u32 "$b" $(( $(u32 "$b" 56) * 512 ))) * 512 ))
  rgt=$(( $(u32 "$b" $(( $(u32 "$b" 48) * 512 ))) * 512 ))
  eof=$(( $(stat -c %s "$b") / 512 + 100 ))
  check_seed ()
  {
    head -c "$max" "$c" > "$out/fuzz-check/$1"
    cp "$b" "$c"
  }
  cp "$b" "$c"
  poke "$c" $((rgt + 4)) 4 "$eof";   check_seed redundant-table-differs
  poke "$c" $((gt + 4)) 4 "$eof";    check_seed entry-past-eof
  poke "$c" $((gt + 4)) 4 "$(u32 "$b" "$gt")"
  poke "$c" $((rgt + 4)) 4 "$(u32 "$b" "$gt")"; check_seed grain-shared
  poke "$c" $((gt + 12)) 4 0
  poke "$c" $((rgt + 12)) 4 0;       check_seed grain-leaked
  poke "$c" 72 1 1;                  check_seed unclean-shutdown
  poke "$c" 48 8 "$eof";             check_seed redundant-directory-past-eof
  poke "$c" $(( $(u32 "$b" 56) * 512 )) 4 "$eof"; check_seed table-past-eof
fi

for t in fuzz-image fuzz-header fuzz-descriptor fuzz-check; do
  echo "make-seeds.sh: $t: $(find "$out/$t" -type f | wc -l) seeds"
done
