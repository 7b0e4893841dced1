/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* seSparse extents (ESXi 6.5+ snapshots, "SESPARSE" extent lines).
 *
 * The format is not officially documented, so every header field is
 * checked strictly (as QEMU does) and anything unexpected is refused.
 * Layout, all integers u64 little-endian, offsets and sizes in sectors:
 *
 *   constant header (sector 0): magic, version, capacity, grain size,
 *     grain table size, flags, 4 reserved, then offset/size pairs for
 *     the regions below, then zero padding;
 *   volatile header: magic, free GT number, next txn seq, replay flag;
 *   journal header, journal, free bitmap, backmap: not needed to read;
 *   grain directory: u64 per 16 MiB, 0 or 0x10000000'xxxxxxxx where
 *     x is the index of a 64-sector grain table in the GT region;
 *   grain tables: 4096 u64 entries, the top nibble is the type;
 *   grains: 4 KiB each, numbered from the start of the grains region.
 *
 * Read-only: there is no write path for seSparse (QEMU has none
 * either); an image with a writable seSparse extent opens read-only.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "checked.h"
#include "error.h"
#include "graindir.h"
#include "header.h"
#include "le.h"

#define SES_CONST_MAGIC     UINT64_C (0x00000000CAFEBABE)
#define SES_VOLATILE_MAGIC  UINT64_C (0x00000000CAFECAFE)
#define SES_VERSION         UINT64_C (0x0000000200000001)
#define SES_GRAIN_SECTORS   8
#define SES_GRAIN_BYTES     (SES_GRAIN_SECTORS * SECTOR)
#define SES_GT_SECTORS      64
#define SES_GTES_PER_GT     (SES_GT_SECTORS * SECTOR / 8)
#define SES_GT_COVERAGE     ((uint64_t) SES_GTES_PER_GT * SES_GRAIN_SECTORS)
#define SES_GDE_TAG         UINT64_C (0x10000000)

/* Constant header field offsets (bytes). */
#define CH_MAGIC            0
#define CH_VERSION          8
#define CH_CAPACITY         16
#define CH_GRAIN_SIZE       24
#define CH_GT_SIZE          32
#define CH_FLAGS            40
#define CH_RESERVED         48      /* reserved1-4 */
#define CH_REGIONS          80      /* NR_REGIONS offset/size pairs */
#define CH_PAD              208     /* to the end of the sector */

/* Volatile header field offsets (bytes). */
#define VH_MAGIC            0
#define VH_FREE_GT_NUMBER   8
#define VH_NEXT_TXN_SEQ     16
#define VH_REPLAY_JOURNAL   24
#define VH_PAD              32

enum region {
  R_VOLATILE_HEADER, R_JOURNAL_HEADER, R_JOURNAL, R_GRAIN_DIR,
  R_GRAIN_TABLES, R_FREE_BITMAP, R_BACKMAP, R_GRAINS, NR_REGIONS
};

static const char *const region_name[NR_REGIONS] = {
  "volatile_header", "journal_header", "journal", "grain_dir",
  "grain_tables", "free_bitmap", "backmap", "grains",
};

struct sesparse {
  uint64_t capacity;                    /* sectors */
  uint64_t offset[NR_REGIONS];          /* sectors */
  uint64_t size[NR_REGIONS];            /* sectors */
  struct grain_dir dir;
};

/* Check one u64 header field against the only value we accept; hex
 * for magics and bit fields, decimal for sizes.
 */
static int
expect (const char *name, const char *header, const char *field,
        uint64_t value, uint64_t expected, int errnum, bool hex)
{
  const char *unsup = errnum == ENOTSUP ? " (unsupported)" : "";

  if (value == expected)
    return 0;
  if (hex)
    return vmdk_error (errnum, "%s: seSparse %s header: %s is 0x%016" PRIx64
                       ", expected 0x%016" PRIx64 "%s", name, header, field,
                       value, expected, unsup);
  return vmdk_error (errnum, "%s: seSparse %s header: %s is %" PRIu64
                     ", expected %" PRIu64 "%s", name, header, field,
                     value, expected, unsup);
}

static int
expect_zero_pad (const char *name, const char *header,
                 const unsigned char *buf, size_t from)
{
  size_t i;

  for (i = from; i < SECTOR; ++i)
    if (buf[i] != 0)
      return vmdk_error (ENOTSUP, "%s: seSparse %s header: padding byte at "
                         "offset %zu is 0x%02x, expected 0 (unsupported)",
                         name, header, i, buf[i]);
  return 0;
}

