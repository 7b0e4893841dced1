/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The write path shared by every grain-structured extent that can be
 * written (hosted sparse, COWD): grain allocation with copy-on-write,
 * zero and trim by grain-table entries.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "graindir.h"
#include "header.h"

/* Writing.
 *
 * A write into an allocated grain goes straight to the file, without a
 * lock.  A write into an unallocated or zeroed grain takes the
 * extent's allocation lock, looks again (another request may have
 * allocated it meanwhile: no lost update), appends a whole grain at the
 * end of the file, fills what the write does not cover from the parent
 * (or leaves it as never-written, zero-reading space), and sets the
 * grain-table entry in memory.  Tables reach the disk only at flush,
 * after the data (grain_dir_flush_locked), so a crash can leak grains
 * but never leave an entry pointing at data that was not written.
 */

/* The grain-table position of extent offset off. */
struct grain_pos {
  uint64_t t;                   /* table */
  uint32_t i;                   /* entry */
  uint64_t start;               /* extent offset of the grain */
};

static void
grain_pos (const struct grain_dir *d, uint64_t off, struct grain_pos *p)
{
  uint64_t g = off / d->grain_bytes;

  p->t = g / d->gtes_per_gt;
  p->i = g % d->gtes_per_gt;
  p->start = g * d->grain_bytes;
}

/* Decode the current entry; for data grains check that writing there
 * cannot overwrite metadata.
 */
static int
current_grain (struct grain_dir *d, const struct grain_pos *p,
               enum grain_kind *kind, uint64_t *foff)
{
  uint64_t gte;

  if (grain_dir_get (d, p->t, p->i, &gte) == -1 ||
      d->decode (d, gte, p->t, p->i, kind, foff) == -1)
    return -1;
  if (*kind == GRAIN_DATA && *foff < d->first_data)
    return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                       " points into the metadata (byte %" PRIu64 ", "
                       "grains start at %" PRIu64 "): refusing to write",
                       d->io->name, p->t, p->i, *foff, d->first_data);
  return 0;
}

/* Allocate the grain at p and write count bytes at in_grain into it.
 * Caller holds the allocation lock and has seen it unallocated or
 * zeroed.
 */
static int
allocate_grain (struct grain_dir *d, struct extent *e,
                const struct grain_pos *p, enum grain_kind kind,
                uint64_t in_grain, const void *buf, size_t count,
                const struct write_ctx *ctx)
{
  uint64_t g = d->grain_bytes, off;
  int r = 0;

  if (grain_dir_reserve (d, g, d->grain_align, &off) == -1)
    return -1;
  if (kind == GRAIN_UNALLOC && ctx->has_parent) {
    /* Copy on write: the rest of the grain comes from the parent. */
    uint64_t len = MIN (g, e->length - p->start);
    unsigned char *grain = calloc (1, g);

    if (grain == NULL)
      return vmdk_error (ENOMEM, "calloc: %m");
    r = ctx->read_below (ctx->opaque, grain, len, e->start + p->start);
    if (r == 0) {
      memcpy (grain + in_grain, buf, count);
      r = d->io->ops->pwrite (d->io, grain, len, off);
    }
    free (grain);
  }
  else                          /* the rest already reads as zeroes */
    r = d->io->ops->pwrite (d->io, buf, count, off + in_grain);
  if (r == -1)
    return -1;
  return grain_dir_set (d, p->t, p->i, off / SECTOR);
}

/* Write within one grain. */
static int
write_in_grain (struct grain_dir *d, struct extent *e, const void *buf,
                size_t count, uint64_t offset, const struct write_ctx *ctx)
{
  struct grain_pos p;
  enum grain_kind kind;
  uint64_t foff = 0, in_grain;
  int r;

  grain_pos (d, offset, &p);
  in_grain = offset - p.start;
  if (current_grain (d, &p, &kind, &foff) == -1)
    return -1;
  if (kind != GRAIN_DATA) {
    pthread_mutex_lock (&d->alloc_lock);
    r = current_grain (d, &p, &kind, &foff);
    if (r == 0 && kind != GRAIN_DATA)
      r = allocate_grain (d, e, &p, kind, in_grain, buf, count, ctx);
    pthread_mutex_unlock (&d->alloc_lock);
    if (r == -1 || kind != GRAIN_DATA)
      return r;
  }
  return d->io->ops->pwrite (d->io, buf, count, foff + in_grain);
}

/* A write that starts on a grain and covers several whole grains none
 * of which holds data (a sequential writer filling a new image):
 * allocate them as one run, write it with one pwrite and set every
 * entry, all under the allocation lock as allocate_grain does.  Sets
 * *done to the bytes written, 0 if fewer than two grains qualify (the
 * caller then goes grain by grain).
 */
