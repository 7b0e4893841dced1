/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* COWD extents: VMDK3 / ESX "vmfsSparse" redo logs.
 *
 * A 2048-byte header, then a grain directory of u32 sector numbers of
 * grain tables, each of exactly 4096 u32 grain sector numbers.  0 means
 * "not allocated here" at both levels; there is no zeroed-grain value.
 * Layout: VMware's cow_ext.h COWDisk_Header, as described by libvmdk's
 * format document and QEMU's VMDK3Header (VMDK-FORMAT.md b.5).
 *
 * Writes go through the shared grain-directory write path
 * (graindir-write.c); this file only sets it up, keeps the header's
 * next-free sector ahead of every allocation, and sets and clears the
 * header's uncleanShutdown field.
 */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "graindir.h"
#include "header.h"
#include "le.h"

#define COWD_GT_BYTES (COWD_GTES_PER_GT * 4)

struct cowd {
  struct cowd_header h;
  struct grain_dir dir;
  uint64_t capacity_bytes;
  /* Parent name (child redo logs only); "" if none.  parent_bad if the
   * name is not NUL-terminated: an error only when someone asks.
   */
  char parent[COWD_PARENT_NAME_LEN];
  bool parent_bad;
  char ro_reason[200];          /* why open_rw refused, if it did */
};

static int
cowd_decode (const struct grain_dir *d, uint64_t gte, uint64_t gt_index,
             uint32_t gte_index, enum grain_kind *kind,
             uint64_t *file_offset)
{
  uint64_t file_size;

  if (gte == 0) {
    *kind = GRAIN_UNALLOC;
    return 0;
  }
  file_size = grain_dir_data_limit (d, gt_index);
  /* gte is a u32 sector number, so the product cannot overflow. */
  if (gte < COWD_HEADER_SECTORS || gte * SECTOR >= file_size)
    return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                       " = sector %" PRIu64 " points %s (file size %"
                       PRIu64 " bytes): corrupt image",
                       d->io->name, gt_index, gte_index, gte,
                       gte < COWD_HEADER_SECTORS ? "into the header"
                                                 : "outside the file",
                       file_size);
  *kind = GRAIN_DATA;
  *file_offset = gte * SECTOR;
  return 0;
}

/* Read the grain directory entries that cover the capacity (extra
 * entries the header may declare are never used, so not read).
 */
static int
load_gd (struct cowd *c, const char *name)
{
  struct grain_dir *d = &c->dir;
  uint64_t gd_start = (uint64_t) c->h.gd_sector * SECTOR;
  uint64_t gd_bytes, i;
  unsigned char *raw;

  d->nr_gts = c->h.nr_gts;
  gd_bytes = d->nr_gts * 4;     /* nr_gts < 2^32 */
  /* This also caps memory: the directory must fit in the file. */
  if (gd_start > d->file_size || gd_bytes > d->file_size - gd_start)
    return vmdk_error (EINVAL, "%s: COWD grain directory at sector %" PRIu32
                       " (%" PRIu64 " entries) lies beyond the end of the "
                       "file (%" PRIu64 " bytes)", name, c->h.gd_sector,
                       d->nr_gts, d->file_size);

  raw = malloc (gd_bytes);      /* nr_gts >= 1 as capacity > 0 */
  d->gt_offsets = calloc (d->nr_gts, sizeof (uint64_t));
  if (raw == NULL || d->gt_offsets == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: grain directory: %m");
  }
  if (io_pread_full (d->io, raw, gd_bytes, gd_start,
                     "grain directory") == -1) {
    free (raw);
    return -1;
  }
  for (i = 0; i < d->nr_gts; ++i) {
    uint32_t sector = get_le32 (raw + i * 4);

    /* grain_dir_init only knows about a one-sector header.  A table
     * inside ours is corrupt: reads of its range fail with EIO.
     */
    if (sector != 0 && sector < COWD_HEADER_SECTORS) {
      vmdk_debug (VMDK_DEBUG_OPEN, "%s: grain directory entry %" PRIu64
                  " points at sector %" PRIu32 ", inside the header: "
                  "reads of its range will fail", name, i, sector);
      d->gt_offsets[i] = GD_BAD;
    }
    else
      d->gt_offsets[i] = (uint64_t) sector * SECTOR;
  }
  free (raw);
  return grain_dir_init (d, name);
}

