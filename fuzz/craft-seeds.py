#!/usr/bin/env python3
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

"""Craft small VMDK seed inputs for the fuzzers.

    craft-seeds.py OUTDIR

writes OUTDIR/fuzz-image/*, OUTDIR/fuzz-header/* and
OUTDIR/fuzz-descriptor/*.  qemu-img only makes 64 KiB grains and 512
entries per grain table, so its images are large and every table looks
alike; these are tiny (grains of 1 to 8 sectors, a few entries per
table) so that the fuzzer spends its time in the interesting code, and
they cover what qemu-img cannot make: COWD, seSparse, ZERO / NOACCESS
extents, GD holes, GD_AT_END footers, markers, several files in one
input (see fuzz-image.c for the "#%FILE" marker format).

Written from shared/VMDK-FORMAT.md, independently of lib/.  Every seed
is deterministic.
"""

import os
import struct
import sys
import zlib

SECTOR = 512
MARKER = b"\n#%FILE "


def pad(b, n=SECTOR):
    return b + b"\0" * (-len(b) % n)


def sectors(nbytes):
    return (nbytes + SECTOR - 1) // SECTOR


def pattern(nbytes, seed):
    """Recognisable non-zero data, with some all-zero grains."""
    out = bytearray()
    i = 0
    while len(out) < nbytes:
        out += b"nbdkit-vmdk fuzz seed %d block %d\n" % (seed, i)
        i += 1
    return bytes(out[:nbytes])


