#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Snapshot chains: reads and block status through parentFileNameHint
# chains equal QEMU's, single-link serves one link alone, and CID
# mismatches, missing parents, loops, over-deep chains and escaping
# parent names are refused with clear messages.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit nbdcopy nbdinfo qemu-img qemu-io qemu-nbd
make_scratch
cd "$scratch"

# plugin's raw bytes (with and without extents) and map vs QEMU's.
# QEMU maps zeroed grains as hole,zero; we map them as zero (allocated
# zeroes, which never fall through): ZEROED_GRAINS=range turns QEMU's
# answer for that first range into ours.
check_top () {
  local top=$1 what=$2; shift 2
  qemu-img convert -f vmdk -O raw "$top" expect.raw
  if serve file="$top" "$@" --run 'nbdcopy "$uri" got.raw' &&
     compare_raw expect.raw got.raw; then pass "$what: bytes"
  else fail "$what: bytes differ from qemu-img convert"; fi
  if serve file="$top" "$@" --run 'nbdcopy --no-extents "$uri" got.raw' &&
     compare_raw expect.raw got.raw; then pass "$what: bytes (no extents)"
  else fail "$what: bytes differ (no extents)"; fi
  serve file="$top" "$@" --run 'nbdinfo --map "$uri"' > map.got
  nbdinfo --map -- [ qemu-nbd -r -f vmdk "$top" ] > map.expect
  if [ -n "${ZEROED_GRAINS:-}" ]; then
    sed -i "s/^\( *0 *$ZEROED_GRAINS\)    3  hole,zero/\1    2  zero/" map.expect
  fi
  if diff -u map.expect map.got; then pass "$what: map equals qemu-nbd"
  else fail "$what: map differs from qemu-nbd"; fi
}

write () { qemu-io -f vmdk "${@:2}" "$1" > /dev/null; }

# --- A three-link monolithicSparse chain, the top larger than the base.
qemu-img create -q -f vmdk base.vmdk 100M
write base.vmdk -c 'write -P 0x11 0 4M' -c 'write -P 0x12 50M 1M' \
  -c 'write -P 0x13 99M 1M'
qemu-img create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk
write mid.vmdk -c 'write -P 0x21 1M 1M' -c 'write -P 0x22 60M 64k' \
  -c 'write -P 0x23 3000 5000'
qemu-img create -q -f vmdk -b mid.vmdk -F vmdk top.vmdk 120M
write top.vmdk -c 'write -P 0x31 3M 100k' -c 'write -P 0x32 110M 4k' \
  -c 'write -P 0x33 50M 512'
check_top top.vmdk "3-link monolithicSparse chain"

# Writes go to the top link only: parents are opened read-only.
sum_before=$(sha256sum base.vmdk mid.vmdk)
cp top.vmdk topw.vmdk
serve file=topw.vmdk --run '
  qemu-io -f raw -c "write -P 0x99 5M 64k" -c "write -P 0x98 1000 100" \
    "nbd+unix:///?socket=$unixsocket" >/dev/null'
[ "$sum_before" = "$(sha256sum base.vmdk mid.vmdk)" ] &&
  pass "parents unchanged by writes to the top" || fail "parents changed"
qemu-img convert -f vmdk -O raw top.vmdk expect.raw
printf '\x99%.0s' $(seq 65536) | dd of=expect.raw bs=1 seek=$((5 << 20)) \
  conv=notrunc status=none
printf '\x98%.0s' $(seq 100) | dd of=expect.raw bs=1 seek=1000 \
  conv=notrunc status=none
qemu-img convert -f vmdk -O raw topw.vmdk got.raw
compare_raw expect.raw got.raw && pass "write into a child (qemu reads it back)" ||
  fail "write into a child: qemu reads different data"
qemu-img check -q topw.vmdk && pass "child still consistent (qemu-img check)" ||
  fail "qemu-img check of the written child"

# --- single-link: only the top's own grains; the rest reads as zeroes
# and maps as holes.  QEMU opens one link with "backing": null.
qemu-img convert -O raw \
  "json:{\"driver\":\"vmdk\",\"file\":{\"driver\":\"file\",\"filename\":\"$scratch/top.vmdk\"},\"backing\":null}" \
  single.raw
serve file=top.vmdk single-link=true --run 'nbdcopy "$uri" got.raw'
cmp -s single.raw got.raw && pass "single-link bytes" ||
  fail "single-link bytes differ"
serve file=top.vmdk single-link=true --run 'nbdinfo --map --totals "$uri"' \
  > totals.txt
# Exactly the top's own data is data: 100k rounded to grains + 4k + 512.
data_bytes=$(awk '$3 == 0 { print $1 }' totals.txt)
[ "$data_bytes" = $((2 * 65536 + 65536 + 65536)) ] &&
  pass "single-link map: only the top's grains are data" ||
  { fail "single-link map data bytes = $data_bytes"; cat totals.txt; }
# A missing parent is fine with single-link.
mkdir lone; cp top.vmdk lone/
serve file=lone/top.vmdk single-link=true --run 'nbdinfo --size "$uri"' \
  >/dev/null && pass "single-link without the parent present" ||
  fail "single-link needs the parent"

# --- twoGbMaxExtentSparse links over 4 GiB, data across extent files.
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse big.vmdk 5G
write big.vmdk -c 'write -P 0x41 2047M 2M' -c 'write -P 0x42 5119M 1M'
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse \
  -b big.vmdk -F vmdk bigchild.vmdk
write bigchild.vmdk -c 'write -P 0x51 2048M 64k' -c 'write -P 0x52 4095M 3M'
check_top bigchild.vmdk "twoGbMaxExtentSparse chain"
rm -f expect.raw got.raw

