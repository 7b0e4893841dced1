#!/usr/bin/env bash
# shellcheck disable=SC2016  # "$uri" in --run is nbdkit's
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# create=true and the create-* parameters, end to end:
#  1. Every create type (stream-optimized: test-stream-write.sh tests
#     its layout): a new image of 4 GiB + 100 MiB + 3 sectors (so
#     split kinds have three extent files and the last grain is partial)
#     gets a pattern of writes through the plugin (qemu-io over NBD):
#     data across grains, a grain-table boundary and both extent-file
#     boundaries, sub-grain writes, the last sector, zeroes and trims of
#     whole grains, then a flush.  The same operations on a raw file are
#     the model.  After the server stops: qemu-img check, qemu-img
#     compare with the model, the virtual size qemu-img reports, the
#     files made, and the descriptor's keys as VMware writes them.
#  2. Adapter type and hardware version reach the descriptor (geometry
#     computed here from the size), and a new monolithic-sparse file is
#     no larger than qemu-img's for the same size.
#  3. Snapshot children of a qemu-img parent with data, for each type
#     that can be a delta: they read through, writes land in the child
#     only (the parent is bit-identical), qemu-img sees the chain, and
#     create-size defaults to the parent's size.
#  4. Every refusal (bad values, existing files, missing size, types
#     that cannot be deltas, a size smaller than the parent's, a parent
#     outside the directory, sizes too large for the type), each
#     naming the parameter or the file and leaving the directory as it
#     was; and a creation that fails half-way (a file size limit)
#     removes what it made.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail

requires_plugin
requires_cmds nbdkit qemu-img qemu-io dd tr grep jq sha256sum
requires qemu-img --version

make_scratch
cd "$scratch"

M=$((1024 * 1024))
G=$((1024 * M))
split=$((2047 * M))                     # VMware's split extent size
# The disk size: three extent files for split kinds, a partial last
# grain.  vmfs-sparse (COWD) images get a smaller disk: their grains
# are one sector, and qemu-img compare walks them a sector at a time
# (35 s for this size).
big=$((4 * G + 100 * M + 3 * 512))
small=$((100 * M + 3 * 512))

# make_ops SIZE: the writes, as qemu-io commands in $ops (the same run
# on the raw model), for a disk of SIZE bytes.
make_ops ()
{
    local size=$1
    ops=(
        "write -P 0x11 0 1M"
        "write -P 0x22 $((32 * M - 4096)) 8192"       # across a grain table
        "write -P 0x55 $((5 * 65536 + 512)) 1536"     # inside one grain
        "write -P 0x66 $((40 * M + 700 * 512)) 300000"  # unaligned end
        "write -P 0x77 $((size - 512)) 512"           # the last sector
        "write -P 0x78 $((size - 70000 - 512)) 70000" # into the last grain
        "write -z $((256 * 1024)) $((128 * 1024))"    # zero whole grains
        "write -z $((40 * M + 782 * 512)) 4096"       # zero inside a grain
        "discard $((640 * 1024)) 65536"               # trim a whole grain
    )
    if [ "$size" -gt $((2 * split)) ]; then
        ops+=("write -P 0x33 $((split - 3072)) 6144"      # across extent 1/2
              "write -P 0x44 $((2 * split - 512)) 1024")  # across extent 2/3
    fi
    ops+=("flush")
}

# make_model SIZE RAW: RAW after the writes of make_ops SIZE.
make_model ()
{
    local o args=()
    make_ops "$1"
    for o in "${ops[@]}"; do args+=(-c "$o"); done
    rm -f "$2"
    truncate -s "$1" "$2"
    qemu-io -f raw "${args[@]}" "$2" > /dev/null
}

make_model "$big" big.raw
make_model "$small" small.raw

# descriptor_text IMAGE: the descriptor (embedded ones end at a NUL).
descriptor_text ()
{
    if [ "$(head -c 4 "$1")" = KDMV ]; then
        dd if="$1" bs=512 skip=1 count=20 status=none | tr -d '\0'
    else
        cat "$1"
    fi
}