static int
check_const_header (struct sesparse *s, const unsigned char *buf,
                    const char *name)
{
  static const char *const reserved[] = {
    "reserved1", "reserved2", "reserved3", "reserved4"
  };
  int i;

  if (expect (name, "constant", "magic", get_le64 (buf + CH_MAGIC),
              SES_CONST_MAGIC, EINVAL, true) == -1 ||
      expect (name, "constant", "version", get_le64 (buf + CH_VERSION),
              SES_VERSION, ENOTSUP, true) == -1 ||
      expect (name, "constant", "grain_size (sectors)",
              get_le64 (buf + CH_GRAIN_SIZE), SES_GRAIN_SECTORS,
              ENOTSUP, false) == -1 ||
      expect (name, "constant", "grain_table_size (sectors)",
              get_le64 (buf + CH_GT_SIZE), SES_GT_SECTORS,
              ENOTSUP, false) == -1 ||
      expect (name, "constant", "flags", get_le64 (buf + CH_FLAGS), 0,
              ENOTSUP, true) == -1)
    return -1;
  for (i = 0; i < 4; ++i)
    if (expect (name, "constant", reserved[i],
                get_le64 (buf + CH_RESERVED + i * 8), 0, ENOTSUP,
                true) == -1)
      return -1;
  if (expect_zero_pad (name, "constant", buf, CH_PAD) == -1)
    return -1;

  s->capacity = get_le64 (buf + CH_CAPACITY);
  for (i = 0; i < NR_REGIONS; ++i) {
    s->offset[i] = get_le64 (buf + CH_REGIONS + i * 16);
    s->size[i] = get_le64 (buf + CH_REGIONS + i * 16 + 8);
  }
  return 0;
}

/* Every region must lie inside the file, except that the grains region
 * is sized for the whole capacity while the file only holds the grains
 * allocated so far (ESXi: grains_size 1048576 sectors in a 45064-sector
 * file), so only its start must be inside; each grain is checked on use.
 * The regions we read must not overlap the constant header.
 */
static int
check_regions (const struct sesparse *s, uint64_t file_size, const char *name)
{
  uint64_t file_sectors = file_size / SECTOR;
  int i;

  for (i = 0; i < NR_REGIONS; ++i) {
    uint64_t off = s->offset[i], size = s->size[i];

    if (i == R_GRAINS) {
      if (off > file_sectors)
        return vmdk_error (EINVAL, "%s: seSparse constant header: "
                           "grains_offset %" PRIu64 " starts beyond the end "
                           "of the file (%" PRIu64 " sectors)", name, off,
                           file_sectors);
      if (size > UINT64_MAX / SECTOR - off)
        return vmdk_error (EINVAL, "%s: seSparse constant header: "
                           "grains_offset %" PRIu64 " + grains_size %" PRIu64
                           " sectors overflows", name, off, size);
    }
    else if (off > file_sectors || size > file_sectors - off)
      return vmdk_error (EINVAL, "%s: seSparse constant header: %s_offset %"
                         PRIu64 " + %s_size %" PRIu64 " sectors lies beyond "
                         "the end of the file (%" PRIu64 " sectors)", name,
                         region_name[i], off, region_name[i], size,
                         file_sectors);
    if (off == 0 && (i == R_VOLATILE_HEADER || i == R_GRAIN_DIR ||
                     i == R_GRAIN_TABLES || i == R_GRAINS))
      return vmdk_error (EINVAL, "%s: seSparse constant header: %s_offset "
                         "is 0, overlapping the constant header", name,
                         region_name[i]);
  }
  if (s->size[R_VOLATILE_HEADER] == 0)
    return vmdk_error (EINVAL, "%s: seSparse constant header: "
                       "volatile_header_size is 0, expected at least 1 "
                       "sector", name);
  return 0;
}

static int
check_volatile_header (const struct sesparse *s, struct vmdk_io *io)
{
  const char *name = io->name;
  unsigned char buf[SECTOR];

  if (io_pread_full (io, buf, sizeof buf,
                     s->offset[R_VOLATILE_HEADER] * SECTOR,
                     "seSparse volatile header") == -1)
    return -1;
  if (expect (name, "volatile", "magic", get_le64 (buf + VH_MAGIC),
              SES_VOLATILE_MAGIC, EINVAL, true) == -1)
    return -1;
  if (get_le64 (buf + VH_REPLAY_JOURNAL) != 0)
    return vmdk_error (ENOTSUP, "%s: seSparse volatile header: "
                       "replay_journal is %" PRIu64 ", expected 0: the "
                       "journal needs replay (not closed cleanly?), which "
                       "is not supported", name,
                       get_le64 (buf + VH_REPLAY_JOURNAL));
  if (expect_zero_pad (name, "volatile", buf, VH_PAD) == -1)
    return -1;
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: seSparse volatile header: free_gt_number %"
              PRIu64 " next_txn_seq_number %" PRIu64, name,
              get_le64 (buf + VH_FREE_GT_NUMBER),
              get_le64 (buf + VH_NEXT_TXN_SEQ));
  return 0;
}

