/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* streamOptimized extents: hosted sparse files whose grains are
 * compressed (stream.c reads them).  Reads go through the grain
 * directory until the first write starts the writer, which then
 * answers for every grain (stream-write.c); an image recovered from
 * its markers is read through the recovered map.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "descriptor.h"
#include "error.h"
#include "extent-sparse.h"
#include "le.h"
#include "stream-write.h"

/* streamOptimized images written in one pass (GD_AT_END) keep the real
 * header in a footer: footer marker, footer, end-of-stream marker in the
 * last three sectors.  "The footer takes precedence on the header".
 */
int
stream_read_footer (struct vmdk_io *io, uint64_t file_size,
                    struct sparse_header *h)
{
  unsigned char buf[3 * SECTOR];
  const unsigned char *marker = buf, *footer = buf + SECTOR,
    *eos = buf + 2 * SECTOR;
  struct sparse_header f;

  if (file_size < 4 * SECTOR)
    return vmdk_error (EINVAL, "%s: gdOffset is GD_AT_END but the file is "
                       "too short to hold a footer", io->name);
  if (io_pread_full (io, buf, sizeof buf, file_size - sizeof buf,
                     "footer") == -1)
    return -1;
  if (get_le32 (marker + 8) != 0 || get_le32 (marker + 12) != MARKER_FOOTER)
    goto bad;
  if (get_le64 (eos) != 0 || get_le32 (eos + 8) != 0 ||
      get_le32 (eos + 12) != MARKER_EOS)
    goto bad;
  if (sparse_header_decode (footer, &f, io->name) == -1)
    return vmdk_error_prefix ("footer");
  if (f.gd_offset == SPARSE_GD_AT_END)
    return vmdk_error (EINVAL, "%s: footer gdOffset is GD_AT_END too",
                       io->name);
  *h = f;
  return 0;

 bad:
  return vmdk_error (EINVAL, "%s: gdOffset is GD_AT_END but there is no "
                     "valid footer marker, footer and end-of-stream marker "
                     "in the last 3 sectors (truncated image?)", io->name);
}

static struct stream_writer *
writer_of (struct sparse *s)
{
  return __atomic_load_n (&s->writer, __ATOMIC_ACQUIRE);
}

static int
stream_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
               struct run *run)
{
  struct sparse *s = e->priv;
  struct stream_writer *w = writer_of (s);

  if (w)
    return stream_writer_lookup (w, offset, max, run);
  if (s->recovered) {
    stream_map_lookup (&s->map, e->grain_size, offset, max, run);
    return 0;
  }
  return grain_dir_lookup (&s->dir, offset, max, run);
}

static int
stream_read_compressed (struct extent *e, const struct run *runs, size_t nr,
                        uint64_t offset, void *buf, size_t count)
{
  struct sparse *s = e->priv;
  struct stream_writer *w = writer_of (s);
  unsigned char *b = buf;
  size_t i;

  if (w == NULL)
    return stream_read (s->stream, runs, nr, offset, buf, count);
  for (i = 0; i < nr && count > 0; ++i) {       /* grain by grain */
    size_t n = i + 1 < nr ? MIN ((uint64_t) count, runs[i].length) : count;

    if (stream_writer_read (w, &runs[i], offset, b, n) == -1)
      return -1;
    offset += n;
    b += n;
    count -= n;
  }
  return 0;
}

/* Where the stored grains end: past the grain stored last in the file
 * (its marker must be valid), the header, the descriptor and overHead.
 * Everything after is metadata the writer replaces.  Entries must
 * point between overHead and the end of the file: a truncated image
 * (or a corrupt one) is not written, so that its damage is not carried
 * into new metadata.
 */
static int
find_data_end (struct sparse *s, const char **reason)
{
  const struct stream_map *m = &s->map;
  uint64_t end = MAX (s->h.overhead, (uint64_t) 1), g, last_g = 0, pos;
  uint32_t last = 0, sector, csize;
  unsigned char marker[GRAIN_MARKER_SIZE];

  if (s->h.desc_size > 0 && s->h.desc_offset > 0 &&
      s->h.desc_offset <= s->dir.file_size / SECTOR)
    end = MAX (end, s->h.desc_offset + s->h.desc_size);
  for (g = 0; g < m->nr_grains; ++g) {
    sector = stream_map_get (m, g);
    if (sector == 0)
      continue;
    if (sector < s->h.overhead ||
        (uint64_t) sector * SECTOR >= s->dir.file_size) {
      *reason = "a grain table entry points before overHead or past the "
        "end of the file (a truncated or corrupt stream)";
      return 1;
    }
    if (sector > last) {
      last = sector;
      last_g = g;
    }
  }
  if (last) {
    pos = (uint64_t) last * SECTOR;
    if (io_pread_full (s->dir.io, marker, sizeof marker, pos,
                       "grain marker") == -1)
      return -1;
    csize = get_le32 (marker + 8);
    if (get_le64 (marker) != last_g * s->h.grain_size || csize == 0 ||
        GRAIN_MARKER_SIZE + (uint64_t) csize > s->dir.file_size - pos) {
      *reason = "the last grain's marker is invalid";
      return 1;
    }
    end = MAX (end, div_round_up (pos + GRAIN_MARKER_SIZE + csize, SECTOR));
  }
  /* New grains go at the end: never past the end of the file. */
  if (end > s->dir.file_size / SECTOR) {
    *reason = "overHead or the embedded descriptor lies past the end of "
      "the file (a truncated or corrupt stream)";
    return 1;
  }
  s->data_end = end * SECTOR;
  return 0;
}