def content(capacity_sectors, grain_sectors, seed, zero_every=3):
    """Virtual disk content: every zero_every-th grain is all zeroes."""
    gb = grain_sectors * SECTOR
    data = bytearray(pattern(capacity_sectors * SECTOR, seed))
    for g in range(0, (len(data) + gb - 1) // gb):
        if g % zero_every == 1:
            data[g * gb:(g + 1) * gb] = bytes(len(data[g * gb:(g + 1) * gb]))
    return bytes(data)


def descriptor(create_type, extents, cid=0x1234abcd, parent_cid=0xffffffff,
               parent_hint=None, ddb=True):
    lines = ["# Disk DescriptorFile", "version=1", 'encoding="UTF-8"',
             "CID=%08x" % cid, "parentCID=%08x" % parent_cid,
             'createType="%s"' % create_type]
    if parent_hint is not None:
        lines.append('parentFileNameHint="%s"' % parent_hint)
    lines += ["", "# Extent description"] + extents
    if ddb:
        lines += ["", "# The Disk Data Base", "#DDB", "",
                  'ddb.virtualHWVersion = "4"',
                  'ddb.geometry.cylinders = "2"',
                  'ddb.geometry.heads = "16"',
                  'ddb.geometry.sectors = "63"',
                  'ddb.adapterType = "ide"']
    return ("\n".join(lines) + "\n").encode()


def bundle(main, files):
    """The fuzz-image multi-file format: main file, then named files."""
    out = main
    for name, data in files:
        out += MARKER + name.encode() + b"\n" + data
    return out


# ----------------------------------------------------------------------
# Hosted sparse (KDMV)

NL_DETECT, RGD, ZERO_GRAIN = 0x1, 0x2, 0x4
COMPRESSED, MARKERS = 0x10000, 0x20000
GD_AT_END = 0xffffffffffffffff


def kdmv_header(version, flags, capacity, grain, desc_off, desc_size, gtes,
                rgd, gd, overhead, unclean=0, compress=0):
    h = b"KDMV" + struct.pack("<IIQQQQIQQQB", version, flags, capacity,
                              grain, desc_off, desc_size, gtes, rgd, gd,
                              overhead, unclean)
    h += b"\n \r\n" + struct.pack("<H", compress)
    return pad(h)


def sparse(capacity, grain, gtes, seed, version=1, flags=NL_DETECT | RGD,
           desc=None, zeroed=False, gd_holes=False, reverse=False,
           zero_every=3):
    """A plain (uncompressed) hosted sparse file."""
    data = content(capacity, grain, seed, zero_every)
    gb = grain * SECTOR
    nr_grains = (capacity + grain - 1) // grain
    nr_gts = (nr_grains + gtes - 1) // gtes
    gt_secs = sectors(gtes * 4)
    gd_secs = sectors(nr_gts * 4)
    if zeroed:
        flags |= ZERO_GRAIN
        version = max(version, 2)

    # Grain-table entries: 0 unallocated, 1 zeroed, else data (later).
    kinds = []
    for g in range(nr_grains):
        chunk = data[g * gb:(g + 1) * gb]
        if any(chunk):
            kinds.append("data")
        elif zeroed and g % 2 == 0:
            kinds.append("zero")
        else:
            kinds.append("unalloc")
    gt_used = [any(k != "unalloc" for k in kinds[t * gtes:(t + 1) * gtes])
               for t in range(nr_gts)]

    desc_off = 1 if desc else 0
    desc_secs = sectors(len(desc)) + 1 if desc else 0
    pos = 1 + desc_secs
    rgd_off = gd_off = 0
    if flags & RGD:
        rgd_off = pos
        pos += gd_secs
        rgt_offs = []
        for t in range(nr_gts):
            rgt_offs.append(pos if (gt_used[t] or not gd_holes) else 0)
            if rgt_offs[-1]:
                pos += gt_secs
    gd_off = pos
    pos += gd_secs
    gt_offs = []
    for t in range(nr_gts):
        gt_offs.append(pos if (gt_used[t] or not gd_holes) else 0)
        if gt_offs[-1]:
            pos += gt_secs
    overhead = (pos + grain - 1) // grain * grain

    gtes_val = [0] * (nr_gts * gtes)
    grain_order = [g for g in range(nr_grains) if kinds[g] == "data"]
    if reverse:
        grain_order.reverse()
    next_sec = overhead
    grains = bytearray()
    for g in grain_order:
        gtes_val[g] = next_sec
        grains += pad(data[g * gb:(g + 1) * gb], gb)
        next_sec += grain
    for g in range(nr_grains):
        if kinds[g] == "zero":
            gtes_val[g] = 1

    img = bytearray(overhead * SECTOR)
    img[0:SECTOR] = kdmv_header(version, flags, capacity, grain, desc_off,
                                desc_secs, gtes, rgd_off, gd_off, overhead)
    if desc:
        img[SECTOR:SECTOR + len(desc)] = desc

    def put_dir(dir_off, offs):
        for t, off in enumerate(offs):
            struct.pack_into("<I", img, dir_off * SECTOR + 4 * t, off)
            if off:
                for i in range(gtes):
                    struct.pack_into("<I", img, off * SECTOR + 4 * i,
                                     gtes_val[t * gtes + i])
    if flags & RGD:
        put_dir(rgd_off, rgt_offs)
    put_dir(gd_off, gt_offs)
    return bytes(img) + bytes(grains)


def stream(capacity, grain, gtes, seed, gd_at_end=True, desc=None,
           version=3, progress=False):
    """A streamOptimized file: compressed grains with markers."""
    data = content(capacity, grain, seed)
    gb = grain * SECTOR
    nr_grains = (capacity + grain - 1) // grain
    nr_gts = (nr_grains + gtes - 1) // gtes
    gt_secs = sectors(gtes * 4)
    gd_secs = sectors(nr_gts * 4)
    flags = NL_DETECT | COMPRESSED | MARKERS
    desc_secs = sectors(len(desc)) if desc else 0
    overhead = 1 + desc_secs

    body = bytearray()
    pos = overhead
    gte = [0] * (nr_gts * gtes)
    for g in range(nr_grains):
        chunk = data[g * gb:(g + 1) * gb]
        if not any(chunk):
            continue
        z = zlib.compress(chunk)
        gte[g] = pos
        m = pad(struct.pack("<QI", g * grain, len(z)) + z)
        body += m
        pos += len(m) // SECTOR
        if progress and g == 0:
            body += struct.pack("<QII", 0, 0, 4) + bytes(SECTOR - 16)
            pos += 1

    def meta_marker(nsec, mtype):
        return struct.pack("<QII", nsec, 0, mtype) + bytes(SECTOR - 16)

    gd = [0] * nr_gts
    for t in range(nr_gts):
        entries = gte[t * gtes:(t + 1) * gtes]
        if not any(entries):
            continue                    # GD hole, as VMware writes
        body += meta_marker(gt_secs, 1)
        pos += 1
        gd[t] = pos
        body += pad(struct.pack("<%dI" % gtes, *entries))
        pos += gt_secs
    body += meta_marker(gd_secs, 2)
    pos += 1
    gd_off = pos
    body += pad(struct.pack("<%dI" % nr_gts, *gd))
    pos += gd_secs

    hdr_gd = GD_AT_END if gd_at_end else gd_off
    head = kdmv_header(version, flags, capacity, grain, 1 if desc else 0,
                       desc_secs, gtes, 0, hdr_gd, overhead, compress=1)
    img = head + (pad(desc) if desc else b"") + bytes(body)
    footer = kdmv_header(version, flags, capacity, grain, 1 if desc else 0,
                         desc_secs, gtes, 0, gd_off, overhead, compress=1)
    img += meta_marker(1, 3) + footer + meta_marker(0, 0)
    return img


# ----------------------------------------------------------------------
# COWD (vmfsSparse / VMDK3)

def cowd(capacity, grain, seed, parent=None):
    gtes = 4096
    data = content(capacity, grain, seed)
    gb = grain * SECTOR
    nr_grains = (capacity + grain - 1) // grain
    nr_gts = (nr_grains + gtes - 1) // gtes
    gd_sec = 4
    gd_secs = sectors(nr_gts * 4)
    gt_secs = gtes * 4 // SECTOR
    pos = gd_sec + gd_secs
    gt_offs = []
    for t in range(nr_gts):
        gt_offs.append(pos)
        pos += gt_secs
    entries = [0] * (nr_gts * gtes)
    grains = bytearray()
    for g in range(nr_grains):
        chunk = data[g * gb:(g + 1) * gb]
        if any(chunk):
            entries[g] = pos
            grains += pad(chunk, gb)
            pos += grain
    flags = 0x3 if parent is None else 0x2
    hdr = bytearray(2048)
    struct.pack_into("<4sIIIIIII", hdr, 0, b"COWD", 1, flags, capacity,
                     grain, gd_sec, nr_gts, pos)
    if parent is None:
        struct.pack_into("<III", hdr, 32, 2, 16, 63)
    else:
        name = parent.encode()
        hdr[32:32 + len(name)] = name
        struct.pack_into("<I", hdr, 1056, 7)
    struct.pack_into("<I", hdr, 1060, 7)
    img = bytearray(bytes(hdr) + bytes((pos - 4) * SECTOR - len(grains)))
    for t, off in enumerate(gt_offs):
        struct.pack_into("<I", img, gd_sec * SECTOR + 4 * t, off)
        struct.pack_into("<%dI" % gtes, img, off * SECTOR,
                         *entries[t * gtes:(t + 1) * gtes])
    return bytes(img) + bytes(grains)


# ----------------------------------------------------------------------
# seSparse

def sesparse(capacity, seed):
    """An seSparse extent: every GT entry type, one GD hole (table 1)."""
    grain = 8
    gtes = 4096
    gb = grain * SECTOR
    nr_grains = (capacity + grain - 1) // grain
    nr_gts = (nr_grains + gtes - 1) // gtes
    data_grains = [0, 2, 3, 6, 7, 2 * gtes + 1, nr_grains - 1]
    # Regions (sectors): const 0, volatile 1, journal header 2,
    # journal 3, GD 4.., GTs, free bitmap, backmap, grains.
    gd_off, gd_size = 4, max(1, sectors(nr_gts * 8))
    gt_off = gd_off + gd_size
    gt_size = nr_gts * 64
    fb_off, fb_size = gt_off + gt_size, 1
    bm_off, bm_size = fb_off + 1, 1
    grains_off = bm_off + 1
    gtv = [0] * (nr_gts * gtes)
    grains = bytearray()
    cluster = 0
    # Allocate in reverse so that clusters are not in virtual order.
    for g in sorted(data_grains, reverse=True):
        c = cluster
        gtv[g] = (0x3 << 60) | ((c & 0xfff) << 48) | (c >> 12)
        grains += pad(pattern(gb, seed * 1000 + g), gb)
        cluster += 1
    for g in range(16):
        if g not in data_grains and g % 4 == 1:
            gtv[g] = 0x2 << 60          # zero
        elif g not in data_grains and g % 4 == 3:
            gtv[g] = 0x1 << 60          # scsi-unmapped
    const = struct.pack("<10Q", 0xCAFEBABE, 0x0000000200000001, capacity,
                        grain, 64, 0, 0, 0, 0, 0)
    const += struct.pack("<16Q", 1, 1, 2, 1, 3, 1, gd_off, gd_size,
                         gt_off, gt_size, fb_off, fb_size, bm_off, bm_size,
                         grains_off, nr_grains * grain)
    vol = struct.pack("<4Q", 0xCAFECAFE, nr_gts, 1, 0)
    img = bytearray(pad(const) + pad(vol) + bytes(2 * SECTOR))
    img += bytes(gd_size * SECTOR)
    gds = []
    for t in range(nr_gts):
        if t == 1 and not any(gtv[t * gtes:(t + 1) * gtes]):
            gds.append(0)
        else:
            gds.append((0x10000000 << 32) | t)
    struct.pack_into("<%dQ" % nr_gts, img, gd_off * SECTOR, *gds)
    for t in range(nr_gts):
        img += struct.pack("<%dQ" % gtes, *gtv[t * gtes:(t + 1) * gtes])
    img += bytes(2 * SECTOR) + bytes(grains)
    return bytes(img)


# ----------------------------------------------------------------------

def main():
    out = sys.argv[1]
    seeds = {"fuzz-image": {}, "fuzz-header": {}, "fuzz-descriptor": {}}

    def image(name, data):
        seeds["fuzz-image"][name] = data

    def header(name, data):
        seeds["fuzz-header"][name] = data[:SECTOR]

    def desc(name, data):
        seeds["fuzz-descriptor"][name] = data

    # Hosted sparse, no descriptor, several geometries.
    image("kdmv-g1-t4", sparse(64, 1, 4, 1))
    image("kdmv-g8-t16", sparse(256, 8, 16, 2))
    image("kdmv-g8-t16-reverse", sparse(256, 8, 16, 3, reverse=True))
    image("kdmv-g2-t8-gdholes", sparse(128, 2, 8, 4, gd_holes=True,
                                       flags=NL_DETECT, zero_every=2))
    image("kdmv-g4-t8-zeroed", sparse(96, 4, 8, 5, zeroed=True))
    image("kdmv-odd-capacity", sparse(77, 8, 4, 6))
    image("kdmv-v3-norgd", sparse(64, 8, 8, 7, version=3, flags=0))
    d = descriptor("monolithicSparse", ['RW 128 SPARSE "disk.vmdk"'])
    image("kdmv-embedded-desc", sparse(128, 4, 16, 8, desc=d))
    desc("monolithicSparse", d)

    # streamOptimized.
    ds = descriptor("streamOptimized", ['RW 256 SPARSE "disk.vmdk"'])
    image("stream-gd-at-end", stream(256, 8, 8, 9, desc=ds))
    image("stream-gd-in-header", stream(256, 8, 8, 10, desc=ds,
                                        gd_at_end=False))
    image("stream-progress-nodesc", stream(128, 4, 4, 11, progress=True))
    desc("streamOptimized", ds)

    # COWD, alone and under a vmfsSparse descriptor, and as a child.
    image("cowd-root", cowd(64, 1, 12))
    dc = descriptor("vmfsSparse", ['RW 64 VMFSSPARSE "d-delta.vmdk"'])
    image("cowd-descriptor", bundle(dc, [("d-delta.vmdk", cowd(64, 2, 13))]))
    desc("vmfsSparse", dc)

    # seSparse under its descriptor.
    dse = descriptor("seSparse", ['RW 65600 SESPARSE "s-sesparse.vmdk"'])
    image("sesparse", bundle(dse, [("s-sesparse.vmdk",
                                    sesparse(65600, 14))]))
    desc("seSparse", dse)

    # Flat, VMFS, ZERO and NOACCESS extents, split images.
    flat = content(64, 8, 15)
    df = descriptor("monolithicFlat", ['RW 64 FLAT "f-flat.vmdk" 0'])
    image("flat", bundle(df, [("f-flat.vmdk", flat)]))
    desc("monolithicFlat", df)
    dv = descriptor("vmfs", ['RW 64 VMFS "v-flat.vmdk"'])
    image("vmfs", bundle(dv, [("v-flat.vmdk", flat)]))
    dz = descriptor("custom", ["RW 2048 ZERO", "RDONLY 16 ZERO",
                               "NOACCESS 8 ZERO", "RW 4194304 ZERO"],
                    ddb=False)
    image("zero-extents", dz)
    desc("zero-extents", dz)
    dm = descriptor("twoGbMaxExtentSparse",
                    ['RW 64 SPARSE "m-s001.vmdk"',
                     'RW 32 FLAT "m-f002.vmdk" 16',
                     "RW 16 ZERO",
                     'RDONLY 64 SPARSE "m-s003.vmdk"',
                     'RW 64 VMFSSPARSE "m-s004.vmdk"'])
    image("mixed-extents", bundle(dm, [
        ("m-s001.vmdk", sparse(64, 1, 8, 16)),
        ("m-f002.vmdk", content(48, 8, 17)),
        ("m-s003.vmdk", stream(64, 8, 4, 18)),
        ("m-s004.vmdk", cowd(64, 1, 19)),
    ]))
    desc("mixed-extents", dm)

    # A chain: child descriptor -> sparse child -> parent.
    dp = descriptor("monolithicSparse", ['RW 128 SPARSE "base.vmdk"'],
                    cid=0xaaaa0001)
    dch = descriptor("monolithicSparse", ['RW 128 SPARSE "disk.vmdk"'],
                     cid=0xbbbb0002, parent_cid=0xaaaa0001,
                     parent_hint="base.vmdk")
    image("chain-sparse", bundle(
        sparse(128, 4, 8, 20, desc=dch, zero_every=2),
        [("base.vmdk", sparse(128, 4, 8, 21, desc=dp))]))
    desc("chain-child", dch)
    dcc = descriptor("vmfsSparse", ['RW 64 VMFSSPARSE "c-delta.vmdk"'],
                     cid=0xcccc0003, parent_cid=0xaaaa0001,
                     parent_hint="base.vmdk")
    image("chain-cowd", bundle(dcc, [
        ("c-delta.vmdk", cowd(64, 1, 22, parent="base.vmdk")),
        ("base.vmdk", sparse(64, 4, 8, 23, desc=descriptor(
            "monolithicSparse", ['RW 64 SPARSE "base.vmdk"'],
            cid=0xaaaa0001))),
    ]))

    for name, data in list(seeds["fuzz-image"].items()):
        if data[:4] in (b"KDMV", b"COWD"):
            header(name, data)
        elif data.startswith(b"# Disk"):
            for part in data.split(MARKER)[1:]:
                body = part.split(b"\n", 1)[1]
                if body[:4] in (b"KDMV", b"COWD") or \
                   body[:8] == struct.pack("<Q", 0xCAFEBABE):
                    header(name + "-" + part.split(b"\n", 1)[0].decode(),
                           body)
    # Footers are headers too.
    header("stream-footer", stream(256, 8, 8, 9, desc=ds)[-2 * SECTOR:])

    for target, files in seeds.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(out, target, "crafted-" + name),
                      "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
