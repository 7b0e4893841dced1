/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Growing a hosted sparse extent (resize.c explains the order of the
 * steps): what lies past its old end made to read as zeroes, grain
 * tables appended for the new size, their directory entries written in
 * place or the directories written anew at the end of the file, and
 * one header-sector write switching the extent over.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "graindir.h"
#include "header.h"
#include "le.h"
#include "resize.h"

/* Header fields changed here (byte offsets, VMDK-FORMAT.md b.1). */
#define HDR_CAPACITY 12
#define HDR_RGD_OFFSET 48
#define HDR_GD_OFFSET 56

/* Step 1, sparse: zeroes past the old end of the last extent. */

/* The tail of a partial last grain, if stored, is written to zeroes. */
static int
zero_grain_tail (struct extent *e)
{
  struct grain_dir *d = e->dir;
  uint64_t in = e->length % d->grain_bytes, g = e->length / d->grain_bytes;
  uint64_t gte, foff, from, to;
  enum grain_kind kind;

  if (in == 0)
    return 0;
  if (grain_dir_get (d, g / d->gtes_per_gt, g % d->gtes_per_gt, &gte) == -1 ||
      d->decode (d, gte, g / d->gtes_per_gt, g % d->gtes_per_gt, &kind,
                 &foff) == -1)
    return -1;
  if (kind != GRAIN_DATA)
    return 0;
  from = foff + in;
  to = MIN (foff + d->grain_bytes, d->file_size);
  return from < to ? io_write_zeroes (e->io, from, to - from) : 0;
}

/* Entries of the existing tables past the old end become unallocated. */
static int
clear_entries_beyond (struct extent *e)
{
  struct grain_dir *d = e->dir;
  uint64_t g = div_round_up (e->length, d->grain_bytes);
  uint64_t end = d->nr_gts * d->gtes_per_gt, gte;

  while (g < end) {
    uint64_t t = g / d->gtes_per_gt;
    uint32_t i = g % d->gtes_per_gt;

    if (d->gt_offsets[t] == 0) {        /* no table: nothing there */
      g = (t + 1) * d->gtes_per_gt;
      continue;
    }
    if (grain_dir_get (d, t, i, &gte) == -1 ||
        (gte != 0 && grain_dir_set (d, t, i, 0) == -1))
      return -1;
    g++;
  }
  return 0;
}

/* Step 2, sparse: tables for grains [old_n, new_n) and their entries. */

/* Do byte ranges [a, a + n) and [b, b + m) meet? */
static bool
overlap (uint64_t a, uint64_t n, uint64_t b, uint64_t m)
{
  return a < b + m && b < a + n;
}

/* Can both directories take new_n entries where they are: room left in
 * their last sector, and nothing else (the other directory, the header,
 * the descriptor) there?
 */
static bool
directories_fit (const struct grain_dir *d, const struct sparse_header *h,
                 uint64_t new_n)
{
  uint64_t room = div_round_up (d->nr_gts * 4, SECTOR) * SECTOR / 4;
  uint64_t bytes = new_n * 4;

  if (new_n > room || overlap (d->gd_start, bytes, 0, SECTOR) ||
      overlap (d->gd_start, bytes, h->desc_offset * SECTOR,
               h->desc_size * SECTOR))
    return false;
  return d->rgt_offsets == NULL ||
    (!overlap (d->rgd_start, bytes, 0, SECTOR) &&
     !overlap (d->rgd_start, bytes, h->desc_offset * SECTOR,
               h->desc_size * SECTOR) &&
     !overlap (d->gd_start, bytes, d->rgd_start, bytes));
}

/* Write directory entries [from, to) of tables at offsets (bytes) to
 * the directory at dir_start.
 */
