/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The extent files of a new image.  Only metadata is written: grain
 * tables and flat data are left as holes of the host file, which read
 * as zeroes, so creating a 2 TiB image writes a few hundred KiB.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "create.h"
#include "error.h"
#include "header.h"
#include "le.h"
#include "stream-map.h"

/* COWD redo logs as ESX writes them: one-sector grains. */
#define CREATE_COWD_GRAIN_SECTORS 1
#define COWD_ROOT_FLAGS (COWD_FLAG_ROOT | COWD_FLAG_CHECKCAPABLE)
#define COWD_CHILD_FLAGS COWD_FLAG_CHECKCAPABLE
/* Root header offsets of the geometry (where a child keeps its
 * parent's name).
 */
#define COWD_OFF_CYLINDERS 32
#define COWD_OFF_HEADS 36
#define COWD_OFF_SECTORS 40

/* A directory of n u32 entries, entry i = first + i * step (sectors),
 * written at sector at.
 */
static int
write_directory (struct vmdk_io *io, uint64_t at, uint64_t n, uint64_t first,
                 uint64_t step)
{
  unsigned char *buf;
  uint64_t i;
  int r;

  buf = malloc (n * 4);
  if (buf == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  for (i = 0; i < n; ++i)
    put_le32 (buf + i * 4, first + i * step);
  r = io->ops->pwrite (io, buf, n * 4, at * SECTOR);
  free (buf);
  return r;
}

int
create_sparse_extent (struct vmdk_io *io, uint64_t capacity,
                      const char *desc, size_t desc_len)
{
  const uint64_t coverage = CREATE_GRAIN_SECTORS * CREATE_GTES_PER_GT;
  const uint64_t gt_sectors = CREATE_GTES_PER_GT * 4 / SECTOR;
  uint64_t nr_gts = div_round_up (capacity, coverage);
  uint64_t gd_sectors = div_round_up (nr_gts * 4, SECTOR);
  struct sparse_header h = {
    .version = 1,
    .flags = SPARSE_FLAG_NL_DETECT | SPARSE_FLAG_RGD,
    .capacity = capacity,
    .grain_size = CREATE_GRAIN_SECTORS,
    .num_gtes_per_gt = CREATE_GTES_PER_GT,
    .compress_algorithm = SPARSE_COMPRESS_NONE,
  };
  unsigned char buf[SPARSE_HEADER_SIZE];
  uint64_t rgts, gts, end;

  /* Header, descriptor, then each directory followed by its tables. */
  if (desc) {
    h.desc_offset = 1;
    h.desc_size = CREATE_EMBEDDED_DESC_SECTORS;
  }
  h.rgd_offset = 1 + h.desc_size;
  rgts = h.rgd_offset + gd_sectors;
  h.gd_offset = rgts + nr_gts * gt_sectors;
  gts = h.gd_offset + gd_sectors;
  end = gts + nr_gts * gt_sectors;
  h.overhead = div_round_up (end, CREATE_GRAIN_SECTORS) * CREATE_GRAIN_SECTORS;
  if (desc && desc_len > h.desc_size * SECTOR)
    return vmdk_error (EINVAL, "%s: the descriptor (%zu bytes) does not fit "
                       "the %" PRIu64 " sectors reserved for it", io->name,
                       desc_len, h.desc_size);

  sparse_header_encode (&h, buf);
  if (io->ops->pwrite (io, buf, sizeof buf, 0) == -1 ||
      (desc && io->ops->pwrite (io, desc, desc_len, SECTOR) == -1) ||
      write_directory (io, h.rgd_offset, nr_gts, rgts, gt_sectors) == -1 ||
      write_directory (io, h.gd_offset, nr_gts, gts, gt_sectors) == -1 ||
      io->ops->extend (io, h.overhead * SECTOR) == -1)
    return -1;
  return 0;
}

int
create_cowd_extent (struct vmdk_io *io, uint64_t capacity,
                    const struct geometry *geo, const char *parent_name)
{
  const uint64_t coverage = COWD_GTES_PER_GT * CREATE_COWD_GRAIN_SECTORS;
  uint64_t gd_entries = div_round_up (capacity, coverage);
  uint64_t gd_sectors = div_round_up (gd_entries * 4, SECTOR);
  uint64_t next_free = COWD_HEADER_SECTORS + gd_sectors;
  unsigned char h[COWD_HEADER_SIZE] = { 0 };

  if (capacity > UINT32_MAX)
    return vmdk_error (EFBIG, "%s: a COWD extent holds at most %" PRIu32
                       " sectors", io->name, UINT32_MAX);
  memcpy (h, "COWD", 4);
  put_le32 (h + COWD_OFF_VERSION, COWD_VERSION);
  put_le32 (h + COWD_OFF_CAPACITY, capacity);
  put_le32 (h + COWD_OFF_GRAIN, CREATE_COWD_GRAIN_SECTORS);
  put_le32 (h + COWD_OFF_GD, COWD_HEADER_SECTORS);
  put_le32 (h + COWD_OFF_GD_ENTRIES, gd_entries);
  put_le32 (h + COWD_OFF_NEXT_FREE, next_free);
  if (parent_name) {
    if (strlen (parent_name) >= COWD_PARENT_NAME_LEN)
      return vmdk_error (ENAMETOOLONG, "%s: the parent file name \"%s\" "
                         "does not fit the COWD header's %d bytes",
                         io->name, parent_name, COWD_PARENT_NAME_LEN);
    put_le32 (h + COWD_OFF_FLAGS, COWD_CHILD_FLAGS);
    memcpy (h + COWD_OFF_PARENT, parent_name, strlen (parent_name));
  }
  else {
    put_le32 (h + COWD_OFF_FLAGS, COWD_ROOT_FLAGS);
    put_le32 (h + COWD_OFF_CYLINDERS, geo->cylinders);
    put_le32 (h + COWD_OFF_HEADS, geo->heads);
    put_le32 (h + COWD_OFF_SECTORS, geo->sectors);
  }
  /* The directory is all zeroes: the hole that extending leaves. */
  if (io->ops->pwrite (io, h, sizeof h, 0) == -1 ||
      io->ops->extend (io, next_free * SECTOR) == -1)
    return -1;
  return 0;
}

int
create_stream_extent (struct vmdk_io *io, uint64_t capacity,
                      const char *desc, size_t desc_len)
{
  const uint64_t grain_bytes = CREATE_GRAIN_SECTORS * SECTOR;
  struct sparse_header h = {
    .version = 3,
    .flags = SPARSE_FLAG_NL_DETECT | SPARSE_FLAG_COMPRESSED |
      SPARSE_FLAG_MARKERS,
    .capacity = capacity,
    .grain_size = CREATE_GRAIN_SECTORS,
    .desc_offset = 1,
    .desc_size = CREATE_EMBEDDED_DESC_SECTORS,
    .num_gtes_per_gt = CREATE_GTES_PER_GT,
    .gd_offset = SPARSE_GD_AT_END,
    .overhead = CREATE_GRAIN_SECTORS,
    .compress_algorithm = SPARSE_COMPRESS_DEFLATE,
  };
  unsigned char buf[SPARSE_HEADER_SIZE], *tail = NULL;
  struct stream_map m;
  size_t len;
  int r;

  if (desc_len > h.desc_size * SECTOR)
    return vmdk_error (EINVAL, "%s: the descriptor (%zu bytes) does not fit "
                       "the %" PRIu64 " sectors reserved for it", io->name,
                       desc_len, h.desc_size);
  if (stream_map_init (&m, div_round_up (capacity * SECTOR, grain_bytes),
                       CREATE_GTES_PER_GT) == -1)
    return -1;
  r = stream_tail_build (&m, &h, h.overhead * SECTOR, &tail, &len);
  stream_map_free (&m);
  sparse_header_encode (&h, buf);
  if (r == 0)
    r = io->ops->pwrite (io, buf, sizeof buf, 0);
  if (r == 0)
    r = io->ops->pwrite (io, desc, desc_len, SECTOR);
  if (r == 0)
    r = io->ops->pwrite (io, tail, len, h.overhead * SECTOR);
  free (tail);
  return r;
}

int
create_flat_extent (struct vmdk_io *io, uint64_t capacity)
{
  return io->ops->extend (io, capacity * SECTOR);
}
