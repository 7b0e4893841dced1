/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Hosted sparse extents ("KDMV"): monolithicSparse, twoGbMaxExtentSparse,
 * custom SPARSE extents, and opening the container of streamOptimized
 * images (whose operations are in extent-stream.c).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "extent-sparse.h"
#include "le.h"
#include "stream-write.h"

/* The grain directory is held in memory: cap it (4 Mi tables is 2 TiB
 * even with 512-byte grains and 512 entries per table).
 */
#define SPARSE_MAX_GTS (UINT64_C (4) << 20)

static int
sparse_decode (const struct grain_dir *d, uint64_t gte, uint64_t gt_index,
               uint32_t gte_index, enum grain_kind *kind,
               uint64_t *file_offset)
{
  const struct sparse *s = d->opaque;

  if (gte == 0) {
    *kind = GRAIN_UNALLOC;
    return 0;
  }
  if (gte == 1 && (s->h.flags & SPARSE_FLAG_ZERO_GRAIN)) {
    *kind = GRAIN_ZERO;
    return 0;
  }
  if (gte == 1)
    return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                       " = 1, a zeroed grain, but the header flags 0x%08"
                       PRIx32 " lack the zeroed-grain bit 0x4 (sector 1 "
                       "is metadata): corrupt image",
                       d->io->name, gt_index, gte_index, s->h.flags);
  /* Grains never overlap the header, and start inside the file. */
  if (gte * SECTOR >= grain_dir_data_limit (d, gt_index))
    return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                       " = %" PRIu64 " points outside the file (size %"
                       PRIu64 " bytes): corrupt image",
                       d->io->name, gt_index, gte_index, gte, d->file_size);
  *kind = (s->h.flags & SPARSE_FLAG_COMPRESSED) ? GRAIN_COMPRESSED
                                                 : GRAIN_DATA;
  *file_offset = gte * SECTOR;
  return 0;
}

static int
load_gd (struct sparse *s, const char *name)
{
  struct grain_dir *d = &s->dir;
  uint64_t coverage = s->h.grain_size * s->h.num_gtes_per_gt; /* sectors */
  uint64_t gd_bytes, gd_start, i;
  unsigned char *raw;

  d->nr_gts = div_round_up (s->h.capacity, coverage);
  if (d->nr_gts > SPARSE_MAX_GTS)
    return vmdk_error (EINVAL, "%s: the grain directory would have %" PRIu64
                       " entries (capacity %" PRIu64 " sectors / %" PRIu64
                       " sectors per table), more than the limit %" PRIu64,
                       name, d->nr_gts, s->h.capacity, coverage,
                       SPARSE_MAX_GTS);
  gd_bytes = d->nr_gts * 4;
  if (MUL_OVERFLOW (s->h.gd_offset, (uint64_t) SECTOR, &gd_start) ||
      gd_start > d->file_size || gd_bytes > d->file_size - gd_start)
    return vmdk_error (EINVAL, "%s: grain directory at sector %" PRIu64
                       " (%" PRIu64 " entries) lies beyond the end of the "
                       "file (%" PRIu64 " bytes)", name, s->h.gd_offset,
                       d->nr_gts, d->file_size);

  raw = malloc (gd_bytes ? gd_bytes : 1);
  d->gt_offsets = calloc (d->nr_gts ? d->nr_gts : 1, sizeof (uint64_t));
  if (raw == NULL || d->gt_offsets == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: grain directory: %m");
  }
  if (io_pread_full (d->io, raw, gd_bytes, gd_start, "grain directory")) {
    free (raw);
    return -1;
  }
  for (i = 0; i < d->nr_gts; ++i)
    d->gt_offsets[i] = (uint64_t) get_le32 (raw + i * 4) * SECTOR;
  free (raw);
  return grain_dir_init (d, name);
}

static int
sparse_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
               struct run *run)
{
  struct sparse *s = e->priv;