/* Writable if the map can be loaded, the last grain is sound and the
 * file can be cut (the tail is replaced).
 */
static int
stream_open_rw (struct extent *e, const char **reason)
{
  struct sparse *s = e->priv;
  int r;

  if (e->io->ops->truncate == NULL) {
    *reason = "streamOptimized writes need a file that can be truncated";
    return 1;
  }
  if (e->length != s->h.capacity * SECTOR) {
    *reason = "the extent line and the stream header disagree on the size";
    return 1;
  }
  if (s->recovered)
    return 0;
  if (stream_map_init (&s->map, div_round_up (e->length, e->grain_size),
                       s->h.num_gtes_per_gt) == -1)
    return -1;
  r = stream_map_load (&s->map, &s->dir, reason);
  if (r == 0)
    r = find_data_end (s, reason);
  return r;
}

/* Other writers' stream images lack descriptor keys that VMware's
 * importers expect (qemu-img's has no ddb.longContentID, for one): add
 * them in the room the header reserves for the embedded descriptor.
 */
static int
complete_descriptor (struct extent *e)
{
  struct sparse *s = e->priv;
  uint64_t off, room;
  size_t len, n;
  char *text, *done;
  int r = 0;

  if (s->h.desc_offset == 0 || s->h.desc_size == 0 ||
      s->h.desc_offset >= s->data_end / SECTOR)
    return 0;
  off = s->h.desc_offset * SECTOR;
  room = MIN (s->h.desc_size * SECTOR, s->data_end - off);
  room = MIN (room, (uint64_t) DESCRIPTOR_MAX_BYTES);
  text = malloc (room);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  if (io_pread_full (e->io, text, room, off, "descriptor") == -1) {
    free (text);
    return -1;
  }
  len = strnlen (text, room);
  done = descriptor_complete_ddb (text, len, s->h.capacity, &n);
  if (done == NULL)
    r = -1;
  else if (n > len && n < room) {
    memset (text, 0, room);
    memcpy (text, done, n);
    r = e->io->ops->pwrite (e->io, text, room, off);
  }
  else if (n > len)
    vmdk_warning ("%s: the embedded descriptor has no room for the keys "
                  "VMware's importers expect; left as it is", e->io->name);
  free (done);
  free (text);
  return r;
}

/* The writer, started by the first write. */
static struct stream_writer *
get_writer (struct extent *e, const struct write_ctx *ctx)
{
  struct sparse *s = e->priv;
  struct stream_writer *w = writer_of (s);

  if (w)
    return w;
  pthread_mutex_lock (&s->writer_lock);
  w = s->writer;
  if (w == NULL && complete_descriptor (e) == 0) {
    w = stream_writer_new (e->io, s->stream, &s->h, &s->map, s->data_end,
                           !s->recovered, e->start, e->length,
                           ctx->compression_level);
    __atomic_store_n (&s->writer, w, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&s->writer_lock);
  return w;
}

static int
stream_pwrite (struct extent *e, const void *buf, size_t count,
               uint64_t offset, const struct write_ctx *ctx)
{
  struct stream_writer *w = get_writer (e, ctx);

  return w ? stream_writer_pwrite (w, buf, count, offset, ctx) : -1;
}

static int
stream_zero (struct extent *e, uint64_t offset, uint64_t count,
             unsigned flags, const struct write_ctx *ctx)
{
  struct stream_writer *w = get_writer (e, ctx);

  return w ? stream_writer_zero (w, offset, count, flags, ctx) : -1;
}

static int
stream_trim (struct extent *e, uint64_t offset, uint64_t count,
             const struct write_ctx *ctx)
{
  struct stream_writer *w = get_writer (e, ctx);

  return w ? stream_writer_trim (w, offset, count, ctx) : -1;
}

static int
stream_flush (struct extent *e)
{
  struct stream_writer *w = writer_of (e->priv);

  return w ? stream_writer_flush (w) : 0;
}

/* The writer keeps the header's uncleanShutdown itself. */
static int
stream_begin_rw (struct extent *e)
{
  return 0;
}

const struct extent_ops stream_ops = {
  .kind = "SPARSE",
  .lookup = stream_lookup,
  .read_compressed = stream_read_compressed,
  .free = sparse_free,
  .open_rw = stream_open_rw,
  .pwrite = stream_pwrite,
  .zero = stream_zero,
  .trim = stream_trim,
  .flush = stream_flush,
  .begin_rw = stream_begin_rw,
  .close_rw = stream_flush,
};

/* Rebuild the map of a stream whose footer is gone from its markers. */
int
stream_recover (struct extent *e)
{
  struct sparse *s = e->priv;

  if (stream_map_init (&s->map, div_round_up (e->length, e->grain_size),
                       s->h.num_gtes_per_gt) == -1)
    return -1;
  return stream_map_recover (&s->map, e->io, s->stream, &s->h,
                             s->dir.file_size, e->grain_size, &s->data_end);
}