static int
allocate_whole_grains (struct grain_dir *d, struct extent *e,
                       const void *buf, size_t count, uint64_t offset,
                       size_t *done)
{
  uint64_t g = d->grain_bytes, n = 0, off = 0, foff, i;
  struct grain_pos p;
  enum grain_kind kind;
  int r = 0;

  *done = 0;
  /* Rewrites of allocated data take no lock. */
  grain_pos (d, offset, &p);
  if (current_grain (d, &p, &kind, &foff) == -1)
    return -1;
  if (kind == GRAIN_DATA)
    return 0;
  pthread_mutex_lock (&d->alloc_lock);
  while ((n + 1) * g <= count && offset + (n + 1) * g <= e->length) {
    grain_pos (d, offset + n * g, &p);
    if (current_grain (d, &p, &kind, &foff) == -1) {
      r = -1;
      goto out;
    }
    if (kind == GRAIN_DATA)
      break;
    n++;
  }
  if (n < 2)
    goto out;
  /* Tables the run needs go before it, so that
   * the file ends with data, which a repair can move and cut.
   */
  for (i = offset / g / d->gtes_per_gt;
       i <= (offset + (n - 1) * g) / g / d->gtes_per_gt && r == 0; ++i)
    r = grain_dir_ensure_table (d, i);
  if (r == -1)
    goto out;
  if (grain_dir_reserve (d, n * g, d->grain_align, &off) == -1 ||
      d->io->ops->pwrite (d->io, buf, n * g, off) == -1) {
    r = -1;
    goto out;
  }
  for (i = 0; i < n && r == 0; ++i) {
    grain_pos (d, offset + i * g, &p);
    r = grain_dir_set (d, p.t, p.i, (off + i * g) / SECTOR);
  }
  if (r == 0)
    *done = n * g;
 out:
  pthread_mutex_unlock (&d->alloc_lock);
  return r;
}

int
grain_dir_pwrite (struct extent *e, const void *buf, size_t count,
                  uint64_t offset, const struct write_ctx *ctx)
{
  struct grain_dir *d = e->dir;
  const unsigned char *b = buf;

  while (count > 0) {
    size_t n = MIN ((uint64_t) count,
                    d->grain_bytes - offset % d->grain_bytes);

    if (offset % d->grain_bytes == 0 && count >= 2 * d->grain_bytes) {
      size_t done;

      if (allocate_whole_grains (d, e, b, count, offset, &done) == -1)
        return -1;
      if (done > 0) {
        b += done;
        offset += done;
        count -= done;
        continue;
      }
    }
    if (write_in_grain (d, e, b, n, offset, ctx) == -1)
      return -1;
    b += n;
    offset += n;
    count -= n;
  }
  return 0;
}

/* Write zeroes through the normal write path (allocating). */
static int
write_zeroes (struct extent *e, uint64_t offset, uint64_t count,
              const struct write_ctx *ctx)
{
  static const unsigned char zeroes[65536];

  while (count > 0) {
    size_t n = MIN (count, (uint64_t) sizeof zeroes);

    if (grain_dir_pwrite (e, zeroes, n, offset, ctx) == -1)
      return -1;
    offset += n;
    count -= n;
  }
  return 0;
}

enum zero_action { ZA_NOTHING, ZA_SET_ZEROED, ZA_DEALLOCATE, ZA_WRITE };

/* What zeroing [offset, offset+n) within one grain needs. */
static enum zero_action
zero_action (const struct grain_dir *d, enum grain_kind kind, bool whole,
             unsigned flags, const struct write_ctx *ctx)
{
  if (kind == GRAIN_ZERO || (kind == GRAIN_UNALLOC && !ctx->has_parent))
    return ZA_NOTHING;          /* already reads as zeroes */
  if (!whole)
    return ZA_WRITE;
  if (d->zeroed_grain_value)
    return ZA_SET_ZEROED;
  if (!ctx->has_parent && (flags & EXTENT_ZERO_MAY_TRIM))
    return ZA_DEALLOCATE;
  return ZA_WRITE;
}

/* Point the grain's entry at value (0 unallocated, 1 zeroed) and give
 * the old data's space back to the host.
 */