/* Decode grain directory entry gde into the byte offset of its grain
 * table (0: none).  Returns NULL, or why the entry is corrupt.
 */
static const char *
gde_decode (const struct sesparse *s, uint64_t gde, uint64_t *gt_offset)
{
  uint64_t index = gde & UINT32_MAX;

  *gt_offset = 0;
  if (gde == 0)
    return NULL;
  if (gde >> 32 != SES_GDE_TAG)
    return "top 32 bits are not 0x10000000";
  if (index >= s->size[R_GRAIN_TABLES] / SES_GT_SECTORS)
    return "grain table index lies beyond the grain_tables region";
  /* Inside the region, which check_regions put inside the file. */
  *gt_offset = (s->offset[R_GRAIN_TABLES] + index * SES_GT_SECTORS) * SECTOR;
  return NULL;
}

static int
load_gd (struct sesparse *s, const char *name)
{
  struct grain_dir *d = &s->dir;
  uint64_t gd_bytes, i, gde;
  unsigned char *raw;
  const char *why;

  /* gd_bytes <= grain_dir_size sectors, inside the file: this bounds
   * the allocation by the file size.
   */
  d->nr_gts = div_round_up (s->capacity, SES_GT_COVERAGE);
  if (d->nr_gts > s->size[R_GRAIN_DIR] * (SECTOR / 8))
    return vmdk_error (EINVAL, "%s: seSparse constant header: grain_dir_size "
                       "%" PRIu64 " sectors holds %" PRIu64 " entries, but "
                       "capacity %" PRIu64 " sectors needs %" PRIu64, name,
                       s->size[R_GRAIN_DIR],
                       s->size[R_GRAIN_DIR] * (SECTOR / 8), s->capacity,
                       d->nr_gts);
  gd_bytes = d->nr_gts * 8;

  raw = malloc (gd_bytes ? gd_bytes : 1);
  d->gt_offsets = calloc (d->nr_gts ? d->nr_gts : 1, sizeof (uint64_t));
  if (raw == NULL || d->gt_offsets == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: grain directory: %m");
  }
  if (io_pread_full (d->io, raw, gd_bytes, s->offset[R_GRAIN_DIR] * SECTOR,
                     "grain directory") == -1) {
    free (raw);
    return -1;
  }
  for (i = 0; i < d->nr_gts; ++i) {
    gde = get_le64 (raw + i * 8);
    why = gde_decode (s, gde, &d->gt_offsets[i]);
    if (why) {
      /* Like QEMU: only reads of this entry's range fail. */
      vmdk_debug (VMDK_DEBUG_OPEN, "%s: grain directory entry %" PRIu64
                  " = 0x%016" PRIx64 ": %s: reads of its range will fail",
                  name, i, gde, why);
      d->gt_offsets[i] = GD_BAD;
    }
  }
  free (raw);
  return grain_dir_init (d, name);
}

static int
sesparse_decode (const struct grain_dir *d, uint64_t gte, uint64_t gt_index,
                 uint32_t gte_index, enum grain_kind *kind,
                 uint64_t *file_offset)
{
  const struct sesparse *s = d->opaque;
  uint64_t cluster, off;

  switch (gte >> 60) {
  case 0x0:
    if (gte != 0)
      break;
    *kind = GRAIN_UNALLOC;
    return 0;
  case 0x1:
    /* SCSI UNMAP'd in this link.  Reads as zeroes (as in QEMU); falling
     * through to the parent would resurrect data the guest discarded.
     */
  case 0x2:
    *kind = GRAIN_ZERO;
    return 0;
  case 0x3:
    cluster = ((gte & UINT64_C (0x0FFF000000000000)) >> 48) |
              ((gte & UINT64_C (0x0000FFFFFFFFFFFF)) << 12);
    /* check_regions made (grains_offset + grains_size) * SECTOR fit. */
    if (cluster >= s->size[R_GRAINS] / SES_GRAIN_SECTORS)
      return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                         " = 0x%016" PRIx64 ": grain %" PRIu64 " lies "
                         "outside the grains region (%" PRIu64 " sectors): "
                         "corrupt image", d->io->name, gt_index, gte_index,
                         gte, cluster, s->size[R_GRAINS]);
    off = (s->offset[R_GRAINS] + cluster * SES_GRAIN_SECTORS) * SECTOR;
    if (off > d->file_size || SES_GRAIN_BYTES > d->file_size - off)
      return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                         " = 0x%016" PRIx64 ": grain %" PRIu64 " at byte %"
                         PRIu64 " lies beyond the end of the file (%" PRIu64
                         " bytes): corrupt or truncated image", d->io->name,
                         gt_index, gte_index, gte, cluster, off,
                         d->file_size);
    *kind = GRAIN_DATA;
    *file_offset = off;
    return 0;
  }
  return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                     " = 0x%016" PRIx64 ": invalid entry type 0x%" PRIx64
                     "%s: corrupt image", d->io->name, gt_index, gte_index,
                     gte, gte >> 60,
                     gte >> 60 == 0 ? " (unallocated, but not all zero)" : "");
}