static int
write_entries (struct vmdk_io *io, uint64_t dir_start, uint64_t from,
               uint64_t to, const uint64_t *offsets)
{
  unsigned char *buf = malloc ((to - from) * 4 + 1);
  uint64_t i;
  int r;

  if (buf == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  for (i = from; i < to; ++i)
    put_le32 (buf + (i - from) * 4, offsets[i] / SECTOR);
  r = io->ops->pwrite (io, buf, (to - from) * 4, dir_start + from * 4);
  free (buf);
  return r;
}

/* Reserve an empty table for each of [old_n, new_n) (and its twin) at
 * the end of the file; where the directories have no room, new ones
 * too.  *gd, *rgd: where the directories are afterwards.
 */
static int
add_tables (struct grain_dir *d, const struct sparse_header *h,
            uint64_t new_n, uint64_t *gd, uint64_t *rgd)
{
  uint64_t old_n = d->nr_gts, from = old_n, t;
  uint64_t gt_bytes = div_round_up ((uint64_t) d->gtes_per_gt * 4, SECTOR)
    * SECTOR;
  uint64_t dir_bytes = div_round_up (new_n * 4, SECTOR) * SECTOR;
  uint64_t *gts = NULL, *rgts = NULL;
  bool redundant = d->rgt_offsets != NULL;
  int r = -1;

  *gd = d->gd_start;
  *rgd = d->rgd_start;
  gts = calloc (new_n, sizeof *gts);
  rgts = calloc (new_n, sizeof *rgts);
  if (gts == NULL || rgts == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    goto out;
  }
  memcpy (gts, d->gt_offsets, old_n * sizeof *gts);
  if (redundant)
    memcpy (rgts, d->rgt_offsets, old_n * sizeof *rgts);
  if (!directories_fit (d, h, new_n)) {
    from = 0;                   /* write them whole, elsewhere */
    if ((redundant && grain_dir_reserve (d, dir_bytes, SECTOR, rgd) == -1) ||
        grain_dir_reserve (d, dir_bytes, SECTOR, gd) == -1)
      goto out;
  }
  for (t = old_n; t < new_n; ++t)
    if ((redundant &&
         grain_dir_reserve (d, gt_bytes, SECTOR, &rgts[t]) == -1) ||
        grain_dir_reserve (d, gt_bytes, SECTOR, &gts[t]) == -1)
      goto out;
  /* The tables are the holes that extending the file leaves. */
  if (d->io->ops->extend (d->io, d->next_free) == -1 ||
      (redundant && write_entries (d->io, *rgd, from, new_n, rgts) == -1) ||
      write_entries (d->io, *gd, from, new_n, gts) == -1 ||
      d->io->ops->flush (d->io) == -1)
    goto out;
  r = 0;
 out:
  free (gts);
  free (rgts);
  return r;
}

int
resize_sparse_extent (struct extent *e, uint64_t new_cap)
{
  struct grain_dir *d = e->dir;
  unsigned char hdr[SPARSE_HEADER_SIZE];
  struct sparse_header h;
  uint64_t new_n, gd, rgd;
  int r;

  if (io_pread_full (e->io, hdr, sizeof hdr, 0, "sparse header") == -1 ||
      sparse_header_decode (hdr, &h, e->io->name) == -1)
    return -1;
  /* Larger: a resize was interrupted after its header write. */
  if (h.capacity < e->length / SECTOR)
    return vmdk_error (EINVAL, "%s: the header's capacity (%" PRIu64
                       " sectors) is smaller than the extent line's (%"
                       PRIu64 "): refusing to resize a corrupt image",
                       e->io->name, h.capacity, e->length / SECTOR);
  new_n = div_round_up (new_cap, h.grain_size * h.num_gtes_per_gt);

  pthread_mutex_lock (&d->alloc_lock);
  r = zero_grain_tail (e);
  if (r == 0)
    r = clear_entries_beyond (e);
  if (r == 0)
    r = grain_dir_flush_locked (d);
  if (r == 0 && new_n > d->nr_gts) {
    r = add_tables (d, &h, new_n, &gd, &rgd);
    put_le64 (hdr + HDR_GD_OFFSET, gd / SECTOR);
    if (d->rgt_offsets)
      put_le64 (hdr + HDR_RGD_OFFSET, rgd / SECTOR);
  }
  if (r == 0 && new_cap > h.capacity) {
    put_le64 (hdr + HDR_CAPACITY, new_cap);
    r = e->io->ops->pwrite (e->io, hdr, sizeof hdr, 0);
    if (r == 0)
      r = e->io->ops->flush (e->io);
  }
  pthread_mutex_unlock (&d->alloc_lock);
  return r;
}
