#!/usr/bin/env python3
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

"""Write a monolithicSparse VMDK whose every grain is allocated, for
timing "vmdk check", which reads metadata only: the grain data is left
a hole of the host file (it reads as zeroes), so a 2 TiB image takes
about 257 MiB of metadata on disk and a few seconds to make.

    make-allocated.py FILE SIZE_GIB

Layout as qemu-img and VMware write it (VMDK-FORMAT.md b.1): header,
descriptor at sector 1 (20 sectors), redundant directory and its
tables, directory and its tables, grains from overHead on, in disk
order.  32-bit sector numbers cap a file at 2 TiB, so the last grains
of a 2 TiB disk (as many as the metadata takes) stay unallocated.
"""

import struct
import sys

SECTOR = 512
GRAIN = 128                     # sectors
GTES = 512


def main():
    path, gib = sys.argv[1], int(sys.argv[2])
    capacity = gib * 1024 * 1024 * 1024 // SECTOR
    nr_gts = -(-capacity // (GRAIN * GTES))
    gd_sectors = -(-nr_gts * 4 // SECTOR)
    gt_sectors = GTES * 4 // SECTOR
    rgd = 21
    gd = rgd + gd_sectors + nr_gts * gt_sectors
    overhead = gd + gd_sectors + nr_gts * gt_sectors
    overhead = -(-overhead // GRAIN) * GRAIN
    limit = (1 << 32)           # sectors a file can address
    grains = min(capacity // GRAIN, (limit - overhead) // GRAIN)

    desc = ('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
            'parentCID=ffffffff\ncreateType="monolithicSparse"\n\n'
            'RW %d SPARSE "%s"\n\n' % (capacity, path.split('/')[-1]))
    header = struct.pack('<4sIIQQQQIQQQB4sH', b'KDMV', 1, 3, capacity, GRAIN,
                         1, 20, GTES, rgd, gd, overhead, 0, b'\n \r\n', 0)
    with open(path, 'wb') as f:
        f.write(header.ljust(SECTOR, b'\0'))
        f.write(desc.encode().ljust(20 * SECTOR, b'\0'))
        for start in (rgd, gd):
            tables = start + gd_sectors
            f.seek(start * SECTOR)
            f.write(struct.pack('<%dI' % nr_gts,
                                *range(tables, tables + nr_gts * gt_sectors,
                                       gt_sectors)))
            f.seek(tables * SECTOR)
            for t in range(nr_gts):
                first = t * GTES
                n = max(0, min(GTES, grains - first))
                gtes = range(overhead + first * GRAIN,
                             overhead + (first + n) * GRAIN, GRAIN)
                f.write(struct.pack('<%dI' % GTES, *gtes, *([0] * (GTES - n))))
        f.truncate((overhead + grains * GRAIN) * SECTOR)


if __name__ == '__main__':
    main()
