#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# seSparse (ESXi snapshot) extents: the real ESXi extent of the corpus,
# and extents from our builder (mksesparse) with every grain-table entry
# type, grain-directory holes and non-contiguous, split-encoded cluster
# numbers, read through the plugin and compared with the raw source and
# with qemu-img (QEMU reads seSparse); a snapshot over a flat parent.
# Malformed headers and corrupt directory/table entries are cases of
# test-malformed-sesparse.sh.
#
# Block status decision: GT types 0x1 (scsi-unmapped) and 0x2 (zero)
# are allocated zeroes in this link, never read from a parent, so the
# map shows them as "2 zero"; type 0x0 (unallocated) and GD holes show
# as "3 hole,zero" (or the parent's answer in a chain).

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img
plugin=$VMDK_PLUGIN
mk=$abs_builddir/mksesparse
[ -x "$mk" ] || { echo "FAIL: $mk not built"; exit 1; }
make_scratch
cd "$scratch"

failures=0
fail () { echo "FAIL: $*"; failures=$((failures + 1)); }
pass () { echo "PASS: $*"; }

# Read-only: without readonly=true the plugin warns that seSparse is
# served read-only anyway; is_readonly checks that.
serve () { nbdkit -r -U - "$plugin" readonly=true "$@"; }
is_readonly () {
  local what=$1; shift
  if nbdkit -U - "$plugin" "$@" --run 'nbdinfo --is readonly "$uri"' \
       2> err.txt &&
     grep -q "serving read-only: .*seSparse extents are read-only" err.txt
  then pass "$what: served read-only, with the reason"
  else fail "$what: served writable, or no reason given"; cat err.txt; fi
}
sum () { sha256sum "$1" | cut -d' ' -f1; }
# Normalised map: "offset length type description" per line.
map () {
  serve file="$1" --run 'nbdinfo --map "$uri"' |
    awk '{ print $1, $2, $3, $4 }'
}
# put FILE OFFSET LENGTH: random bytes at OFFSET.
put () {
  head -c "$3" /dev/urandom |
    dd of="$1" bs=64k iflag=fullblock oflag=seek_bytes seek="$2" \
       conv=notrunc status=none
}
# bytes FILE OFFSET LENGTH > out
bytes () {
  dd if="$1" bs=64k iflag=skip_bytes,count_bytes skip="$2" count="$3" \
     status=none
}

# Whole-image checks: plugin (with and without extents) == raw source
# == qemu-img convert.
check_image () {
  local desc=$1 raw=$2 what=$3 want
  want=$(sum "$raw")
  if serve file="$desc" --run 'nbdcopy "$uri" got.raw' &&
     [ "$(sum got.raw)" = "$want" ]; then pass "$what: bytes"
  else fail "$what: bytes differ from the raw source"; fi
  if serve file="$desc" --run 'nbdcopy --no-extents "$uri" got.raw' &&
     [ "$(sum got.raw)" = "$want" ]; then pass "$what: bytes (no extents)"
  else fail "$what: bytes differ (no extents)"; fi
  if qemu-img convert -f vmdk -O raw "$desc" qemu.raw &&
     [ "$(sum qemu.raw)" = "$want" ]; then pass "$what: equals qemu-img"
  else fail "$what: qemu-img convert differs from the raw source"; fi
}

# map_has WHAT DESC LINE...: each "offset length type description" line
# (a basic regex) is in the map.
map_has () {
  local what=$1 desc=$2 line; shift 2
  map "$desc" > map.got
  for line in "$@"; do
    if grep -qx "$line" map.got; then pass "$what: map has '$line'"
    else fail "$what: map lacks '$line'"; cat map.got; fi
  done
}

MiB=1048576

# --- The real ESXi extent (corpus).  16 MiB of 'a', then zeroes.
corpus=${VMDK_CORPUS:-}
if [ -n "$corpus" ] &&
   [ -r "$corpus/esxi-sesparse/sesparse-extent.vmdk.gz" ] &&
   [ -r "$corpus/expected.tsv" ]; then
  mkdir esxi
  cp "$corpus/esxi-sesparse/sesparse.vmdk" esxi/
  gunzip -c "$corpus/esxi-sesparse/sesparse-extent.vmdk.gz" \
    > esxi/sesparse-extent.vmdk
  read -r want_size want_sum < <(awk -F'\t' '$1 == "esxi-sesparse" {
    print $3, $4 }' "$corpus/expected.tsv")
  e=esxi/sesparse.vmdk
  got_size=$(serve file=$e --run 'nbdinfo --size "$uri"')
  [ "$got_size" = "$want_size" ] && pass "esxi: size $got_size" ||
    fail "esxi: size $got_size, expected $want_size"
  serve file=$e --run 'nbdcopy "$uri" got.raw'
  [ "$(sum got.raw)" = "$want_sum" ] && pass "esxi: sha256" ||
    fail "esxi: sha256 $(sum got.raw), expected $want_sum"
  serve file=$e --run 'nbdcopy --no-extents "$uri" got.raw'
  [ "$(sum got.raw)" = "$want_sum" ] && pass "esxi: sha256 (no extents)" ||
    fail "esxi: sha256 (no extents) differs"
  qemu-img convert -f vmdk -O raw $e qemu.raw
  [ "$(sum qemu.raw)" = "$want_sum" ] && pass "esxi: equals qemu-img" ||
    fail "esxi: qemu-img convert differs"
  # All 4096 grains of the first table are allocated 'a's.
  map_has esxi $e "0 16777216 0 data" "16777216 520093696 3 hole,zero"
  is_readonly esxi file=$e
  rm -rf esxi got.raw qemu.raw
