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
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "deflate.h"
#include "error.h"
#include "inflate.h"
#include "le.h"
#include "stream.h"
#include "stream-write.h"

/* Raw grain buffers (FILLING and SEALED). */
#define MAX_RAW_BYTES (32 * 1024 * 1024)
/* Compressed grains waiting for their turn; twice this stops writers
 * while a flush writes the tail.
 */
#define REORDER_BYTES (64 * 1024 * 1024)
/* Sparse extent files address sectors with 32-bit entries. */
#define MAX_STREAM_BYTES ((UINT64_C (1) << 32) * SECTOR)
/* Buffers kept for reuse: allocating and freeing one per grain costs
 * page faults as the heap grows and shrinks.
 */
#define POOL_SIZE 64

enum gbuf_state { FILLING, SEALED, READY, WRITING };

struct pool {
  void *free[POOL_SIZE];
  unsigned n;
  size_t bytes;                 /* of each buffer */
};

struct gbuf {
  uint64_t g;                   /* grain index in the extent */
  enum gbuf_state state;
  uint64_t stamp;               /* creation order (flushes cover older) */
  unsigned char *raw;           /* FILLING, SEALED */
  const unsigned char *borrowed; /* SEALED: a whole-grain write's bytes */
  uint8_t *covered;             /* FILLING: a bit per sector written */
  uint32_t nr_covered;
  unsigned char *blob;          /* READY, WRITING: marker + data, padded */
  size_t blob_len;              /* a multiple of the sector size */
  struct gbuf *hnext;           /* hash chain */
  struct gbuf *fprev, *fnext;   /* FILLING list, oldest first */
  size_t heap_pos;              /* READY: index in the heap */
};

struct stream_writer {
  struct vmdk_io *io;
  struct stream *reader;
  struct sparse_header header;  /* as it must be on disk */
  struct stream_map map;
  uint64_t grain_bytes, extent_length, extent_start;
  int level;
  size_t blob_cap;              /* room for a marker and any compressed grain */
  bool has_parent;

  pthread_mutex_t lock;         /* everything below */
  pthread_cond_t cond;          /* any buffer or flush state changed */
  struct gbuf **hash;
  size_t hash_size;
  struct gbuf *filling_head, *filling_tail;
  struct gbuf **heap;
  size_t heap_len, heap_alloc;
  uint64_t next_stamp;
  size_t raw_bytes, ready_bytes;
  unsigned raw_waiters;
  uint64_t next_expected;       /* the grain that would keep order */
  uint64_t data_end;            /* where the next grain goes */
  uint64_t file_end;
  bool tail_valid;              /* the file ends with a valid tail */
  bool changed;                 /* the map changed since the last tail */
  unsigned inflight;            /* WRITING */
  bool pumping;                 /* a thread is storing READY grains */
  bool flushing;
  int error;                    /* sticky: a stored grain was lost */
  char errmsg[256];
  struct pool raws, blobs;      /* of grain_bytes and blob_cap bytes */
};

/* ------------------------------------------------------------------ */
/* Buffers: the hash by grain, the FILLING list, the READY heap. */

static size_t
bucket (const struct stream_writer *w, uint64_t g)
{
  return (g * UINT64_C (0x9e3779b97f4a7c15)) >> 40 & (w->hash_size - 1);
}

/* The FILLING buffer of grain g (newest = true), or the one past it. */
static struct gbuf *
find (const struct stream_writer *w, uint64_t g, bool filling)
{
  struct gbuf *b;

  for (b = w->hash[bucket (w, g)]; b; b = b->hnext)
    if (b->g == g && (b->state == FILLING) == filling)
      return b;
  return NULL;
}

static void
unlink_filling (struct stream_writer *w, struct gbuf *b)
{
  if (b->fprev) b->fprev->fnext = b->fnext; else w->filling_head = b->fnext;
  if (b->fnext) b->fnext->fprev = b->fprev; else w->filling_tail = b->fprev;
  b->fprev = b->fnext = NULL;
}

static bool
heap_less (const struct gbuf *a, const struct gbuf *b)
{
  return a->g < b->g;
}