  return grain_dir_lookup (&s->dir, offset, max, run);
}

void
sparse_free (struct extent *e)
{
  struct sparse *s = e->priv;

  if (s) {
    stream_writer_free (s->writer);
    stream_map_free (&s->map);
    pthread_mutex_destroy (&s->writer_lock);
    grain_dir_free (&s->dir);
    stream_free (s->stream);
    free (s);
  }
}

/* uncleanShutdown is byte 72 of the header: set while open for writing
 * (VirtualBox does the same), cleared on a clean close.
 */
static int
set_unclean (struct sparse *s, uint8_t value)
{
  struct vmdk_io *io = s->dir.io;

  s->h.unclean_shutdown = value;
  if (io->ops->pwrite (io, &value, 1, 72) == -1 || io->ops->flush (io) == -1)
    return -1;
  return 0;
}

static int
sparse_close_rw (struct extent *e)
{
  struct sparse *s = e->priv;

  if (grain_dir_flush (e) == -1)
    return -1;
  return set_unclean (s, 0);
}

/* Read the redundant directory; it must describe the same tables. */
static int
load_rgd (struct sparse *s, const char **reason)
{
  struct grain_dir *d = &s->dir;
  uint64_t bytes = d->nr_gts * 4, start, i;
  unsigned char *raw;

  if (MUL_OVERFLOW (s->h.rgd_offset, (uint64_t) SECTOR, &start) ||
      start < SECTOR || start > d->file_size || bytes > d->file_size - start) {
    *reason = "the redundant grain directory lies outside the file";
    return 1;
  }
  raw = malloc (bytes ? bytes : 1);
  d->rgt_offsets = calloc (d->nr_gts ? d->nr_gts : 1, sizeof (uint64_t));
  if (raw == NULL || d->rgt_offsets == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: %m");
  }
  if (io_pread_full (d->io, raw, bytes, start, "redundant grain directory")) {
    free (raw);
    return -1;
  }
  for (i = 0; i < d->nr_gts; ++i) {
    uint64_t r = (uint64_t) get_le32 (raw + i * 4) * SECTOR;

    d->rgt_offsets[i] = r;
    if ((r == 0) != (d->gt_offsets[i] == 0) ||
        (r != 0 && (r < SECTOR || r >= d->file_size))) {
      free (raw);
      *reason = "the primary and redundant grain directories disagree";
      return 1;
    }
  }
  free (raw);
  d->rgd_start = start;
  return 0;
}