static int
cowd_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
             struct run *run)
{
  struct cowd *c = e->priv;

  /* The descriptor line may describe more than the header's capacity:
   * the rest is unallocated, whatever stale table entries say.
   */
  if (offset >= c->capacity_bytes) {
    run->kind = RUN_UNALLOC;
    run->length = max;
    return 0;
  }
  max = MIN (max, c->capacity_bytes - offset);
  return grain_dir_lookup (&c->dir, offset, max, run);
}

static void
cowd_free (struct extent *e)
{
  struct cowd *c = e->priv;

  if (c) {
    grain_dir_free (&c->dir);
    free (c);
  }
}

/* Writing. */

static struct cowd *
dir_cowd (struct grain_dir *d)
{
  return (struct cowd *) ((char *) d - offsetof (struct cowd, dir));
}

/* The header's next free sector must stay at or past the end of every
 * grain and table that a table entry on disk can point at: VMware
 * allocates from it, so a value smaller than our allocations would let
 * a later writer hand out our grains again (two entries sharing one
 * grain, silent corruption).  A larger value only leaks space.
 *
 * So it is written before any table entry that needs it can reach the
 * disk: grain_dir_flush_locked calls this after extending the file and
 * before the fdatasync that precedes the table writes.  After a crash
 * at any instant the durable value therefore covers every durable
 * entry: either the sync completed (new value durable, entries perhaps
 * not: leaked grains), or it did not (no new entry was written yet).
 * Writing it with or after the tables instead would leave a window
 * where new entries are durable and the old, smaller value is too.
 *
 * It is rewritten at every flush that has table changes, not only when
 * it grows: after a failed sync the kernel may have dropped the page.
 */
static int
cowd_write_next_free (struct grain_dir *d)
{
  struct cowd *c = dir_cowd (d);
  uint64_t sectors = div_round_up (d->next_free, SECTOR);
  unsigned char buf[4];

  /* next_free starts at or past the old value and only grows.
   * max_offset keeps every allocation at or below 2^32 - 1 sectors;
   * next_free is larger only if it started there (file or header at
   * the limit already), and then nothing can be allocated: the field
   * keeps its largest value.
   */
  assert (sectors >= c->h.next_free);
  sectors = MIN (sectors, (uint64_t) UINT32_MAX);
  put_le32 (buf, sectors);
  if (d->io->ops->pwrite (d->io, buf, sizeof buf, COWD_OFF_NEXT_FREE) == -1)
    return -1;
  if (sectors != c->h.next_free)
    vmdk_debug (VMDK_DEBUG_GRAINS, "%s: COWD next free sector %" PRIu32
                " -> %" PRIu64, d->io->name, c->h.next_free, sectors);
  c->h.next_free = sectors;
  return 0;
}

/* uncleanShutdown (u32 at byte 1648): set while open for writing, like
 * the hosted sparse header's, cleared on a clean close.
 */
static int
set_unclean (struct cowd *c, uint32_t value)
{
  struct vmdk_io *io = c->dir.io;
  unsigned char buf[4];

  put_le32 (buf, value);
  if (io->ops->pwrite (io, buf, sizeof buf, COWD_OFF_UNCLEAN) == -1 ||
      io->ops->flush (io) == -1)
    return -1;
  return 0;
}

static int
cowd_begin_rw (struct extent *e)
{
  return set_unclean (e->priv, 1);
}

static int
cowd_close_rw (struct extent *e)
{
  if (grain_dir_flush (e) == -1)
    return -1;
  return set_unclean (e->priv, 0);
}

/* Refuse to write to an image whose metadata is not consistent: the
 * appending allocator must never hand out space that something already
 * uses.  The reason is formatted into c->ro_reason.
 */
#define REFUSE(...) \
  do { \
    snprintf (c->ro_reason, sizeof c->ro_reason, __VA_ARGS__); \
    *reason = c->ro_reason; \
    return 1; \
  } while (0)

