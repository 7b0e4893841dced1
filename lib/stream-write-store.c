/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Storing the streamOptimized writer's grains: compressing sealed
 * buffers, writing READY ones in grain order at the end of the data,
 * and the flush that writes the metadata tail.  The tail is cut off,
 * with the header marked unclean, before the first grain after it
 * (stream-write.c explains why).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "error.h"
#include "le.h"
#include "stream.h"
#include "stream-write-internal.h"
#include "zero.h"

/* Write the header as it must be, with uncleanShutdown set or clear. */
static int
write_header (struct stream_writer *w, uint8_t unclean)
{
  unsigned char buf[SPARSE_HEADER_SIZE];

  w->header.unclean_shutdown = unclean;
  sparse_header_encode (&w->header, buf);
  return w->io->ops->pwrite (w->io, buf, sizeof buf, 0);
}

/* Before the first grain after a flush overwrites the tail: mark the
 * header unclean, cut the tail off and sync, so that a crash can only
 * ever leave a file that says it needs recovering.  Lock held.
 */
static int
invalidate_tail (struct stream_writer *w)
{
  struct vmdk_io *io = w->io;

  if (write_header (w, 1) == -1 ||
      io->ops->truncate (io, w->data_end) == -1 ||
      io->ops->flush (io) == -1)
    return -1;
  w->tail_valid = false;
  w->file_end = w->data_end;
  stream_set_file_size (w->reader, w->data_end);
  return 0;
}

/* Once a run of WRITEBACK_BYTES is stored with no grain still being
 * written below its end, start its writeback.  Lock held; dropped
 * while starting it.
 */
static void
start_writeback (struct stream_writer *w)
{
  uint64_t from = w->writeback_from, to = w->data_end;

  if (w->io->ops->start_writeback == NULL || w->inflight > 0 ||
      to - from < WRITEBACK_BYTES)
    return;
  w->writeback_from = to;
  pthread_mutex_unlock (&w->lock);
  w->io->ops->start_writeback (w->io, from, to - from);
  pthread_mutex_lock (&w->lock);
}

/* Store a READY grain at the end of the data.  Lock held; dropped
 * while writing.
 */
static void
emit (struct stream_writer *w, struct gbuf *b)
{
  uint64_t off;
  int r;

  if (w->tail_valid && invalidate_tail (w) == -1) {
    writer_set_error (w);
    gbuf_finish (w, b);
    return;
  }
  if (w->data_end > MAX_STREAM_BYTES - b->blob_len) {
    vmdk_error (ENOSPC, "%s: the stream file is full: a sparse extent "
                "cannot grow past %" PRIu64 " bytes", w->io->name,
                MAX_STREAM_BYTES);
    writer_set_error (w);
    gbuf_finish (w, b);
    return;
  }
  off = w->data_end;
  w->data_end += b->blob_len;
  w->file_end = MAX (w->file_end, w->data_end);
  b->state = WRITING;
  w->inflight++;
  if (b->g >= w->next_expected)
    w->next_expected = b->g + 1;
  pthread_mutex_unlock (&w->lock);
  r = w->io->ops->pwrite (w->io, b->blob, b->blob_len, off);
  pthread_mutex_lock (&w->lock);
  w->inflight--;
  if (r == 0) {
    stream_set_file_size (w->reader, w->file_end);
    r = stream_map_set (&w->map, b->g, off / SECTOR);
    w->changed = true;
  }
  if (r == -1)
    writer_set_error (w);
  gbuf_finish (w, b);
  if (r == 0)
    start_writeback (w);
}

/* May the lowest READY grain be stored now?  If it is the next in
 * order (or the client went back below it: waiting cannot restore the
 * order then), or because the budget is spent, or because a writer
 * waits for room.
 */
static bool
may_emit (const struct stream_writer *w)
{
  const struct gbuf *min = w->heap_len ? w->heap[0] : NULL;

  return min && !w->flushing &&
    (min->g <= w->next_expected || w->ready_bytes > REORDER_BYTES ||
     w->raw_waiters > 0);
}

/* Store what may be stored; returns how many grains it stored.  One
 * thread at a time stores (the others go back to compressing): it
 * re-checks under the lock after each grain, so grains made ready
 * meanwhile are not left behind, and the file system's per-file write
 * lock is not fought over (concurrent appends spent 4% of the CPU
 * spinning on it).  Lock held.
 */
unsigned
writer_pump (struct stream_writer *w)
{
  unsigned n = 0;

  if (w->pumping)
    return 0;
  w->pumping = true;
  while (may_emit (w)) {
    struct gbuf *b = w->heap[0];

    ready_heap_remove (w, b);
    emit (w, b);
    n++;
  }
  w->pumping = false;
  return n;
}

/* Grain g reads as zeroes without being stored: if it was the one
 * awaited, the order moves on past it.
 */
void
writer_skip_expected (struct stream_writer *w, uint64_t g)
{
  if (g == w->next_expected)
    w->next_expected++;
}

/* Compress a SEALED buffer (its raw bytes, or the borrowed ones of a
 * whole-grain write): READY it, or drop it if it is all zeroes with
 * nothing below to hide.  Its grain has nothing else in the pipeline.
 * Lock held; dropped while compressing.
 */