static int
sparse_open_rw (struct extent *e, const char **reason)
{
  struct sparse *s = e->priv;
  struct grain_dir *d = &s->dir;
  uint64_t gd_end = d->gd_start + d->nr_gts * 4, i;
  size_t gt_bytes = (size_t) d->gtes_per_gt * 4;
  int r;

  if (s->h.version == 3) {
    *reason = "header version 3 without compression: VMware's changed "
      "block tracking data would go stale (VMware KB 2064959)";
    return 1;
  }
  for (i = 0; i < d->nr_gts; ++i) {
    uint64_t off = d->gt_offsets[i];

    if (off == GD_BAD) {
      *reason = "a grain directory entry points outside the file";
      return 1;
    }
    if (off != 0 && off < gd_end && off + gt_bytes > d->gd_start) {
      *reason = "a grain table overlaps the grain directory";
      return 1;
    }
  }
  /* Grains are allocated past overHead, the sectors of metadata.  One
   * past the end of the file cannot be right (and one of 2^55 sectors
   * or more would wrap in bytes).
   */
  if (s->h.overhead > d->file_size / SECTOR) {
    *reason = "the header's overHead (sectors of metadata) lies past the "
      "end of the file";
    return 1;
  }
  if ((s->h.flags & SPARSE_FLAG_RGD) && s->h.rgd_offset != 0) {
    r = load_rgd (s, reason);
    if (r != 0)
      return r;
  }
  d->table_state = calloc (d->nr_gts ? d->nr_gts : 1, 1);
  if (d->table_state == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  /* Allocation appends, grain-aligned like QEMU, below 2^32 sectors
   * (32-bit grain-table entries).
   */
  d->next_free = div_round_up (d->file_size, d->grain_bytes) * d->grain_bytes;
  d->max_offset = (UINT64_C (1) << 32) * SECTOR;
  d->first_data = MAX (s->h.overhead * SECTOR, (uint64_t) SECTOR);
  d->grain_align = d->grain_bytes;
  d->zeroed_grain_value = (s->h.flags & SPARSE_FLAG_ZERO_GRAIN) ? 1 : 0;
  return 0;
}

static int
sparse_begin_rw (struct extent *e)
{
  return set_unclean (e->priv, 1);
}

static const struct extent_ops sparse_ops = {
  .kind = "SPARSE",
  .lookup = sparse_lookup,
  .free = sparse_free,
  .open_rw = sparse_open_rw,
  .pwrite = grain_dir_pwrite,
  .zero = grain_dir_zero,
  .trim = grain_dir_trim,
  .flush = grain_dir_flush,
  .begin_rw = sparse_begin_rw,
  .close_rw = sparse_close_rw,
};

int
extent_sparse_init (struct extent *e, struct gtcache *cache)
{
  const char *name = e->io->name;
  unsigned char buf[SPARSE_HEADER_SIZE];
  struct sparse *s;

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  e->priv = s;
  e->ops = &sparse_ops;
  e->dir = &s->dir;
  pthread_mutex_init (&s->writer_lock, NULL);

  if (e->io->ops->get_size (e->io, &s->dir.file_size) == -1 ||
      io_pread_full (e->io, buf, sizeof buf, 0, "sparse header") == -1 ||
      sparse_header_decode (buf, &s->h, name) == -1)
    return -1;
  if (s->h.flags & SPARSE_FLAG_COMPRESSED)
    e->ops = &stream_ops;
  /* A writer that crashed leaves no footer and the header's unclean
   * flag set: the stream is recovered from its markers.  A stream that
   * is merely cut short is refused.
   */
  if (s->h.gd_offset == SPARSE_GD_AT_END &&
      stream_read_footer (e->io, s->dir.file_size, &s->h) == -1) {
    if (!s->h.unclean_shutdown)
      return -1;
    s->recovered = true;
  }

  e->grain_size = s->h.grain_size * SECTOR;
  s->dir.cache = cache;
  s->dir.io = e->io;
  s->dir.gtes_per_gt = s->h.num_gtes_per_gt;
  s->dir.gte_size = 4;
  s->dir.grain_bytes = e->grain_size;
  s->dir.decode = sparse_decode;
  s->dir.opaque = s;
  s->dir.gd_start = s->h.gd_offset * SECTOR;
  if (!s->recovered && load_gd (s, name) == -1)
    return -1;

  if (s->h.flags & SPARSE_FLAG_COMPRESSED) {
    s->stream = stream_new (e->io, cache, s->dir.file_size, e->grain_size,
                            e->length, s->h.flags & SPARSE_FLAG_MARKERS);
    if (s->stream == NULL || (s->recovered && stream_recover (e) == -1))
      return -1;
  }
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: sparse v%" PRIu32 " flags 0x%" PRIx32
              " capacity %" PRIu64 " grain %" PRIu64 " gtes/gt %" PRIu32
              " gd@%" PRIu64 " rgd@%" PRIu64 " overhead %" PRIu64
              " tables %" PRIu64 "%s", name, s->h.version, s->h.flags,
              s->h.capacity, s->h.grain_size, s->h.num_gtes_per_gt,
              s->h.gd_offset, s->h.rgd_offset, s->h.overhead, s->dir.nr_gts,
              s->h.unclean_shutdown ? " (unclean shutdown flag set)" : "");
  return 0;
}