static int
cowd_open_rw (struct extent *e, const char **reason)
{
  struct cowd *c = e->priv;
  struct grain_dir *d = &c->dir;
  /* Sector numbers are u32 and gd_entries too: no overflow below. */
  uint64_t gd_start = (uint64_t) c->h.gd_sector * SECTOR;
  uint64_t gd_bytes = div_round_up ((uint64_t) c->h.gd_entries * 4,
                                    SECTOR) * SECTOR;
  uint64_t meta_end = gd_start + gd_bytes;
  uint64_t next_free = (uint64_t) c->h.next_free * SECTOR;
  uint64_t t;

  /* A longer descriptor line than the header's capacity: what lies
   * past the capacity reads as unallocated, so a write there would be
   * lost.
   */
  if (e->length > c->capacity_bytes)
    REFUSE ("the extent line describes %" PRIu64 " sectors, more than the "
            "COWD header's capacity of %" PRIu32 " sectors",
            e->length / SECTOR, c->h.capacity);
  /* The grain directory as declared (all gd_entries of it, even those
   * beyond the capacity) is metadata: nothing may be allocated there.
   */
  if (next_free < meta_end)
    REFUSE ("the COWD header's next free sector (%" PRIu32 ") lies inside "
            "the header or the grain directory, which end at sector %"
            PRIu64, c->h.next_free, meta_end / SECTOR);
  for (t = 0; t < d->nr_gts; ++t) {
    uint64_t off = d->gt_offsets[t];

    if (off == 0)
      continue;
    if (off == GD_BAD)
      REFUSE ("grain directory entry %" PRIu64 " points into the header or "
              "outside the file", t);
    if (off < meta_end && off + COWD_GT_BYTES > gd_start)
      REFUSE ("grain table %" PRIu64 " (sector %" PRIu64 ") overlaps the "
              "grain directory", t, off / SECTOR);
    if (off + COWD_GT_BYTES > next_free)
      REFUSE ("grain table %" PRIu64 " (sectors %" PRIu64 "-%" PRIu64 ") "
              "ends past the COWD header's next free sector (%" PRIu32 ")",
              t, off / SECTOR, (off + COWD_GT_BYTES) / SECTOR - 1,
              c->h.next_free);
  }

  d->table_state = calloc (d->nr_gts, 1);   /* nr_gts >= 1 */
  if (d->table_state == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  d->gd_start = gd_start;
  d->rgd_start = 0;             /* COWD has no redundant directory */
  d->rgt_offsets = NULL;
  /* Allocation appends, like QEMU's (which starts at the end of the
   * file rounded up to a grain), but never below the header's next
   * free sector: VMware says "file length is real truth", yet a file
   * shorter than that field may have lost its tail, and a grain table
   * entry may still point there; allocating from the field keeps new
   * grains clear of any such entry.  Grains are aligned to the grain
   * size (so grain I/O stays aligned on the host), tables to a sector.
   */
  d->grain_align = d->grain_bytes;
  d->next_free = div_round_up (MAX (d->file_size, next_free),
                               d->grain_align) * d->grain_align;
  /* Grain-table entries are u32 sectors, and so is the next free
   * sector in the header: every allocation must end at or below
   * 2^32 - 1 sectors so that the end still fits the field.
   */
  d->max_offset = (uint64_t) UINT32_MAX * SECTOR;
  /* Data grains lie past the header and the grain directory (every
   * known writer puts the directory right after the header); an entry
   * pointing lower is corrupt and never written through.
   */
  d->first_data = meta_end;
  /* No zeroed-grain entry: whole grains are zeroed by deallocating
   * them (no parent, MAY_TRIM) or by writing zeroes, and trim
   * deallocates only where no parent would show through.
   */
  d->zeroed_grain_value = 0;
  d->before_tables = cowd_write_next_free;
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD writable: allocations from byte %"
              PRIu64, d->io->name, d->next_free);
  return 0;
}

static const struct extent_ops cowd_ops = {
  .kind = "COWD",
  .lookup = cowd_lookup,
  .free = cowd_free,
  .open_rw = cowd_open_rw,
  .pwrite = grain_dir_pwrite,
  .zero = grain_dir_zero,
  .trim = grain_dir_trim,
  .flush = grain_dir_flush,
  .begin_rw = cowd_begin_rw,
  .close_rw = cowd_close_rw,
};