static void
heap_swap (struct stream_writer *w, size_t i, size_t j)
{
  struct gbuf *t = w->heap[i];

  w->heap[i] = w->heap[j];
  w->heap[j] = t;
  w->heap[i]->heap_pos = i;
  w->heap[j]->heap_pos = j;
}

static void
heap_fix (struct stream_writer *w, size_t i)
{
  while (i > 0 && heap_less (w->heap[i], w->heap[(i - 1) / 2])) {
    heap_swap (w, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;

    if (l < w->heap_len && heap_less (w->heap[l], w->heap[m])) m = l;
    if (r < w->heap_len && heap_less (w->heap[r], w->heap[m])) m = r;
    if (m == i)
      return;
    heap_swap (w, i, m);
    i = m;
  }
}

static int
heap_push (struct stream_writer *w, struct gbuf *b)
{
  if (w->heap_len == w->heap_alloc) {
    size_t n = w->heap_alloc ? 2 * w->heap_alloc : 256;
    struct gbuf **h = realloc (w->heap, n * sizeof *h);

    if (h == NULL)
      return vmdk_error (ENOMEM, "realloc: %m");
    w->heap = h;
    w->heap_alloc = n;
  }
  b->heap_pos = w->heap_len;
  w->heap[w->heap_len++] = b;
  heap_fix (w, b->heap_pos);
  return 0;
}

static void
heap_remove (struct stream_writer *w, struct gbuf *b)
{
  size_t i = b->heap_pos;

  heap_swap (w, i, --w->heap_len);
  if (i < w->heap_len)
    heap_fix (w, i);
}

/* A buffer of the pool's size (lock held). */
static void *
pool_get (struct pool *p)
{
  return p->n ? p->free[--p->n] : malloc (p->bytes);
}

static void
pool_put (struct pool *p, void *buf)
{
  if (buf && p->n < POOL_SIZE)
    p->free[p->n++] = buf;
  else
    free (buf);
}

static void
pool_free (struct pool *p)
{
  while (p->n)
    free (p->free[--p->n]);
}

/* The number of bytes of grain g (the last may be cut by the extent). */
static uint64_t
grain_len (const struct stream_writer *w, uint64_t g)
{
  return MIN (w->grain_bytes, w->extent_length - g * w->grain_bytes);
}

/* A new buffer for grain g, in the hash (lock held). */
static struct gbuf *
new_gbuf (struct stream_writer *w, uint64_t g, enum gbuf_state state)
{
  struct gbuf *b = calloc (1, sizeof *b);

  if (b == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  b->g = g;
  b->state = state;
  b->stamp = w->next_stamp++;
  b->hnext = w->hash[bucket (w, g)];
  w->hash[bucket (w, g)] = b;
  return b;
}

static void finish (struct stream_writer *w, struct gbuf *b);

static struct gbuf *
new_filling (struct stream_writer *w, uint64_t g)
{
  struct gbuf *b = new_gbuf (w, g, FILLING);
  size_t bits = w->grain_bytes / SECTOR;

  if (b == NULL)
    return NULL;
  b->fprev = w->filling_tail;
  if (w->filling_tail) w->filling_tail->fnext = b; else w->filling_head = b;
  w->filling_tail = b;
  b->raw = pool_get (&w->raws);
  if (b->raw)
    w->raw_bytes += w->grain_bytes;
  b->covered = calloc ((bits + 7) / 8, 1);
  if (b->raw == NULL || b->covered == NULL) {
    finish (w, b);
    vmdk_error (ENOMEM, "malloc: grain buffer: %m");
    return NULL;
  }
  return b;
}

static void
free_raw (struct stream_writer *w, struct gbuf *b)
{
  if (b->raw) {
    pool_put (&w->raws, b->raw);
    b->raw = NULL;
    w->raw_bytes -= w->grain_bytes;
  }
  free (b->covered);
  b->covered = NULL;
}

/* The buffer's grain is stored (or dropped): forget it. */
static void
finish (struct stream_writer *w, struct gbuf *b)
{
  struct gbuf **p;

  for (p = &w->hash[bucket (w, b->g)]; *p != b; p = &(*p)->hnext)
    ;
  *p = b->hnext;
  if (b->state == FILLING)
    unlink_filling (w, b);
  free_raw (w, b);
  if (b->blob) {
    w->ready_bytes -= b->blob_len;
    pool_put (&w->blobs, b->blob);
  }
  free (b);
  pthread_cond_broadcast (&w->cond);
}

/* Record the first error of storing a grain: every later request and
 * flush fails with it (the data of a completed write was lost).
 */
static void
set_error (struct stream_writer *w)
{
  if (w->error == 0) {
    w->error = errno ? errno : EIO;
    snprintf (w->errmsg, sizeof w->errmsg, "%s", vmdk_errmsg ());
  }
}

static int
check_error (const struct stream_writer *w)
{
  if (w->error)
    return vmdk_error (w->error, "%s: an earlier write could not be "
                       "stored: %s", w->io->name, w->errmsg);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Storing grains. */

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

/* Store a READY grain at the end of the data.  Lock held; dropped
 * while writing.
 */
static void
emit (struct stream_writer *w, struct gbuf *b)
{
  uint64_t off;
  int r;

  if (w->tail_valid && invalidate_tail (w) == -1) {
    set_error (w);
    finish (w, b);
    return;
  }
  if (w->data_end > MAX_STREAM_BYTES - b->blob_len) {
    vmdk_error (ENOSPC, "%s: the stream file is full: a sparse extent "
                "cannot grow past %" PRIu64 " bytes", w->io->name,
                MAX_STREAM_BYTES);
    set_error (w);
    finish (w, b);
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
    set_error (w);
  finish (w, b);
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
static unsigned
pump (struct stream_writer *w)
{
  unsigned n = 0;

  if (w->pumping)
    return 0;
  w->pumping = true;
  while (may_emit (w)) {
    struct gbuf *b = w->heap[0];

    heap_remove (w, b);
    emit (w, b);
    n++;
  }
  w->pumping = false;
  return n;
}

/* Grain g reads as zeroes without being stored: if it was the one
 * awaited, the order moves on past it.
 */
static void
skip_expected (struct stream_writer *w, uint64_t g)
{
  if (g == w->next_expected)
    w->next_expected++;
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* Compress a SEALED buffer (its raw bytes, or the borrowed ones of a
 * whole-grain write): READY it, or drop it if it is all zeroes with
 * nothing below to hide.  Its grain has nothing else in the pipeline.
 * Lock held; dropped while compressing.
 */
static void
compress (struct stream_writer *w, struct gbuf *b)
{
  const unsigned char *data = b->raw ? b->raw : b->borrowed;
  size_t len = grain_len (w, b->g);
  unsigned char *blob = pool_get (&w->blobs);
  bool zero;
  long n = 0;

  pthread_mutex_unlock (&w->lock);
  zero = !w->has_parent && all_zero (data, len);
  if (!zero && blob == NULL)
    n = vmdk_error (ENOMEM, "malloc: %m");
  else if (!zero)
    n = vmdk_deflate (data, len, blob + GRAIN_MARKER_SIZE,
                      w->blob_cap - GRAIN_MARKER_SIZE, w->level);
  pthread_mutex_lock (&w->lock);
  free_raw (w, b);
  b->borrowed = NULL;
  pthread_cond_broadcast (&w->cond);
  if (n == -1 || zero) {
    pool_put (&w->blobs, blob);
    if (n == -1 || stream_map_set (&w->map, b->g, 0) == -1)
      set_error (w);
    else {
      w->changed = true;
      skip_expected (w, b->g);
    }
    finish (w, b);
    return;
  }
  b->blob_len = div_round_up (GRAIN_MARKER_SIZE + n, SECTOR) * SECTOR;
  put_le64 (blob, b->g * w->grain_bytes / SECTOR);
  put_le32 (blob + 8, n);
  memset (blob + GRAIN_MARKER_SIZE + n, 0, b->blob_len - GRAIN_MARKER_SIZE - n);
  b->blob = blob;
  b->state = READY;
  w->ready_bytes += b->blob_len;
  if (heap_push (w, b) == -1) {
    set_error (w);
    finish (w, b);
  }
}

/* Seal a FILLING buffer whose grain has nothing in the pipeline. */
static void
seal (struct stream_writer *w, struct gbuf *b)
{
  unlink_filling (w, b);
  b->state = SEALED;
  compress (w, b);
}

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
  b = find (w, g, true);
  if (b == NULL)
    b = find (w, g, false);
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
  run->length = w->grain_bytes - in_grain;
  if (stream_map_get (&w->map, g) || find (w, g, true) || find (w, g, false)) {
    run->kind = RUN_COMPRESSED;
    run->file_offset = (uint64_t) stream_map_get (&w->map, g) * SECTOR;
    run->grain_start = offset - in_grain;
  }
  else {
    run->kind = RUN_UNALLOC;
    while (run->length < max && ++g < w->map.nr_grains &&
           stream_map_get (&w->map, g) == 0 && !find (w, g, true) &&
           !find (w, g, false))
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
      if (find (w, b->g, false) == NULL) {
        seal (w, b);
        pump (w);
        return false;
      }
  /* Wait for a grain being compressed or written, unless storing one
   * now (which waiters may force) makes room.
   */
  w->raw_waiters++;
  if (pump (w) == 0)
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
    if (check_error (w) == -1)
      return -1;
    b = find (w, g, true);
    if (b || room_for (w, true))
      break;
  }
  older = find (w, g, false);
  if (b == NULL) {
    b = new_filling (w, g);
    if (b == NULL)
      return -1;
    /* Start from what the image holds, unless all of it is replaced. */
    if (in_grain != 0 || count != len) {
      int r = older ? copy_buffered (w, older, 0, b->raw, len)
                    : read_stored (w, g, b->raw, ctx);

      if (r == -1) {
        finish (w, b);
        return -1;
      }
    }
  }
  memcpy (b->raw + in_grain, buf, count);
  cover (b, in_grain, in_grain + count == len ? len : in_grain + count);
  if (b->nr_covered == len / SECTOR && older == NULL)
    seal (w, b);
  pump (w);
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
    if (check_error (w) == -1)
      return -1;
    if (find (w, g, true) || find (w, g, false))
      return write_piece (w, g, 0, buf, grain_len (w, g), ctx);
    if (room_for (w, false))
      break;
  }
  b = new_gbuf (w, g, SEALED);
  if (b == NULL)
    return -1;
  b->borrowed = buf;
  compress (w, b);
  pump (w);
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
  struct gbuf *b = find (w, g, true);

  if (b)
    finish (w, b);
  if (stream_map_set (&w->map, g, 0) == -1)
    return -1;
  w->changed = true;
  skip_expected (w, g);
  pump (w);
  return 0;
}

/* Zero [offset, +count) of grain g, the way flags allow. */
static int
zero_piece (struct stream_writer *w, uint64_t g, uint64_t in_grain,
            size_t count, unsigned flags, const struct write_ctx *ctx)
{
  static const unsigned char zeroes[65536];
  bool whole = in_grain == 0 && count == grain_len (w, g);

  if (whole && !ctx->has_parent && find (w, g, false) == NULL)
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
    r = check_error (w);
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
        find (w, g, false) == NULL)
      r = unallocate (w, g);
  }
  pthread_mutex_unlock (&w->lock);
  return r;
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
    if (find (w, b->g, false) == NULL) {
      seal (w, b);
      return true;
    }
  for (i = 0; i < w->heap_len; ++i)
    if (w->heap[i]->stamp < stamp &&
        (lowest == NULL || heap_less (w->heap[i], lowest)))
      lowest = w->heap[i];
  if (lowest) {
    heap_remove (w, lowest);
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
  r = check_error (w);
  if (r == 0 && w->changed) {
    r = write_tail (w);
    if (r == -1)
      set_error (w);
  }
  else if (r == 0) {
    pthread_mutex_unlock (&w->lock);
    r = w->io->ops->flush (w->io);
    pthread_mutex_lock (&w->lock);
  }
  w->flushing = false;
  pthread_cond_broadcast (&w->cond);
  pump (w);
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
      finish (w, w->hash[i]);
  free (w->hash);
  free (w->heap);
  pool_free (&w->raws);
  pool_free (&w->blobs);
  stream_map_free (&w->map);
  pthread_cond_destroy (&w->cond);
  pthread_mutex_destroy (&w->lock);
  free (w);
}