/* A grain directory entry found corrupt at open: re-read it (error path
 * only) to say why.
 */
static int
bad_gde_error (const struct sesparse *s, uint64_t gt_index)
{
  struct vmdk_io *io = s->dir.io;
  unsigned char buf[8];
  uint64_t gde, gt_offset;
  const char *why = NULL;

  if (io_pread_full (io, buf, sizeof buf,
                     s->offset[R_GRAIN_DIR] * SECTOR + gt_index * 8,
                     "grain directory entry") == -1)
    return -1;
  gde = get_le64 (buf);
  why = gde_decode (s, gde, &gt_offset);
  return vmdk_error (EIO, "%s: grain directory entry %" PRIu64 " = 0x%016"
                     PRIx64 ": %s: corrupt image", io->name, gt_index, gde,
                     why ? why : "invalid");
}

static int
sesparse_lookup (struct extent *e, uint64_t offset, uint64_t max,
                 bool for_map, struct run *run)
{
  struct sesparse *s = e->priv;
  uint64_t gt_index = offset / (SES_GT_COVERAGE * SECTOR);

  if (gt_index < s->dir.nr_gts && s->dir.gt_offsets[gt_index] == GD_BAD)
    return bad_gde_error (s, gt_index);
  return grain_dir_lookup (&s->dir, offset, max, run);
}

static void
sesparse_free (struct extent *e)
{
  struct sesparse *s = e->priv;

  if (s) {
    grain_dir_free (&s->dir);
    free (s);
  }
}

/* Never writable: say why, so the image opens read-only with a reason. */
static int
sesparse_open_rw (struct extent *e, const char **reason)
{
  *reason = "seSparse extents are read-only (no write support for this "
    "undocumented format)";
  return 1;
}

static const struct extent_ops sesparse_ops = {
  .kind = "SESPARSE",
  .lookup = sesparse_lookup,
  .free = sesparse_free,
  .open_rw = sesparse_open_rw,
};

int
extent_sesparse_init (struct extent *e, struct gtcache *cache)
{
  const char *name = e->io->name;
  unsigned char buf[SECTOR];
  struct sesparse *s;

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  e->priv = s;
  e->ops = &sesparse_ops;
  e->dir = &s->dir;

  if (e->io->ops->get_size (e->io, &s->dir.file_size) == -1 ||
      io_pread_full (e->io, buf, sizeof buf, 0,
                     "seSparse constant header") == -1 ||
      check_const_header (s, buf, name) == -1 ||
      check_regions (s, s->dir.file_size, name) == -1 ||
      check_volatile_header (s, e->io) == -1)
    return -1;

  e->grain_size = SES_GRAIN_BYTES;
  s->dir.cache = cache;
  s->dir.io = e->io;
  s->dir.gtes_per_gt = SES_GTES_PER_GT;
  s->dir.gte_size = 8;
  s->dir.grain_bytes = SES_GRAIN_BYTES;
  s->dir.decode = sesparse_decode;
  s->dir.opaque = s;
  if (load_gd (s, name) == -1)
    return -1;

  vmdk_debug (VMDK_DEBUG_OPEN, "%s: seSparse capacity %" PRIu64
              " sectors, %" PRIu64 " grain tables, gd@%" PRIu64
              " gts@%" PRIu64 "+%" PRIu64 " grains@%" PRIu64 "+%" PRIu64,
              name, s->capacity, s->dir.nr_gts, s->offset[R_GRAIN_DIR],
              s->offset[R_GRAIN_TABLES], s->size[R_GRAIN_TABLES],
              s->offset[R_GRAINS], s->size[R_GRAINS]);
  return 0;
}