int
cowd_parent_name (struct extent *e, char *buf, size_t len)
{
  const struct cowd *c = e->priv;
  size_t n;

  if (e->ops != &cowd_ops)
    return vmdk_error (EINVAL, "extent \"%s\" is not a COWD extent",
                       e->line ? e->line : "");
  if (c->parent_bad)
    return vmdk_error (EINVAL, "%s: COWD parent file name is not "
                       "NUL-terminated within its %d bytes: corrupt header",
                       e->io->name, COWD_PARENT_NAME_LEN);
  n = strlen (c->parent);
  if (n >= len)
    return vmdk_error (ERANGE, "%s: COWD parent file name (%zu bytes) does "
                       "not fit the caller's %zu-byte buffer",
                       e->io->name, n, len);
  memcpy (buf, c->parent, n + 1);
  return 0;
}

/* A child's parent name lives where a root disk keeps its geometry. */
static void
read_parent_name (struct cowd *c, const unsigned char *buf, const char *name)
{
  const unsigned char *p = buf + COWD_OFF_PARENT;

  if (c->h.flags & COWD_FLAG_ROOT)
    return;
  if (memchr (p, '\0', COWD_PARENT_NAME_LEN) == NULL) {
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD parent file name is not "
                "NUL-terminated", name);
    c->parent_bad = true;
    return;
  }
  memcpy (c->parent, p, COWD_PARENT_NAME_LEN);
}

int
extent_cowd_init (struct extent *e, struct gtcache *cache)
{
  const char *name = e->io->name;
  unsigned char buf[COWD_HEADER_SIZE];
  uint64_t file_sectors;
  struct cowd *c;

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  e->priv = c;
  e->ops = &cowd_ops;
  e->dir = &c->dir;

  if (e->io->ops->get_size (e->io, &c->dir.file_size) == -1)
    return -1;
  if (c->dir.file_size < COWD_HEADER_SIZE)
    return vmdk_error (EINVAL, "%s: COWD header is truncated: the file is %"
                       PRIu64 " bytes, the header %d", name,
                       c->dir.file_size, COWD_HEADER_SIZE);
  if (io_pread_full (e->io, buf, sizeof buf, 0, "COWD header") == -1 ||
      cowd_header_decode (buf, &c->h, name) == -1)
    return -1;
  read_parent_name (c, buf, name);

  /* "Next free sector in COW file, but file length is real truth"
   * (VMware), and QEMU never updates it: for reading, only worth a
   * note (writing takes it into account, see cowd_open_rw).
   */
  file_sectors = c->dir.file_size / SECTOR;
  if (c->h.next_free > file_sectors)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD next free sector %" PRIu32
                " is past the end of the file (%" PRIu64 " sectors): "
                "truncated file?", name, c->h.next_free, file_sectors);
  if (c->h.flags & ~COWD_KNOWN_FLAGS)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD unknown flags 0x%" PRIx32
                " (ignored)", name, c->h.flags & ~COWD_KNOWN_FLAGS);

  c->capacity_bytes = (uint64_t) c->h.capacity * SECTOR;
  e->grain_size = c->h.grain_size * SECTOR;
  c->dir.cache = cache;
  c->dir.io = e->io;
  c->dir.gtes_per_gt = COWD_GTES_PER_GT;
  c->dir.gte_size = 4;
  c->dir.grain_bytes = e->grain_size;
  c->dir.decode = cowd_decode;
  c->dir.opaque = c;
  if (load_gd (c, name) == -1)
    return -1;

  vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD v%" PRIu32 " flags 0x%" PRIx32
              " capacity %" PRIu32 " grain %" PRIu32 " gd@%" PRIu32
              " entries %" PRIu32 " (%" PRIu64 " used) next free %" PRIu32
              " generation %" PRIu32 "%s%s", name, c->h.version,
              c->h.flags, c->h.capacity, c->h.grain_size, c->h.gd_sector,
              c->h.gd_entries, c->h.nr_gts, c->h.next_free,
              get_le32 (buf + COWD_OFF_GENERATION),
              c->h.flags & COWD_FLAG_INCONSISTENT
                ? " (inconsistent flag set)" : "",
              get_le32 (buf + COWD_OFF_UNCLEAN)
                ? " (unclean shutdown flag set)" : "");
  if (!(c->h.flags & COWD_FLAG_ROOT))
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD child of \"%s\" (parent "
                "generation %" PRIu32 ")", name, c->parent,
                get_le32 (buf + COWD_OFF_PARENT_GEN));
  return 0;
}
