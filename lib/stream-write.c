/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Writing streamOptimized extents.
 *
 * A stream image is written front to back: compressed grains, each a
 * marker and its deflate data, then a metadata tail (grain tables,
 * the directory, a footer copy of the header, an end-of-stream
 * marker).  Clients write in any order, so every write goes into a
 * grain buffer first:
 *
 *   FILLING   a grain being written, holding what the image held there
 *             before (the old grain, the parent, or zeroes) plus the
 *             writes so far; a bit per sector says what was written.
 *   SEALED    complete (every sector written), or chosen to make room,
 *             or flushed: a thread compresses it with no lock held.  A
 *             write of a whole grain starts here, compressed straight
 *             from the caller's buffer (no copy).
 *   READY     compressed, waiting in a heap ordered by grain, so that
 *             grains that arrive close together reach the file in
 *             ascending order (what streaming importers expect).
 *   WRITING   given a place at the end of the data; being written.
 *
 * Then the grain's map entry points at it and the buffer goes.  At most
 * one version of a grain is past FILLING at a time, so map updates
 * happen in the order of the writes.  Reads look at the buffers first.
 * Raw buffers are capped (when full, the oldest FILLING grain is sealed
 * as it is); compressed grains wait for their turn up to a budget,
 * past which the lowest is stored anyway.
 *
 * A flush stores every grain buffered before it, then writes the tail
 * after the data and syncs: the file is a complete image.  The first
 * grain stored after that replaces the tail: before it, the header's
 * uncleanShutdown is set, the tail is cut off and the file synced.  A
 * crash then leaves no footer and the flag set, and opening the image
 * recovers it by walking the markers (stream-map.c): everything
 * flushed is before the cut and intact.  A clean flush clears the flag.
 *
 * This file takes reads and writes; stream-write-buffers.c keeps the
 * buffers and stream-write-store.c compresses, stores and flushes.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "error.h"
#include "inflate.h"
#include "le.h"
#include "stream.h"
#include "stream-write-internal.h"

/* ------------------------------------------------------------------ */
/* Reading what is buffered. */

