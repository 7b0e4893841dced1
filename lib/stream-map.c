/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "le.h"
#include "stream.h"
#include "stream-map.h"

int
stream_map_init (struct stream_map *m, uint64_t nr_grains,
                 uint32_t gtes_per_gt)
{
  m->nr_grains = nr_grains;
  m->gtes_per_gt = gtes_per_gt;
  m->nr_gts = div_round_up (nr_grains, gtes_per_gt);
  m->tables = calloc (m->nr_gts ? m->nr_gts : 1, sizeof *m->tables);
  if (m->tables == NULL)
    return vmdk_error (ENOMEM, "calloc: grain map: %m");
  return 0;
}

void
stream_map_free (struct stream_map *m)
{
  uint64_t t;

  if (m->tables == NULL)
    return;
  for (t = 0; t < m->nr_gts; ++t)
    free (m->tables[t]);
  free (m->tables);
  m->tables = NULL;
}

int
stream_map_set (struct stream_map *m, uint64_t g, uint32_t sector)
{
  uint32_t **t = &m->tables[g / m->gtes_per_gt];

  if (*t == NULL) {
    if (sector == 0)
      return 0;
    *t = calloc (m->gtes_per_gt, sizeof **t);
    if (*t == NULL)
      return vmdk_error (ENOMEM, "calloc: grain table: %m");
  }
  (*t)[g % m->gtes_per_gt] = sector;
  return 0;
}

int
stream_map_copy (struct stream_map *to, const struct stream_map *from)
{
  uint64_t t;

  if (stream_map_init (to, from->nr_grains, from->gtes_per_gt) == -1)
    return -1;
  for (t = 0; t < from->nr_gts; ++t) {
    if (from->tables[t] == NULL)
      continue;
    to->tables[t] = malloc (from->gtes_per_gt * sizeof (uint32_t));
    if (to->tables[t] == NULL) {
      stream_map_free (to);
      return vmdk_error (ENOMEM, "malloc: grain table: %m");
    }
    memcpy (to->tables[t], from->tables[t],
            from->gtes_per_gt * sizeof (uint32_t));
  }
  return 0;
}

void
stream_map_lookup (const struct stream_map *m, uint64_t grain_bytes,
                   uint64_t offset, uint64_t max, struct run *run)
{
  uint64_t g = offset / grain_bytes, in_grain = offset % grain_bytes;

  run->length = grain_bytes - in_grain;
  if (g < m->nr_grains && stream_map_get (m, g) != 0) {
    run->kind = RUN_COMPRESSED;
    run->file_offset = (uint64_t) stream_map_get (m, g) * SECTOR;
    run->grain_start = offset - in_grain;
  }
  else {
    run->kind = RUN_UNALLOC;
    while (run->length < max && ++g < m->nr_grains &&
           stream_map_get (m, g) == 0)
      run->length += grain_bytes;
  }
  run->length = MIN (run->length, max);
}

