#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# seSparse (ESXi snapshot) extents: the real ESXi extent of the corpus,
# and extents from our builder (mksesparse) with every grain-table entry
# type, grain-directory holes and non-contiguous, split-encoded cluster
# numbers, read through the plugin and compared with the raw source and
# with qemu-img (QEMU reads seSparse); a snapshot over a flat parent;
# malformed headers refused at open with a message naming the field;
# corrupt directory/table entries failing only their own range (EIO).
#
# Block status decision: GT types 0x1 (scsi-unmapped) and 0x2 (zero)
# are allocated zeroes in this link, never read from a parent, so the
# map shows them as "2 zero"; type 0x0 (unallocated) and GD holes show
# as "3 hole,zero" (or the parent's answer in a chain).

set -euo pipefail

for cmd in nbdkit nbdcopy nbdinfo qemu-img; do
  command -v $cmd >/dev/null || { echo "SKIP: $cmd not found"; exit 77; }
done
plugin=${VMDK_PLUGIN:?}
mk=${abs_builddir:?}/mksesparse
[ -x "$mk" ] || { echo "FAIL: $mk not built"; exit 1; }
d=$abs_builddir/tmp/test-sesparse
rm -rf "$d"; mkdir -p "$d"; cd "$d"
trap 'cd /; rm -rf "$d"' EXIT

failures=0
fail () { echo "FAIL: $*"; failures=$((failures + 1)); }
pass () { echo "PASS: $*"; }

# Read-only: without readonly=true the plugin warns that seSparse is
# served read-only anyway; is_readonly checks that.
serve () { nbdkit -r -U - "$plugin" readonly=true "$@"; }
# Serve only [OFF, OFF+LEN) of the image.
serve_range () {
  local off=$1 len=$2; shift 2
  nbdkit -r -U - --filter=offset "$plugin" readonly=true \
    offset=$off range=$len "$@"
}
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
no_crash () { ! grep -qE "Sanitizer|runtime error:|core dumped|Segmentation|[Aa]ssert" "$1"; }

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

# refuse WHAT PATTERN ARGS...: startup must fail with PATTERN in stderr.
refuse () {
  local what=$1 pattern=$2 rc=0; shift 2
  serve "$@" --run true 2> err.txt || rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$pattern" err.txt &&
     no_crash err.txt; then
    pass "$what refused: $(grep -m1 -- "$pattern" err.txt)"
  else
    fail "$what: expected refusal matching '$pattern' (exit $rc)"
    cat err.txt
  fi
}

# range_ok WHAT DESC RAW OFF LEN: that range reads as in RAW.
range_ok () {
  local what=$1 desc=$2 raw=$3 off=$4 len=$5
  bytes "$raw" "$off" "$len" > want.bin
  if serve_range "$off" "$len" file="$desc" \
       --run 'nbdcopy "$uri" got.bin' 2> err.txt &&
     cmp -s want.bin got.bin; then pass "$what: [$off, +$len) reads"
  else fail "$what: [$off, +$len) does not read as expected"; cat err.txt; fi
}

