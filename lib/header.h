/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* On-disk headers, decoded and validated: pure, bytes in, structs out. */

#ifndef VMDK_HEADER_H
#define VMDK_HEADER_H

#include <stdbool.h>
#include <stdint.h>

#define SECTOR 512

/* Hosted sparse extent header ("KDMV"), VMware Virtual Disk Format 1.1. */
#define SPARSE_MAGIC 0x564d444bU        /* "KDMV" little-endian */
#define SPARSE_HEADER_SIZE 512

#define SPARSE_FLAG_NL_DETECT   0x00001
#define SPARSE_FLAG_RGD         0x00002
#define SPARSE_FLAG_ZERO_GRAIN  0x00004
#define SPARSE_FLAG_COMPRESSED  0x10000
#define SPARSE_FLAG_MARKERS     0x20000
#define SPARSE_INCOMPAT_MASK    0xffff0000U
#define SPARSE_KNOWN_INCOMPAT   (SPARSE_FLAG_COMPRESSED | SPARSE_FLAG_MARKERS)

#define SPARSE_GD_AT_END UINT64_MAX
#define SPARSE_COMPRESS_NONE 0
#define SPARSE_COMPRESS_DEFLATE 1

/* Limits.  Grains up to 1 GiB (QEMU's limit); compressed grains are
 * further limited where buffers are allocated.
 */
#define SPARSE_MAX_GRAIN_SECTORS 0x200000
#define SPARSE_MAX_GTES_PER_GT 65536
/* 2^32 sectors: the most a 32-bit grain-table entry can address per
 * file, and so the largest sparse extent worth describing.  We allow a
 * little more virtual space since holes cost nothing, but cap it.
 */
#define SPARSE_MAX_CAPACITY (UINT64_C (1) << 40)

struct sparse_header {
  uint32_t version;
  uint32_t flags;
  uint64_t capacity;            /* sectors */
  uint64_t grain_size;          /* sectors */
  uint64_t desc_offset;         /* sectors */
  uint64_t desc_size;           /* sectors */
  uint32_t num_gtes_per_gt;
  uint64_t rgd_offset;          /* sectors */
  uint64_t gd_offset;           /* sectors, or SPARSE_GD_AT_END */
  uint64_t overhead;            /* sectors */
  uint8_t unclean_shutdown;
  uint16_t compress_algorithm;
};

/* Is this the sparse magic? */
extern bool sparse_header_is_magic (const unsigned char *buf);

/* Decode and validate everything that does not depend on the file
 * size.  name is used in messages.  Returns 0 or -1.
 */
extern int sparse_header_decode (const unsigned char buf[SPARSE_HEADER_SIZE],
                                 struct sparse_header *h, const char *name);

/* Encode a header (the newline-detector bytes are always written). */
extern void sparse_header_encode (const struct sparse_header *h,
                                  unsigned char buf[SPARSE_HEADER_SIZE]);

/* COWD header (VMDK3 / ESX vmfsSparse redo log), 2048 bytes: VMware's
 * COWDisk_Header as libvmdk and QEMU describe it (VMDK-FORMAT.md b.5).
 */
#define COWD_HEADER_SIZE 2048
#define COWD_VERSION 1
#define COWD_GTES_PER_GT 4096
/* The header occupies sectors 0-3: nothing may point inside it. */
#define COWD_HEADER_SECTORS (COWD_HEADER_SIZE / SECTOR)
/* Grains of 1 sector (ESX's default) up to 1 MiB, so one table covers
 * at most 4 GiB.  Larger grains are not known to exist.
 */
#define COWD_MAX_GRAIN_SECTORS 2048
#define COWD_PARENT_NAME_LEN 1024

/* Header offsets. */
#define COWD_OFF_VERSION     4
#define COWD_OFF_FLAGS       8
#define COWD_OFF_CAPACITY   12
#define COWD_OFF_GRAIN      16
#define COWD_OFF_GD         20
#define COWD_OFF_GD_ENTRIES 24
#define COWD_OFF_NEXT_FREE  28
#define COWD_OFF_PARENT     32    /* child only: parent file name[1024] */
#define COWD_OFF_PARENT_GEN 1056  /* child only: parent generation */
#define COWD_OFF_GENERATION 1060
#define COWD_OFF_UNCLEAN    1648

/* Flags (cow_ext.h).  ROOT says the union at offset 32 holds geometry,
 * not a parent name.
 */
#define COWD_FLAG_ROOT          0x01
#define COWD_FLAG_CHECKCAPABLE  0x02
#define COWD_FLAG_INCONSISTENT  0x04
#define COWD_KNOWN_FLAGS \
  (COWD_FLAG_ROOT | COWD_FLAG_CHECKCAPABLE | COWD_FLAG_INCONSISTENT)

struct cowd_header {
  uint32_t version;
  uint32_t flags;
  uint32_t capacity;            /* sectors */
  uint32_t grain_size;          /* sectors */
  uint32_t gd_sector;
  uint32_t gd_entries;
  uint32_t next_free;           /* sectors: allocations start here */
  uint64_t nr_gts;              /* tables needed to cover capacity */
};

/* Is this the COWD magic? */
extern bool cowd_is_magic (const unsigned char *buf);

/* Decode and validate the fields in the first 32 bytes: everything that
 * does not need the file size.  name is used in messages.
 */
extern int cowd_header_decode (const unsigned char *buf,
                               struct cowd_header *h, const char *name);

/* Capacity in sectors from a COWD header (first 512 bytes suffice). */
extern int cowd_capacity (const unsigned char *buf, uint64_t *sectors,
                          const char *name);

#endif /* VMDK_HEADER_H */