/* Copy bytes [in_grain, +count) of buffer b's grain.  Lock held. */
static int
copy_buffered (struct stream_writer *w, const struct gbuf *b,
               uint64_t in_grain, void *buf, size_t count)
{
  unsigned char *tmp;
  long n;

  if (b->raw || b->borrowed) {
    memcpy (buf, (b->raw ? b->raw : b->borrowed) + in_grain, count);
    return 0;
  }
  tmp = malloc (w->grain_bytes);
  if (tmp == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  n = vmdk_inflate (b->blob + GRAIN_MARKER_SIZE, get_le32 (b->blob + 8), tmp,
                    w->grain_bytes, w->io->name, 0);
  if (n != -1)
    memcpy (buf, tmp + in_grain, count);
  free (tmp);
  return n == -1 ? -1 : 0;
}

/* Grain g as stored (or zeroes, or the layers below if unallocated):
 * what a new FILLING buffer starts from.  Lock held.
 */
static int
read_stored (struct stream_writer *w, uint64_t g, unsigned char *out,
             const struct write_ctx *ctx)
{
  uint32_t sector = stream_map_get (&w->map, g);
  size_t len = grain_len (w, g);
  struct run run = {
    .kind = RUN_COMPRESSED,
    .file_offset = (uint64_t) sector * SECTOR,
    .grain_start = g * w->grain_bytes,
  };

  memset (out + len, 0, w->grain_bytes - len);
  if (sector)
    return stream_read (w->reader, &run, 1, run.grain_start, out, len);
  if (ctx && ctx->has_parent)
    return ctx->read_below (ctx->opaque, out, len,
                            w->extent_start + run.grain_start);
  memset (out, 0, len);
  return 0;
}

int
stream_writer_read (struct stream_writer *w, const struct run *run,
                    uint64_t offset, void *buf, size_t count)
{
  uint64_t g = run->grain_start / w->grain_bytes;
  uint64_t in_grain = offset - run->grain_start;
  struct run stored = *run;
  struct gbuf *b;
  int r;

  pthread_mutex_lock (&w->lock);
  if (writer_check_readable (w) == -1) {
    pthread_mutex_unlock (&w->lock);
    return -1;
  }
  b = gbuf_find (w, g, true);
  if (b == NULL)
    b = gbuf_find (w, g, false);
  if (b) {
    r = copy_buffered (w, b, in_grain, buf, count);
    pthread_mutex_unlock (&w->lock);
    return r;
  }
  stored.file_offset = (uint64_t) stream_map_get (&w->map, g) * SECTOR;
  pthread_mutex_unlock (&w->lock);
  if (stored.file_offset == 0) {  /* dropped as zeroes meanwhile */
    memset (buf, 0, count);
    return 0;
  }
  return stream_read (w->reader, &stored, 1, offset, buf, count);
}

int
stream_writer_lookup (struct stream_writer *w, uint64_t offset, uint64_t max,
                      struct run *run)
{
  uint64_t g = offset / w->grain_bytes, in_grain = offset % w->grain_bytes;

  pthread_mutex_lock (&w->lock);
  if (writer_check_readable (w) == -1) {
    pthread_mutex_unlock (&w->lock);
    return -1;
  }
  run->length = w->grain_bytes - in_grain;
  if (stream_map_get (&w->map, g) || gbuf_find (w, g, true) ||
      gbuf_find (w, g, false)) {
    run->kind = RUN_COMPRESSED;
    run->file_offset = (uint64_t) stream_map_get (&w->map, g) * SECTOR;
    run->grain_start = offset - in_grain;
  }
  else {
    run->kind = RUN_UNALLOC;
    while (run->length < max && ++g < w->map.nr_grains &&
           stream_map_get (&w->map, g) == 0 && !gbuf_find (w, g, true) &&
           !gbuf_find (w, g, false))
      run->length += w->grain_bytes;
  }
  pthread_mutex_unlock (&w->lock);
  run->length = MIN (run->length, max);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Writing. */

/* Make room for a new grain buffer (with a raw buffer if raw).
 * Returns true if there was room; false after doing something that may
 * make some (the lock was dropped: look again).  Lock held.
 */
static bool
room_for (struct stream_writer *w, bool raw)
{
  bool raw_full = raw && w->raw_bytes + w->grain_bytes > MAX_RAW_BYTES;
  struct gbuf *b;

  if (!raw_full && w->ready_bytes <= 2 * REORDER_BYTES)
    return true;
  /* Seal the oldest grain being filled that can be, as it is. */
  if (raw_full)
    for (b = w->filling_head; b; b = b->fnext)
      if (gbuf_find (w, b->g, false) == NULL) {
        writer_seal (w, b);
        writer_pump (w);
        return false;
      }
  /* Wait for a grain being compressed or written, unless storing one
   * now (which waiters may force) makes room.
   */
  w->raw_waiters++;
  if (writer_pump (w) == 0)
    pthread_cond_wait (&w->cond, &w->lock);
  w->raw_waiters--;
  return false;
}

/* Mark sectors [from, to) (bytes, within the grain) as written:
 * only whole sectors count.
 */
static void
cover (struct gbuf *b, uint64_t from, uint64_t to)
{
  uint64_t s;

  for (s = div_round_up (from, SECTOR); s < to / SECTOR; ++s)
    if (!(b->covered[s / 8] & (1 << (s % 8)))) {
      b->covered[s / 8] |= 1 << (s % 8);
      b->nr_covered++;
    }
}

/* Write count bytes at in_grain of grain g.  Lock held. */
static int
write_piece (struct stream_writer *w, uint64_t g, uint64_t in_grain,
             const unsigned char *buf, size_t count,
             const struct write_ctx *ctx)
{
  uint64_t len = grain_len (w, g);
  struct gbuf *b, *older;

  for (;;) {
    if (writer_check_error (w) == -1)
      return -1;
    b = gbuf_find (w, g, true);
    if (b || room_for (w, true))
      break;
  }
  older = gbuf_find (w, g, false);
  if (b == NULL) {
    b = gbuf_new_filling (w, g);
    if (b == NULL)
      return -1;
    /* Start from what the image holds, unless all of it is replaced. */
    if (in_grain != 0 || count != len) {
      int r = older ? copy_buffered (w, older, 0, b->raw, len)
                    : read_stored (w, g, b->raw, ctx);

      if (r == -1) {
        gbuf_finish (w, b);
        return -1;
      }
    }
  }
  memcpy (b->raw + in_grain, buf, count);
  cover (b, in_grain, in_grain + count == len ? len : in_grain + count);
  if (b->nr_covered == len / SECTOR && older == NULL)
    writer_seal (w, b);
  writer_pump (w);
  return 0;
}

/* Write the whole of grain g: compressed straight from buf, unless
 * the grain is buffered already (then it goes through its buffer, to
 * keep the order of versions).  Lock held.
 */
static int
write_whole (struct stream_writer *w, uint64_t g, const unsigned char *buf,
             const struct write_ctx *ctx)
{
  struct gbuf *b;

  for (;;) {
    if (writer_check_error (w) == -1)
      return -1;
    if (gbuf_find (w, g, true) || gbuf_find (w, g, false))
      return write_piece (w, g, 0, buf, grain_len (w, g), ctx);
    if (room_for (w, false))
      break;
  }
  b = gbuf_new (w, g, SEALED);
  if (b == NULL)
    return -1;
  b->borrowed = buf;
  writer_compress (w, b);
  writer_pump (w);
  return 0;
}

int
stream_writer_pwrite (struct stream_writer *w, const void *buf, size_t count,
                      uint64_t offset, const struct write_ctx *ctx)
{
  const unsigned char *p = buf;
  int r = 0;

  pthread_mutex_lock (&w->lock);
  w->has_parent = ctx->has_parent;
  while (r == 0 && count > 0) {
    uint64_t g = offset / w->grain_bytes, in_grain = offset % w->grain_bytes;
    size_t n = MIN ((uint64_t) count, w->grain_bytes - in_grain);

    if (in_grain == 0 && n == grain_len (w, g))
      r = write_whole (w, g, p, ctx);
    else
      r = write_piece (w, g, in_grain, p, n, ctx);
    p += n;
    offset += n;
    count -= n;
  }
  pthread_mutex_unlock (&w->lock);
  return r;
}

/* Make whole grain g unallocated (it reads as zeroes: nothing below).
 * Lock held.
 */
static int
unallocate (struct stream_writer *w, uint64_t g)
{
  struct gbuf *b = gbuf_find (w, g, true);

  if (b)
    gbuf_finish (w, b);
  if (stream_map_set (&w->map, g, 0) == -1)
    return -1;
  w->changed = true;
  writer_skip_expected (w, g);
  writer_pump (w);
  return 0;
}

/* Zero [offset, +count) of grain g, the way flags allow. */
static int
zero_piece (struct stream_writer *w, uint64_t g, uint64_t in_grain,
            size_t count, unsigned flags, const struct write_ctx *ctx)
{
  static const unsigned char zeroes[65536];
  bool whole = in_grain == 0 && count == grain_len (w, g);

  if (whole && !ctx->has_parent && gbuf_find (w, g, false) == NULL)
    return unallocate (w, g);
  if (flags & EXTENT_ZERO_FAST)
    return vmdk_error (ENOTSUP, "fast zero not possible: zeroing part of a "
                       "compressed grain means rewriting it");
  while (count > 0) {
    size_t n = MIN (count, sizeof zeroes);

    if (write_piece (w, g, in_grain, zeroes, n, ctx) == -1)
      return -1;
    in_grain += n;
    count -= n;
  }
  return 0;
}

int
stream_writer_zero (struct stream_writer *w, uint64_t offset, uint64_t count,
                    unsigned flags, const struct write_ctx *ctx)
{
  uint64_t o, n, end = offset + count;
  int r = 0;

  /* Fast zero fails before anything changes: only whole grains with
   * nothing below are fast.
   */
  if (flags & EXTENT_ZERO_FAST)
    for (o = offset; o < end; o += n) {
      n = MIN (end - o, w->grain_bytes - o % w->grain_bytes);
      if (ctx->has_parent ||
          !(o % w->grain_bytes == 0 && n == grain_len (w, o / w->grain_bytes)))
        return vmdk_error (ENOTSUP, "fast zero not possible: zeroing part "
                           "of a compressed grain means rewriting it");
    }
  if (flags & EXTENT_ZERO_CHECK_ONLY)
    return 0;
  pthread_mutex_lock (&w->lock);
  w->has_parent = ctx->has_parent;
  for (o = offset; r == 0 && o < end; o += n) {
    n = MIN (end - o, w->grain_bytes - o % w->grain_bytes);
    r = writer_check_error (w);
    if (r == 0)
      r = zero_piece (w, o / w->grain_bytes, o % w->grain_bytes, n,
                      flags & ~EXTENT_ZERO_FAST, ctx);
  }
  pthread_mutex_unlock (&w->lock);
  return r;
}

/* Advisory: deallocate whole grains where nothing below shows. */
int
stream_writer_trim (struct stream_writer *w, uint64_t offset, uint64_t count,
                    const struct write_ctx *ctx)
{
  uint64_t o, n, end = offset + count;
  int r = 0;

  if (ctx->has_parent)
    return 0;
  pthread_mutex_lock (&w->lock);
  for (o = offset; r == 0 && o < end; o += n) {
    uint64_t g = o / w->grain_bytes;

    n = MIN (end - o, w->grain_bytes - o % w->grain_bytes);
    if (o % w->grain_bytes == 0 && n == grain_len (w, g) &&
        gbuf_find (w, g, false) == NULL)
      r = unallocate (w, g);
  }
  pthread_mutex_unlock (&w->lock);
  return r;
}

/* ------------------------------------------------------------------ */

struct stream_writer *
stream_writer_new (struct vmdk_io *io, struct stream *reader,
                   const struct sparse_header *h, struct stream_map *m,
                   uint64_t data_end, bool has_tail,
                   uint64_t extent_start, uint64_t extent_length, int level)
{
  struct stream_writer *w = calloc (1, sizeof *w);
  uint64_t file_size;

  if (w == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  if (io->ops->get_size (io, &file_size) == -1) {
    free (w);
    return NULL;
  }
  w->hash_size = 4096;
  w->hash = calloc (w->hash_size, sizeof *w->hash);
  if (w->hash == NULL) {
    free (w);
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  w->io = io;
  w->reader = reader;
  if (stream_map_copy (&w->map, m) == -1) {
    free (w->hash);
    free (w);
    return NULL;
  }
  w->grain_bytes = h->grain_size * SECTOR;
  w->raws.bytes = w->grain_bytes;
  w->blob_cap = div_round_up (GRAIN_MARKER_SIZE +
                              vmdk_deflate_bound (w->grain_bytes, level),
                              SECTOR) * SECTOR;
  w->blobs.bytes = w->blob_cap;
  w->extent_start = extent_start;
  w->extent_length = extent_length;
  w->level = level;
  w->data_end = data_end;
  w->writeback_from = data_end;
  w->file_end = file_size;
  /* A valid tail is cut off before it is overwritten; a torn one (a
   * recovered image) is simply overwritten and cut at the next flush.
   */
  w->tail_valid = has_tail;
  w->changed = !has_tail;       /* so the next flush writes one */
  /* What every flush leaves: VMware's stream header (version 3, the
   * newline test, compressed grains with markers, the directory at the
   * end; no redundant directory, which nothing would keep in step).
   */
  w->header = *h;
  w->header.version = 3;
  w->header.flags = (h->flags & ~SPARSE_FLAG_RGD) | SPARSE_FLAG_NL_DETECT |
    SPARSE_FLAG_COMPRESSED | SPARSE_FLAG_MARKERS;
  w->header.rgd_offset = 0;
  w->header.gd_offset = SPARSE_GD_AT_END;
  pthread_mutex_init (&w->lock, NULL);
  pthread_cond_init (&w->cond, NULL);
  return w;
}

void
stream_writer_free (struct stream_writer *w)
{
  size_t i;

  if (w == NULL)
    return;
  for (i = 0; i < w->hash_size; ++i)
    while (w->hash[i])
      gbuf_finish (w, w->hash[i]);
  free (w->hash);
  free (w->heap);
  buf_pool_free (&w->raws);
  buf_pool_free (&w->blobs);
  stream_map_free (&w->map);
  pthread_cond_destroy (&w->cond);
  pthread_mutex_destroy (&w->lock);
  free (w);
}