void
writer_compress (struct stream_writer *w, struct gbuf *b)
{
  const unsigned char *data = b->raw ? b->raw : b->borrowed;
  size_t len = grain_len (w, b->g);
  unsigned char *blob = buf_pool_get (&w->blobs);
  bool zero;
  long n = 0;

  pthread_mutex_unlock (&w->lock);
  zero = !w->has_parent && is_all_zero (data, len);
  if (!zero && blob == NULL)
    n = vmdk_error (ENOMEM, "malloc: %m");
  else if (!zero)
    n = vmdk_deflate (data, len, blob + GRAIN_MARKER_SIZE,
                      w->blob_cap - GRAIN_MARKER_SIZE, w->level);
  pthread_mutex_lock (&w->lock);
  gbuf_free_raw (w, b);
  b->borrowed = NULL;
  pthread_cond_broadcast (&w->cond);
  if (n == -1 || zero) {
    buf_pool_put (&w->blobs, blob);
    if (n == -1 || stream_map_set (&w->map, b->g, 0) == -1)
      writer_set_error (w);
    else {
      w->changed = true;
      writer_skip_expected (w, b->g);
    }
    gbuf_finish (w, b);
    return;
  }
  b->blob_len = div_round_up (GRAIN_MARKER_SIZE + n, SECTOR) * SECTOR;
  put_le64 (blob, b->g * w->grain_bytes / SECTOR);
  put_le32 (blob + 8, n);
  memset (blob + GRAIN_MARKER_SIZE + n, 0, b->blob_len - GRAIN_MARKER_SIZE - n);
  b->blob = blob;
  b->state = READY;
  w->ready_bytes += b->blob_len;
  if (ready_heap_push (w, b) == -1) {
    writer_set_error (w);
    gbuf_finish (w, b);
  }
}

/* Seal a FILLING buffer whose grain has nothing in the pipeline. */
void
writer_seal (struct stream_writer *w, struct gbuf *b)
{
  gbuf_unlink_filling (w, b);
  b->state = SEALED;
  writer_compress (w, b);
}

/* ------------------------------------------------------------------ */
/* Flushing. */

/* The work a flush covering buffers older than stamp still has: seal a
 * FILLING grain, store a READY one (the lowest first), or wait for
 * grains other threads are compressing or writing.  Returns false when
 * everything it covers is stored.  Lock held.
 */
static bool
flush_step (struct stream_writer *w, uint64_t stamp)
{
  struct gbuf *b, *lowest = NULL;
  bool waiting = w->inflight > 0;
  size_t i;

  for (b = w->filling_head; b && b->stamp < stamp; b = b->fnext)
    if (gbuf_find (w, b->g, false) == NULL) {
      writer_seal (w, b);
      return true;
    }
  for (i = 0; i < w->heap_len; ++i)
    if (w->heap[i]->stamp < stamp &&
        (lowest == NULL || ready_heap_less (w->heap[i], lowest)))
      lowest = w->heap[i];
  if (lowest) {
    ready_heap_remove (w, lowest);
    emit (w, lowest);
    return true;
  }
  /* Grains sealed by other threads, or FILLING behind a stored one. */
  for (i = 0; !waiting && i < w->hash_size; ++i)
    for (b = w->hash[i]; b && !waiting; b = b->hnext)
      waiting = b->stamp < stamp;
  if (waiting)
    pthread_cond_wait (&w->cond, &w->lock);
  return waiting;
}

/* Write the tail after the data and sync.  A valid tail in its way
 * (the map changed without a grain being stored) is invalidated
 * first, like before a grain.  Lock held; dropped while writing.
 */
static int
write_tail (struct stream_writer *w)
{
  struct vmdk_io *io = w->io;
  uint64_t at = w->data_end;
  unsigned char *tail;
  size_t len;
  int r;

  if (w->tail_valid && invalidate_tail (w) == -1)
    return -1;
  w->changed = false;
  if (stream_tail_build (&w->map, &w->header, at, &tail, &len) == -1)
    return -1;
  pthread_mutex_unlock (&w->lock);
  r = io->ops->pwrite (io, tail, len, at);
  free (tail);
  if (r == 0 && w->file_end > at + len)
    r = io->ops->truncate (io, at + len);
  /* The tail is durable before the header says the file is clean. */
  if (r == 0)
    r = io->ops->flush (io);
  if (r == 0)
    r = write_header (w, 0);
  if (r == 0)
    r = io->ops->flush (io);
  pthread_mutex_lock (&w->lock);
  if (r == 0) {
    w->tail_valid = true;
    w->file_end = at + len;
    stream_set_file_size (w->reader, w->file_end);
  }
  return r;
}

int
stream_writer_flush (struct stream_writer *w)
{
  uint64_t stamp;
  int r;

  pthread_mutex_lock (&w->lock);
  while (w->flushing)
    pthread_cond_wait (&w->cond, &w->lock);
  w->flushing = true;
  stamp = w->next_stamp;
  while (w->error == 0 && flush_step (w, stamp))
    ;
  r = writer_check_error (w);
  if (r == 0 && w->changed) {
    r = write_tail (w);
    if (r == -1)
      writer_set_error (w);
  }
  else if (r == 0) {
    pthread_mutex_unlock (&w->lock);
    r = w->io->ops->flush (w->io);
    pthread_mutex_lock (&w->lock);
  }
  w->flushing = false;
  pthread_cond_broadcast (&w->cond);
  writer_pump (w);
  pthread_mutex_unlock (&w->lock);
  return r;
}