# --- A zeroed grain in the child reads zeroes, never the parent's data.
qemu-img create -q -f vmdk -o zeroed_grain=on -b base.vmdk -F vmdk zc.vmdk
write zc.vmdk -c 'write -z 0 128k' -c 'write -P 0x61 256k 64k'
ZEROED_GRAINS=131072 check_top zc.vmdk "zeroed grains over a parent"
serve file=zc.vmdk --run 'nbdcopy "$uri" got.raw'
cmp -s -n 131072 got.raw /dev/zero && pass "zeroed grain hides parent data" ||
  fail "zeroed grain fell through to the parent"

# --- The parent in a subdirectory, and named by an absolute path that
# stays inside the directory (qemu-img writes absolute names).
mkdir -p sub
qemu-img create -q -f vmdk sub/base2.vmdk 10M
write sub/base2.vmdk -c 'write -P 0x71 0 1M'
qemu-img create -q -f vmdk -b sub/base2.vmdk -F vmdk subchild.vmdk
check_top subchild.vmdk "parent in a subdirectory"
qemu-img create -q -f vmdk -b "$scratch/base.vmdk" -F vmdk abschild.vmdk
grep -aq "parentFileNameHint=\"$scratch/base.vmdk\"" abschild.vmdk
check_top abschild.vmdk "absolute parent name inside the directory"

# --- Deeper chains: 20 links work; more than 128 are refused.
prev=base.vmdk
for i in $(seq 1 20); do
  qemu-img create -q -f vmdk -b $prev -F vmdk deep$i.vmdk
  write deep$i.vmdk -c "write -P $((i + 0x80)) $((i * 3))M 64k"
  prev=deep$i.vmdk
done
check_top deep20.vmdk "20-link chain"

# Text descriptors make long chains cheap: each link is a descriptor
# with one ZERO extent and a parent.
mkdesc () { # name cid parentcid parent
  printf '# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=%s\n' "$2" "$3"
  printf 'createType="custom"\n'
  [ -n "$4" ] && printf 'parentFileNameHint="%s"\n' "$4"
  printf 'RW 2048 ZERO\n'
} 
mkdesc l0 00000000 ffffffff "" > l0.vmdk
for i in $(seq 1 130); do
  mkdesc l$i 00000000 00000000 l$((i - 1)).vmdk > l$i.vmdk
done
serve file=l127.vmdk --run 'nbdinfo --size "$uri"' >/dev/null &&
  pass "128-link chain opens" || fail "128-link chain refused"
refuse "129-link chain" "deeper than 128" file=l128.vmdk

# --- Refusals.
# CID mismatch: change the parent's CID (same length, in place).
cp base.vmdk base.orig
cid=$(grep -a -m1 '^CID=' base.vmdk | cut -d= -f2)
sed -i "0,/^CID=$cid/s//CID=0badc0de/" base.vmdk
refuse "CID mismatch" "parentCID=.* does not match CID=0badc0de" \
  file=mid.vmdk
grep -q "mid.vmdk" err.txt && grep -q "base.vmdk" err.txt &&
  pass "CID message names both files" || fail "CID message lacks a file name"
serve file=mid.vmdk ignore-parent-cid=true --run 'nbdinfo --size "$uri"' \
  2> err.txt >/dev/null && grep -q "warning: .*does not match" err.txt &&
  pass "ignore-parent-cid opens with a warning" ||
  fail "ignore-parent-cid did not open with a warning"
mv base.orig base.vmdk

# Missing parent.
mv base.vmdk base.away
refuse "missing parent" "base.vmdk.*No such file" file=mid.vmdk
mv base.away base.vmdk

# Loops: a -> b -> a, and a -> (symlink to a).
mkdesc a 00000001 00000002 b.vmdk > a.vmdk
mkdesc b 00000002 00000001 a.vmdk > b.vmdk
refuse "loop a -> b -> a" "loops back" file=a.vmdk
ln -s self.vmdk selflink.vmdk
mkdesc self 00000003 00000003 selflink.vmdk > self.vmdk
if [ "${NBDKIT_VALGRIND:-0}" = 1 ]; then
    # valgrind has no openat2: the O_NOFOLLOW walk refuses every symlink
    # before the loop is seen.
    refuse "loop through a symlink" "refusing a directory outside\|refusing a file outside" \
           file=self.vmdk
else
    refuse "loop through a symlink" "loops back" file=self.vmdk
fi

# Parent names escaping the directory.
mkdir -p inner outside
cp base.vmdk outside/
mkdesc esc 00000004 "$cid" ../outside/base.vmdk > inner/esc1.vmdk
refuse "parent named ../" "outside" file=inner/esc1.vmdk
mkdesc esc 00000004 "$cid" "$scratch/outside/base.vmdk" > inner/esc2.vmdk
refuse "absolute parent outside" "outside" file=inner/esc2.vmdk
ln -s ../outside/base.vmdk inner/link.vmdk
mkdesc esc 00000004 "$cid" link.vmdk > inner/esc3.vmdk
refuse "parent symlink escaping" "outside" file=inner/esc3.vmdk
mkdesc esc 00000004 "$cid" "json:{\"driver\":\"file\"}" > inner/esc4.vmdk
refuse "json: parent name" "No such file" file=inner/esc4.vmdk
# A parentCID with no name.
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\ncreateType="custom"\nRW 8 ZERO\n' > noname.vmdk
refuse "parentCID without a name" "no parentFileNameHint" file=noname.vmdk

check_summary