else
  echo "SKIP: corpus not available, esxi-sesparse part not run"
fi

# --- Builder images.  40 MiB + 3 sectors (3 tables, the last partial,
# and a short last grain) with data, zero grains, and an all-zero 16 MiB
# range (a GD hole when zero grains are unallocated).
size=$((40 * MiB + 1536))
truncate -s $size src.raw
put src.raw 0 $MiB                      # grains 0-255
put src.raw $((MiB + 65536)) $((MiB - 65536))   # zero grains 256-271
put src.raw $((8 * MiB)) 4096
put src.raw $((9 * MiB + 1024)) 512     # part of a grain
put src.raw $((32 * MiB)) $MiB
put src.raw $((40 * MiB)) 1536          # the short last grain

# Defaults: zero grains unallocated, clusters in order.
"$mk" src.raw a-extent.vmdk a.vmdk
check_image a.vmdk src.raw "unalloc zero grains"
map_has "unalloc" a.vmdk "0 1048576 0 data" "1048576 65536 3 hole,zero" \
  "1114112 983040 0 data"

# Zero grains scsi-unmapped (0x1), clusters reversed from 5000: both
# halves of the split cluster encoding, nothing contiguous.
"$mk" --zero-as=unmapped --reverse --cluster-base=5000 \
  src.raw b-extent.vmdk b.vmdk
check_image b.vmdk src.raw "unmapped zero grains, reversed clusters"
map_has "unmapped" b.vmdk "1048576 65536 2 zero"

# Zero grains 0x2, spread clusters, a table for every range.
"$mk" --zero-as=zero --spread=3 --all-gts src.raw c-extent.vmdk c.vmdk
check_image c.vmdk src.raw "zero (0x2) grains, spread clusters"
map_has "zero" c.vmdk "1048576 65536 2 zero"

# Every grain allocated, zero grains too.
"$mk" --zero-as=data src.raw d-extent.vmdk d.vmdk
check_image d.vmdk src.raw "all grains allocated"
map_has "all data" d.vmdk "0 $size 0 data"

# Each type side by side, clusters crossing 4096 (the split boundary).
"$mk" --grain=256:unmapped --grain=257:zero --grain=258:data \
  --cluster-base=4000 src.raw e-extent.vmdk e.vmdk
check_image e.vmdk src.raw "mixed types"
map_has "mixed" e.vmdk "1048576 8192 2 zero" "1056768 4096 0 data" \
  "1060864 53248 3 hole,zero"

# Never writable: served read-only even when writes are allowed.
is_readonly "builder image" file=a.vmdk

# Empty: no table at all.
truncate -s $((3 * MiB)) empty.raw
"$mk" empty.raw f-extent.vmdk f.vmdk
check_image f.vmdk empty.raw "empty"
map_has "empty" f.vmdk "0 3145728 3 hole,zero"

# --- A snapshot over a flat parent: 0x0 reads the parent, 0x1 and 0x2
# read zeroes (never the parent), 0x3 reads the child.
truncate -s $size base-flat.img
put base-flat.img 0 $size
cat > base.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"

RW $((size / 512)) FLAT "base-flat.img" 0
EOF
"$mk" --parent=base.vmdk --parent-cid=12345678 --cid=9abcdef0 \
  --grain=256:unmapped --grain=257:zero src.raw child-extent.vmdk child.vmdk
qemu-img convert -f vmdk -O raw child.vmdk qemu.raw
if serve file=child.vmdk --run 'nbdcopy "$uri" got.raw' &&
   cmp -s qemu.raw got.raw; then pass "chain: bytes equal qemu-img"
else fail "chain: bytes differ from qemu-img"; fi
head -c 8192 /dev/zero > zero.bin
bytes got.raw $MiB 8192 > got.bin
cmp -s zero.bin got.bin && pass "chain: 0x1/0x2 read zeroes, not the parent" ||
  fail "chain: 0x1/0x2 grains did not read zeroes"
cmp -s <(bytes got.raw $((MiB + 8192)) 57344) \
       <(bytes base-flat.img $((MiB + 8192)) 57344) &&
  pass "chain: 0x0 reads the parent" || fail "chain: 0x0 not from the parent"
map_has "chain" child.vmdk "1048576 8192 2 zero" "1056768 [0-9]* 0 data"
rm -f got.raw qemu.raw

if [ $failures -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all seSparse checks passed"