# range_eio WHAT DESC OFF LEN PATTERN: the open succeeds, reading that
# range fails with EIO and PATTERN in the server's messages.
range_eio () {
  local what=$1 desc=$2 off=$3 len=$4 pattern=$5 rc=0
  serve_range "$off" "$len" file="$desc" \
    --run 'nbdcopy "$uri" got.bin' > err.txt 2>&1 || rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && no_crash err.txt &&
     grep -q "Input/output error" err.txt && grep -q -- "$pattern" err.txt
  then pass "$what: [$off, +$len) fails: $(grep -m1 -- "$pattern" err.txt)"
  else fail "$what: [$off, +$len) expected EIO matching '$pattern' (exit $rc)"
       cat err.txt; fi
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

# --- Malformed headers: refused at open, naming the field.
truncate -s $((20 * MiB)) m.raw
put m.raw 0 65536
put m.raw $((17 * MiB)) 65536
bad () {
  local what=$1 pattern=$2; shift 2
  "$mk" "$@" m.raw bad-extent.vmdk bad.vmdk
  refuse "$what" "$pattern" file=bad.vmdk
}
bad "bad magic" \
  "constant header: magic is 0x00000000cafebabf, expected 0x00000000cafebabe" \
  --hdr=magic=0xcafebabf
bad "bad version" \
  "version is 0x0000000200000002, expected 0x0000000200000001" \
  --hdr=version=0x200000002
bad "grain size 16" "grain_size (sectors) is 16, expected 8" \
  --hdr=grain_size=16
bad "GT size 128" "grain_table_size (sectors) is 128, expected 64" \
  --hdr=grain_table_size=128
bad "flags" "flags is 0x0000000000000001, expected 0x0000000000000000" \
  --hdr=flags=1
bad "reserved" "reserved3 is 0x0000000000000007" --hdr=reserved3=7
bad "header padding" "constant header: padding byte at offset 300 is 0x01" \
  --poke=300=1
bad "volatile magic" \
  "volatile header: magic is 0x0000000000000000, expected 0x00000000cafecafe" \
  --vol=magic=0
bad "dirty journal" \
  "replay_journal is 1, expected 0: the journal needs replay.*not supported" \
  --vol=replay_journal=1
bad "volatile padding" "volatile header: padding byte at offset 40" \
  --poke=$((512 + 40))=9
bad "backmap past EOF" \
  "backmap_offset 99999999 + backmap_size 8 sectors lies beyond the end" \
  --hdr=backmap_offset=99999999
bad "journal size overflow" \
  "journal_offset 4 + journal_size 18446744073709551615 sectors lies beyond" \
  --hdr=journal_size=0xffffffffffffffff
bad "grains past EOF" \
  "grains_offset 999999 starts beyond the end of the file" \
  --hdr=grains_offset=999999
bad "grains size overflow" \
  "grains_offset 153 + grains_size 18446744073709551600 sectors overflows" \
  --hdr=grains_size=0xfffffffffffffff0
bad "GD too small" \
  "grain_dir_size 0 sectors holds 0 entries, but capacity 40960 sectors" \
  --hdr=grain_dir_size=0
bad "GD offset 0" "grain_dir_offset is 0, overlapping the constant header" \
  --hdr=grain_dir_offset=0
bad "huge capacity" \
  "grain_dir_size 1 sectors holds 64 entries, but capacity" \
  --hdr=capacity=0xffffffffffffffff
bad "truncated" \
  "grain_dir_offset 8 + grain_dir_size 1 sectors lies beyond" \
  --truncate=4096
"$mk" m.raw bad-extent.vmdk bad.vmdk
: > bad-extent.vmdk
refuse "empty extent file" "seSparse constant header" file=bad.vmdk

# --- Corrupt entries: the open succeeds, only their range fails.
# Grain 5 is allocated at cluster 5; the file holds clusters 0-31.
"$mk" --gde=0=0x2000000000000000 m.raw bad-extent.vmdk bad.vmdk
range_eio "GD entry top bits" bad.vmdk 0 4096 \
  "entry 0 = 0x2000000000000000: top 32 bits are not 0x10000000"
range_ok "GD entry top bits" bad.vmdk m.raw $((16 * MiB)) $((4 * MiB))

"$mk" --gde=1=0x10000000000000ff m.raw bad-extent.vmdk bad.vmdk
range_eio "GD entry index" bad.vmdk $((17 * MiB)) 4096 \
  "grain table index lies beyond the grain_tables region"
range_ok "GD entry index" bad.vmdk m.raw 0 $((16 * MiB))

"$mk" --gte=5=0x5000000000000005 m.raw bad-extent.vmdk bad.vmdk
range_eio "GT entry nibble 0x5" bad.vmdk $((5 * 4096)) 4096 \
  "grain table 0 entry 5 = 0x5000000000000005: invalid entry type 0x5"
range_ok "GT entry nibble 0x5" bad.vmdk m.raw 0 $((5 * 4096))
range_ok "GT entry nibble 0x5" bad.vmdk m.raw $((6 * 4096)) \
  $((20 * MiB - 6 * 4096))

"$mk" --gte=6=0x0000000000000001 m.raw bad-extent.vmdk bad.vmdk
range_eio "GT entry 0x0 not all zero" bad.vmdk $((6 * 4096)) 512 \
  "entry 6 = 0x0000000000000001: invalid entry type 0x0 (unallocated, but"
range_ok "GT entry 0x0 not all zero" bad.vmdk m.raw 0 $((6 * 4096))

# Cluster 2000 is inside the grains region (5120 grains) but past EOF.
"$mk" --gte-cluster=7=2000 m.raw bad-extent.vmdk bad.vmdk
range_eio "cluster past EOF" bad.vmdk $((7 * 4096)) 4096 \
  "grain 2000 at byte .* lies beyond the end of the file"
range_ok "cluster past EOF" bad.vmdk m.raw $((8 * 4096)) $MiB

"$mk" --gte-cluster=8=6000 m.raw bad-extent.vmdk bad.vmdk
range_eio "cluster past grains region" bad.vmdk $((8 * 4096)) 4096 \
  "grain 6000 lies outside the grains region"
range_ok "cluster past grains region" bad.vmdk m.raw 0 $((8 * 4096))

# Split encoding: grain 9 at cluster 4096 + 3 (low bits 3, high 1).
"$mk" --gte-cluster=9=4099 m.raw bad-extent.vmdk bad.vmdk
range_eio "split cluster past EOF" bad.vmdk $((9 * 4096)) 4096 \
  "entry 9 = 0x3003000000000001: grain 4099 at byte"

if [ $failures -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all seSparse checks passed"