int
stream_map_load (struct stream_map *m, struct grain_dir *d,
                 const char **reason)
{
  size_t gt_bytes = (size_t) d->gtes_per_gt * 4;
  unsigned char *raw;
  uint64_t t, g;
  uint32_t i;
  int r = 0;

  raw = malloc (gt_bytes);
  if (raw == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  for (t = 0; r == 0 && t < d->nr_gts; ++t) {
    if (d->gt_offsets[t] == 0)
      continue;
    if (d->gt_offsets[t] == GD_BAD) {
      *reason = "a grain directory entry points outside the file";
      r = 1;
      break;
    }
    r = io_pread_zerofill (d->io, raw, gt_bytes, d->gt_offsets[t]);
    for (i = 0; r == 0 && i < d->gtes_per_gt; ++i) {
      g = t * d->gtes_per_gt + i;
      if (g < m->nr_grains)
        r = stream_map_set (m, g, get_le32 (raw + i * 4));
    }
  }
  free (raw);
  return r;
}

void
stream_put_metadata_marker (unsigned char *sector, uint64_t num_sectors,
                            uint32_t type)
{
  memset (sector, 0, SECTOR);
  put_le64 (sector, num_sectors);
  put_le32 (sector + 12, type);
}

/* Is this sector a grain marker for a grain of this extent?  Sets the
 * data's length.
 */
static bool
is_grain_marker (const unsigned char *sector, const struct sparse_header *h,
                 uint64_t grain_bytes, uint64_t pos, uint64_t file_size,
                 uint32_t *csize)
{
  uint64_t lba = get_le64 (sector);

  *csize = get_le32 (sector + 8);
  return *csize != 0 &&
    *csize <= STREAM_MAX_COMPRESSED (grain_bytes) - GRAIN_MARKER_SIZE &&
    lba < h->capacity && lba % h->grain_size == 0 &&
    GRAIN_MARKER_SIZE + (uint64_t) *csize <= file_size - pos;
}

int
stream_map_recover (struct stream_map *m, struct vmdk_io *io,
                    struct stream *reader, const struct sparse_header *h,
                    uint64_t file_size, uint64_t grain_bytes, uint64_t *end)
{
  unsigned char sector[SECTOR];
  uint64_t pos, grains = 0;
  const char *why = "end of file";

  if (MUL_OVERFLOW (h->overhead, (uint64_t) SECTOR, &pos) || pos > file_size)
    return vmdk_error (EINVAL, "%s: overHead %" PRIu64 " sectors lies past "
                       "the end of the file: cannot recover the stream",
                       io->name, h->overhead);
  while (file_size - pos >= SECTOR) {
    uint32_t csize, type;
    uint64_t n;

    if (io_pread_full (io, sector, SECTOR, pos, "stream marker") == -1)
      return -1;
    if (is_grain_marker (sector, h, grain_bytes, pos, file_size, &csize)) {
      struct run run = {
        .kind = RUN_COMPRESSED,
        .file_offset = pos,
        .grain_start = get_le64 (sector) * SECTOR,
      };

      /* A torn grain (written after the last flush) fails to inflate. */
      if (stream_check_grain (reader, &run) == -1) {
        why = vmdk_errmsg ();
        break;
      }
      if (stream_map_set (m, run.grain_start / grain_bytes,
                          pos / SECTOR) == -1)
        return -1;
      grains++;
      pos += div_round_up (GRAIN_MARKER_SIZE + (uint64_t) csize, SECTOR)
        * SECTOR;
      continue;
    }
    n = get_le64 (sector);
    type = get_le32 (sector + 12);
    if (get_le32 (sector + 8) != 0 || type == MARKER_EOS ||
        type > MARKER_PROGRESS || n > (file_size - pos) / SECTOR - 1) {
      why = type == MARKER_EOS ? "end-of-stream marker" : "not a marker";
      break;
    }
    pos += (n + 1) * SECTOR;
  }
  vmdk_warning ("%s: the stream has no valid footer and its header says it "
                "was not closed cleanly: recovered %" PRIu64 " grains from "
                "the markers, up to byte %" PRIu64 " (%s)", io->name, grains,
                pos, why);
  *end = pos;
  return 0;
}

int
stream_tail_build (const struct stream_map *m, const struct sparse_header *h,
                   uint64_t at, unsigned char **buf, size_t *len)
{
  uint64_t gt_sectors = div_round_up ((uint64_t) m->gtes_per_gt * 4, SECTOR);
  uint64_t gd_sectors = div_round_up (m->nr_gts * 4, SECTOR);
  uint64_t tables = 0, t, sectors, s, gd;
  struct sparse_header footer = *h;
  unsigned char *b;
  uint32_t i;

  for (t = 0; t < m->nr_gts; ++t)
    tables += m->tables[t] != NULL;
  sectors = tables * (1 + gt_sectors) + 1 + gd_sectors + 3;
  b = calloc (sectors, SECTOR);
  if (b == NULL)
    return vmdk_error (ENOMEM, "calloc: stream tail: %m");

  /* Tables, then the directory pointing at them. */
  s = 0;
  gd = (tables * (1 + gt_sectors) + 1);
  for (t = 0; t < m->nr_gts; ++t) {
    if (m->tables[t] == NULL)
      continue;
    stream_put_metadata_marker (b + s * SECTOR, gt_sectors, MARKER_GT);
    for (i = 0; i < m->gtes_per_gt; ++i)
      put_le32 (b + (s + 1) * SECTOR + i * 4, m->tables[t][i]);
    put_le32 (b + gd * SECTOR + t * 4, at / SECTOR + s + 1);
    s += 1 + gt_sectors;
  }
  stream_put_metadata_marker (b + s * SECTOR, gd_sectors, MARKER_GD);
  s += 1 + gd_sectors;

  /* The footer: the header with the real directory offset. */
  stream_put_metadata_marker (b + s * SECTOR, 1, MARKER_FOOTER);
  footer.gd_offset = at / SECTOR + gd;
  footer.unclean_shutdown = 0;
  sparse_header_encode (&footer, b + (s + 1) * SECTOR);
  stream_put_metadata_marker (b + (s + 2) * SECTOR, 0, MARKER_EOS);
  *buf = b;
  *len = sectors * SECTOR;
  return 0;
}