static int
replace_grain (struct grain_dir *d, const struct grain_pos *p, uint32_t value)
{
  enum grain_kind kind;
  uint64_t foff = 0;
  int r;

  pthread_mutex_lock (&d->alloc_lock);
  r = current_grain (d, p, &kind, &foff);
  if (r == 0)
    r = grain_dir_set (d, p->t, p->i, value);
  pthread_mutex_unlock (&d->alloc_lock);
  /* Freed grains are never reused (allocation only appends), so a
   * crash before the new entry is durable leaves the old entry pointing
   * at a hole that reads as zeroes, which is what was asked.
   */
  if (r == 0 && kind == GRAIN_DATA && d->io->ops->punch &&
      d->io->ops->punch (d->io, foff, d->grain_bytes) == -1)
    vmdk_debug (VMDK_DEBUG_GRAINS, "%s (ignored)", vmdk_errmsg ());
  return r;
}

/* Visit each grain piece of a range: the callback gets the piece, its
 * position and current kind.
 */
struct zero_req {
  struct grain_dir *d;
  struct extent *e;
  unsigned flags;
  const struct write_ctx *ctx;
};

typedef int (*piece_fn) (struct zero_req *z, uint64_t offset, uint64_t n,
                         const struct grain_pos *p, enum grain_kind kind);

static int
for_each_piece (struct zero_req *z, uint64_t offset, uint64_t count,
                piece_fn fn)
{
  struct grain_dir *d = z->d;

  while (count > 0) {
    uint64_t n = MIN (count, d->grain_bytes - offset % d->grain_bytes);
    struct grain_pos p;
    enum grain_kind kind;
    uint64_t foff;

    grain_pos (d, offset, &p);
    if (current_grain (d, &p, &kind, &foff) == -1 ||
        fn (z, offset, n, &p, kind) == -1)
      return -1;
    offset += n;
    count -= n;
  }
  return 0;
}

/* A piece "whole" covers the grain, or its tail up to the extent end. */
static bool
whole_grain (const struct extent *e, uint64_t offset, uint64_t n,
             const struct grain_pos *p)
{
  return offset == p->start && (n == e->grain_size ||
                                offset + n == e->length);
}

static int
check_fast_zero (struct zero_req *z, uint64_t offset, uint64_t n,
                 const struct grain_pos *p, enum grain_kind kind)
{
  if (zero_action (z->d, kind, whole_grain (z->e, offset, n, p), z->flags,
                   z->ctx) == ZA_WRITE)
    return vmdk_error (ENOTSUP, "fast zero not possible: zeroing part of a "
                       "grain means writing zeroes");
  return 0;
}

static int
apply_zero (struct zero_req *z, uint64_t offset, uint64_t n,
            const struct grain_pos *p, enum grain_kind kind)
{
  switch (zero_action (z->d, kind, whole_grain (z->e, offset, n, p),
                       z->flags, z->ctx)) {
  case ZA_NOTHING: return 0;
  case ZA_SET_ZEROED: return replace_grain (z->d, p, z->d->zeroed_grain_value);
  case ZA_DEALLOCATE: return replace_grain (z->d, p, 0);
  case ZA_WRITE: default: return write_zeroes (z->e, offset, n, z->ctx);
  }
}

int
grain_dir_zero (struct extent *e, uint64_t offset, uint64_t count,
                unsigned flags, const struct write_ctx *ctx)
{
  struct zero_req z = { e->dir, e, flags, ctx };

  /* Fast zero fails before anything changes. */
  if ((flags & EXTENT_ZERO_FAST) &&
      for_each_piece (&z, offset, count, check_fast_zero) == -1)
    return -1;
  if (flags & EXTENT_ZERO_CHECK_ONLY)
    return 0;
  return for_each_piece (&z, offset, count, apply_zero);
}

static int
apply_trim (struct zero_req *z, uint64_t offset, uint64_t n,
            const struct grain_pos *p, enum grain_kind kind)
{
  if (!whole_grain (z->e, offset, n, p) || kind != GRAIN_DATA)
    return 0;
  if (!z->ctx->has_parent)
    return replace_grain (z->d, p, 0);
  if (z->d->zeroed_grain_value)
    return replace_grain (z->d, p, z->d->zeroed_grain_value);
  return 0;                     /* deallocating would expose the parent */
}

int
grain_dir_trim (struct extent *e, uint64_t offset, uint64_t count,
                const struct write_ctx *ctx)
{
  struct zero_req z = { e->dir, e, 0, ctx };

  return for_each_piece (&z, offset, count, apply_trim);
}

int
grain_dir_flush (struct extent *e)
{
  struct grain_dir *d = e->dir;
  int r;

  pthread_mutex_lock (&d->alloc_lock);
  r = grain_dir_flush_locked (d);
  pthread_mutex_unlock (&d->alloc_lock);
  return r;
}