# check_keys WHAT IMAGE CREATETYPE: the keys VMware writes, each once.
check_keys ()
{
    local what=$1 img=$2 ct=$3 key missing=() twice=()
    descriptor_text "$img" > desc.txt
    for key in '# Disk DescriptorFile$' 'version=1$' 'encoding="UTF-8"$' \
               'CID=[0-9a-f]{8}$' 'parentCID=[0-9a-f]{8}$' \
               "createType=\"$ct\"\$" \
               'ddb\.virtualHWVersion = "[0-9]+"$' \
               'ddb\.geometry\.cylinders = "[0-9]+"$' \
               'ddb\.geometry\.heads = "(16|255)"$' \
               'ddb\.geometry\.sectors = "63"$' \
               'ddb\.adapterType = "(ide|buslogic|lsilogic)"$' \
               'ddb\.uuid = "([0-9a-f]{2} ){7}[0-9a-f]{2}-([0-9a-f]{2} ){7}[0-9a-f]{2}"$' \
               'ddb\.longContentID = "[0-9a-f]{32}"$' \
               'ddb\.toolsInstallType = "4"$' \
               'ddb\.toolsVersion = "[0-9]+"$'; do
        case "$(grep -cE "^$key" desc.txt)" in
            1) ;;
            0) missing+=("$key") ;;
            *) twice+=("$key") ;;
        esac
    done
    if [ ${#missing[@]} -eq 0 ] && [ ${#twice[@]} -eq 0 ]; then
        pass "$what: the descriptor has VMware's keys, each once"
    else
        fail "$what: descriptor keys missing: ${missing[*]}; repeated: ${twice[*]}"
        cat desc.txt
    fi
}

# files_made EXPECTED...: the directory holds exactly these image files.
files_made ()
{
    local got
    got=$(ls -- *.vmdk | sort | tr '\n' ' ')
    if [ "$got" = "$(printf '%s\n' "$@" | sort | tr '\n' ' ')" ]; then
        pass "files: $got"
    else
        fail "files: $got, expected: $*"
    fi
}

# ---------------------------------------------------------------------
# 1. Every type.

# type createType files...
types=(
    "monolithic-sparse monolithicSparse new.vmdk"
    "monolithic-flat monolithicFlat new.vmdk new-flat.vmdk"
    "split-sparse twoGbMaxExtentSparse new.vmdk new-s001.vmdk new-s002.vmdk new-s003.vmdk"
    "split-flat twoGbMaxExtentFlat new.vmdk new-f001.vmdk new-f002.vmdk new-f003.vmdk"
    "vmfs-flat vmfs new.vmdk new-flat.vmdk"
    "vmfs-thin vmfs new.vmdk new-flat.vmdk"
    "vmfs-sparse vmfsSparse new.vmdk new-delta.vmdk"
    "stream-optimized streamOptimized new.vmdk"
)
for t in "${types[@]}"; do
    read -r type ct files <<< "$t"
    rm -f -- *.vmdk
    size=$big model=big.raw
    if [ "$type" = vmfs-sparse ]; then size=$small model=small.raw; fi
    make_ops "$size"
    args=()
    for o in "${ops[@]}"; do args+=(-c "'$o'"); done
    if serve file=new.vmdk create=true create-type="$type" \
             create-size="$size" \
             --run "qemu-io -f raw ${args[*]} \"\$uri\" > /dev/null" \
             2> server.log; then
        pass "$type: created and written through the plugin"
    else
        fail "$type: create or write failed"; cat server.log; continue
    fi
    # shellcheck disable=SC2086
    files_made $files
    check_image_consistent "$type" new.vmdk
    check_image_equals "$type" new.vmdk "$model"
    got=$(qemu-img info --output=json new.vmdk | jq '."virtual-size"')
    if [ "$got" = "$size" ]; then
        pass "$type: qemu-img says $got bytes"
    else
        fail "$type: qemu-img says $got bytes, expected $size"
    fi
    check_keys "$type" new.vmdk "$ct"
    if [ "$type" = vmfs-thin ]; then
        if grep -qx 'ddb.thinProvisioned = "1"' desc.txt; then
            pass "$type: ddb.thinProvisioned"
        else
            fail "$type: no ddb.thinProvisioned = \"1\""
        fi
    fi
    check_served_equals "$type" new.vmdk "$model"
done

# ---------------------------------------------------------------------
# 2. Adapter, hardware version, geometry, metadata size.

rm -f -- *.vmdk
s2=$((10 * G))
serve file=new.vmdk create=true create-size=10G create-adapter-type=ide \
      create-hwversion=esx65 --run true
descriptor_text new.vmdk > desc.txt
cyl=$(( (s2 / 512 + 16 * 63 - 1) / (16 * 63) ))
if [ "$cyl" -gt 16383 ]; then cyl=16383; fi
if grep -qx 'ddb.adapterType = "ide"' desc.txt &&
   grep -qx 'ddb.virtualHWVersion = "13"' desc.txt &&
   grep -qx 'ddb.geometry.heads = "16"' desc.txt &&
   grep -qx "ddb.geometry.cylinders = \"$cyl\"" desc.txt; then
    pass "ide, esx65: adapterType ide, version 13, 16 heads, $cyl cylinders"
else
    fail "ide, esx65: descriptor"; cat desc.txt
fi
rm -f -- *.vmdk
serve file=new.vmdk create=true create-size=10G \
      create-adapter-type=scsi-lsilogic create-hwversion=7 --run true
descriptor_text new.vmdk > desc.txt
cyl=$(( (s2 / 512 + 255 * 63 - 1) / (255 * 63) ))
if grep -qx 'ddb.adapterType = "lsilogic"' desc.txt &&
   grep -qx 'ddb.virtualHWVersion = "7"' desc.txt &&
   grep -qx 'ddb.geometry.heads = "255"' desc.txt &&
   grep -qx "ddb.geometry.cylinders = \"$cyl\"" desc.txt; then
    pass "lsilogic, 7: adapterType lsilogic, version 7, 255 heads, $cyl cylinders"
else
    fail "lsilogic, 7: descriptor"; cat desc.txt
fi
# The defaults: buslogic, workstation5 (4).
rm -f -- *.vmdk
serve file=new.vmdk create=true create-size=1G --run true
descriptor_text new.vmdk > desc.txt
if grep -qx 'ddb.adapterType = "buslogic"' desc.txt &&
   grep -qx 'ddb.virtualHWVersion = "4"' desc.txt &&
   grep -qx 'createType="monolithicSparse"' desc.txt; then
    pass "defaults: monolithicSparse, buslogic, version 4"
else
    fail "defaults: descriptor"; cat desc.txt
fi
# qemu-img preallocates the same metadata (VMware's layout).
rm -f -- *.vmdk
serve file=new.vmdk create=true create-size=100G --run true
qemu-img create -q -f vmdk -o subformat=monolithicSparse qemu.vmdk 100G
ours=$(stat -c %s new.vmdk) theirs=$(stat -c %s qemu.vmdk)
if [ "$ours" -le "$theirs" ]; then
    pass "100G monolithic-sparse: $ours bytes, qemu-img's $theirs"
else
    fail "100G monolithic-sparse: $ours bytes, more than qemu-img's $theirs"
fi

# ---------------------------------------------------------------------
# 3. Snapshot children.

# make_base NAME SIZE: a qemu-img parent with data, its raw contents
# NAME.raw, and NAME-child.raw, what a child holds after child_ops.
child_ops=(-c "write -P 0xcc $((M - 4096)) 8192"
           -c "write -P 0xdd $((64 * M + 512)) 512")
make_base ()
{
    qemu-img create -q -f vmdk "$1.vmdk" "$2"
    qemu-io -f vmdk -c 'write -P 0xaa 0 2M' \
            -c "write -P 0xbb $(($2 - 3 * M)) 1M" "$1.vmdk" > /dev/null
    qemu-img convert -f vmdk -O raw "$1.vmdk" "$1.raw"
    cp "$1.raw" "$1-child.raw"
    qemu-io -f raw "${child_ops[@]}" -c "write -P 0xee $(($2 - 512)) 512" \
            "$1-child.raw" > /dev/null
}

rm -f -- *.vmdk
# Over 2047 MiB, so that split-sparse children have two extent files.
make_base base $((2 * G + 200 * M))
make_base small-base $((100 * M))
for type in monolithic-sparse split-sparse vmfs-sparse; do
    base=base
    if [ "$type" = vmfs-sparse ]; then base=small-base; fi
    bsize=$(stat -c %s "$base.raw")
    base_sum=$(sha256sum < "$base.vmdk")
    rm -f child*.vmdk
    args=()
    for o in "${child_ops[@]}"; do
        if [ "$o" != -c ]; then args+=(-c "'$o'"); fi
    done
    args+=(-c "'write -P 0xee $((bsize - 512)) 512'")
    if serve file=child.vmdk create=true create-type="$type" \
             create-parent="$base.vmdk" \
             --run "qemu-io -f raw ${args[*]} \"\$uri\" > /dev/null" \
             2> server.log; then
        pass "$type child: created over $base.vmdk and written"
    else
        fail "$type child: failed"; cat server.log; continue
    fi
    if [ "$(sha256sum < "$base.vmdk")" = "$base_sum" ]; then
        pass "$type child: the parent is unchanged"
    else
        fail "$type child: the parent changed"
    fi
    check_image_consistent "$type child" child.vmdk
    check_image_equals "$type child" child.vmdk "$base-child.raw"
    check_served_equals "$type child" child.vmdk "$base-child.raw"
    if qemu-img info --backing-chain child.vmdk > info.txt &&
       grep -q "^image: $base.vmdk\$" info.txt &&
       grep -qx "parentFileNameHint=\"$base.vmdk\"" \
            <(descriptor_text child.vmdk)
    then
        pass "$type child: qemu-img sees the chain child -> $base"
    else
        fail "$type child: chain"; cat info.txt
    fi
    got=$(qemu-img info --output=json child.vmdk | jq '."virtual-size"')
    if [ "$got" = "$bsize" ]; then
        pass "$type child: the parent's size by default"
    else
        fail "$type child: size $got, expected $bsize"
    fi
done

# ---------------------------------------------------------------------
# 4. Refusals: the message names the parameter or file, and the
# directory is as it was.

mkdir refuse
cd refuse
cp ../base.vmdk .
qemu-img create -q -f vmdk ../outside.vmdk 1G
touch exists.vmdk split-s002.vmdk
# Names, sizes and modification times (not "ls -l"'s block counts,
# which change as the page cache writes back the files copied here).
list_dir () { find . -mindepth 1 ! -name err.txt -printf '%p %s %T@\n' | sort; }
listing=$(list_dir)

# refused WHAT PATTERN PARAMS...
refused ()
{
    local what=$1
    refuse "$@"
    if [ "$(list_dir)" = "$listing" ]; then
        pass "$what: the directory is unchanged"
    else
        fail "$what: the directory changed"; ls -l
    fi
}

refused "existing file" "exists.vmdk: the file exists already" \
        file=exists.vmdk create=true create-size=1G
refused "existing extent file" "split-s002.vmdk: the file exists already" \
        file=split.vmdk create=true create-size=5G create-type=split-sparse
refused "no size" "create=true needs create-size" file=n.vmdk create=true
refused "size 0" "create-size: 0 is not a positive multiple of 512" \
        file=n.vmdk create=true create-size=0
refused "size not a multiple of 512" "create-size: 1000 is not a positive" \
        file=n.vmdk create=true create-size=1000
refused "size garbage" "could not parse size" \
        file=n.vmdk create=true create-size=lots
refused "unknown type" 'create-type: unknown type "sparse"' \
        file=n.vmdk create=true create-size=1G create-type=sparse
refused "unknown adapter" 'create-adapter-type: unknown adapter type "scsi"' \
        file=n.vmdk create=true create-size=1G create-adapter-type=scsi
refused "bad hwversion" 'create-hwversion: "esx99" is neither' \
        file=n.vmdk create=true create-size=1G create-hwversion=esx99
refused "hwversion 0" 'create-hwversion: "0" is neither' \
        file=n.vmdk create=true create-size=1G create-hwversion=0
refused "create-size without create" "create-size needs create=true" \
        file=base.vmdk create-size=1G
refused "create=true and readonly=true" "contradict" \
        file=n.vmdk create=true create-size=1G readonly=true
refused "repeated create-size" "create-size parameter given more than once" \
        file=n.vmdk create=true create-size=1G create-size=2G
refused "flat delta" "a monolithic-flat image cannot be a delta link" \
        file=n.vmdk create=true create-type=monolithic-flat \
        create-parent=base.vmdk
refused "missing parent" "create-parent: nope.vmdk" \
        file=n.vmdk create=true create-parent=nope.vmdk
refused "smaller than the parent" "smaller than the parent base.vmdk" \
        file=n.vmdk create=true create-parent=base.vmdk create-size=1G
refused "parent outside the directory" "refusing a directory outside" \
        file=n.vmdk create=true create-parent=../outside.vmdk
refused "monolithic-sparse over 2 TiB" "too large for a monolithic-sparse" \
        file=n.vmdk create=true create-size=3T
refused "vmfs-sparse of 2 TiB" "too large for a vmfs-sparse" \
        file=n.vmdk create=true create-size=2T create-type=vmfs-sparse
refused "stream delta" "a stream-optimized image cannot be a delta link" \
        file=n.vmdk create=true create-type=stream-optimized \
        create-parent=base.vmdk
refused "compression level 0" "create-compression-level: 0 is not a level" \
        file=n.vmdk create=true create-size=1G create-compression-level=0
refused "compression level 10" "create-compression-level: 10 is not a level" \
        file=n.vmdk create=true create-size=1G create-compression-level=10
cd ..

# A creation that fails half-way (the first extent file exceeds a file
# size limit, after the descriptor was written) removes what it made.
mkdir halfway
cd halfway
if (trap '' XFSZ; ulimit -f $((1024 * 1024)); \
    serve file=h.vmdk create=true create-type=split-flat create-size=5G \
          --run true) 2> server.log; then
    fail "half-way failure: the server started"
elif grep -q 'ftruncate: h-f001.vmdk' server.log &&
     [ "$(ls)" = server.log ]; then
    pass "half-way failure: $(grep -o 'ftruncate: [^:]*: [^"]*' server.log | head -1); nothing left"
else
    fail "half-way failure: left $(ls)"; cat server.log
fi
cd ..

check_summary
