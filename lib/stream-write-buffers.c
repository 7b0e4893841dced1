/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The streamOptimized writer's grain buffers: the hash by grain, the
 * list of FILLING buffers (oldest first), the heap of READY ones
 * (lowest grain first), the pools of raw and compressed buffers, and
 * the sticky error.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "stream-write-internal.h"

static size_t
bucket (const struct stream_writer *w, uint64_t g)
{
  return (g * UINT64_C (0x9e3779b97f4a7c15)) >> 40 & (w->hash_size - 1);
}

/* The FILLING buffer of grain g (filling = true), or the one past it. */
struct gbuf *
gbuf_find (const struct stream_writer *w, uint64_t g, bool filling)
{
  struct gbuf *b;

  for (b = w->hash[bucket (w, g)]; b; b = b->hnext)
    if (b->g == g && (b->state == FILLING) == filling)
      return b;
  return NULL;
}

void
gbuf_unlink_filling (struct stream_writer *w, struct gbuf *b)
{
  if (b->fprev) b->fprev->fnext = b->fnext; else w->filling_head = b->fnext;
  if (b->fnext) b->fnext->fprev = b->fprev; else w->filling_tail = b->fprev;
  b->fprev = b->fnext = NULL;
}

bool
ready_heap_less (const struct gbuf *a, const struct gbuf *b)
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
  while (i > 0 && ready_heap_less (w->heap[i], w->heap[(i - 1) / 2])) {
    heap_swap (w, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;

    if (l < w->heap_len && ready_heap_less (w->heap[l], w->heap[m])) m = l;
    if (r < w->heap_len && ready_heap_less (w->heap[r], w->heap[m])) m = r;
    if (m == i)
      return;
    heap_swap (w, i, m);
    i = m;
  }
}

int
ready_heap_push (struct stream_writer *w, struct gbuf *b)
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

void
ready_heap_remove (struct stream_writer *w, struct gbuf *b)
{
  size_t i = b->heap_pos;

  heap_swap (w, i, --w->heap_len);
  if (i < w->heap_len)
    heap_fix (w, i);
}

/* A buffer of the pool's size (lock held). */
void *
buf_pool_get (struct pool *p)
{
  return p->n ? p->free[--p->n] : malloc (p->bytes);
}

void
buf_pool_put (struct pool *p, void *buf)
{
  if (buf && p->n < POOL_SIZE)
    p->free[p->n++] = buf;
  else
    free (buf);
}

void
buf_pool_free (struct pool *p)
{
  while (p->n)
    free (p->free[--p->n]);
}

/* A new buffer for grain g, in the hash (lock held). */
struct gbuf *
gbuf_new (struct stream_writer *w, uint64_t g, enum gbuf_state state)
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


struct gbuf *
gbuf_new_filling (struct stream_writer *w, uint64_t g)
{
  struct gbuf *b = gbuf_new (w, g, FILLING);
  size_t bits = w->grain_bytes / SECTOR;

  if (b == NULL)
    return NULL;
  b->fprev = w->filling_tail;
  if (w->filling_tail) w->filling_tail->fnext = b; else w->filling_head = b;
  w->filling_tail = b;
  b->raw = buf_pool_get (&w->raws);
  if (b->raw)
    w->raw_bytes += w->grain_bytes;
  b->covered = calloc ((bits + 7) / 8, 1);
  if (b->raw == NULL || b->covered == NULL) {
    gbuf_finish (w, b);
    vmdk_error (ENOMEM, "malloc: grain buffer: %m");
    return NULL;
  }
  return b;
}

void
gbuf_free_raw (struct stream_writer *w, struct gbuf *b)
{
  if (b->raw) {
    buf_pool_put (&w->raws, b->raw);
    b->raw = NULL;
    w->raw_bytes -= w->grain_bytes;
  }
  free (b->covered);
  b->covered = NULL;
}

/* The buffer's grain is stored (or dropped): forget it. */
void
gbuf_finish (struct stream_writer *w, struct gbuf *b)
{
  struct gbuf **p;

  for (p = &w->hash[bucket (w, b->g)]; *p != b; p = &(*p)->hnext)
    ;
  *p = b->hnext;
  if (b->state == FILLING)
    gbuf_unlink_filling (w, b);
  gbuf_free_raw (w, b);
  if (b->blob) {
    w->ready_bytes -= b->blob_len;
    buf_pool_put (&w->blobs, b->blob);
  }
  free (b);
  pthread_cond_broadcast (&w->cond);
}

/* Record the first error of storing a grain: every later request and
 * flush fails with it, reads and block status too.  The data of a
 * completed write was lost; serving what the file held before in its
 * place would hide that.
 */
void
writer_set_error (struct stream_writer *w)
{
  if (w->error == 0) {
    w->error = errno ? errno : EIO;
    snprintf (w->errmsg, sizeof w->errmsg, "%s", vmdk_errmsg ());
  }
}

static int
report_lost_write (const struct stream_writer *w, int err)
{
  return vmdk_error (err, "%s: an earlier write could not be stored: %s",
                     w->io->name, w->errmsg);
}

int
writer_check_error (const struct stream_writer *w)
{
  return w->error ? report_lost_write (w, w->error) : 0;
}

/* Reads fail with EIO, whatever lost the write (ENOSPC, say). */
int
writer_check_readable (const struct stream_writer *w)
{
  return w->error ? report_lost_write (w, EIO) : 0;
}
