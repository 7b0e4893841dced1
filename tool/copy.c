/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The ranges are cut into chunks that threads (one per core) take in
 * ascending order: each reads its chunk, finds the grains that are all
 * zeroes, and writes the rest.  The engine is PARALLEL: vmdk_pread
 * inflates compressed grains in the calling thread, and the stream
 * writer compresses in the thread that completes a grain, so the work
 * spreads over all the threads.  Chunks ending on chunk boundaries
 * keep every grain whole within one write.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "copy.h"
#include "tool.h"
#include "zero.h"
#include "vmdk.h"

#define CHUNK (1024 * 1024)
#define ZERO_GRANULE (64 * 1024)
#define MAX_THREADS 64
/* O_DIRECT needs offsets, lengths and buffers aligned to the logical
 * block size: 4096 covers every device.
 */
#define DIRECT_ALIGN 4096

int
range_add (struct range_list *l, uint64_t offset, uint64_t length)
{
  if (length == 0)
    return 0;
  l->total += length;
  if (l->nr > 0 && l->r[l->nr - 1].offset + l->r[l->nr - 1].length == offset) {
    l->r[l->nr - 1].length += length;
    return 0;
  }
  if (l->nr == l->alloc) {
    size_t n = l->alloc ? 2 * l->alloc : 64;
    struct range *r = realloc (l->r, n * sizeof *r);

    if (r == NULL) {
      tool_error ("realloc: %m");
      return -1;
    }
    l->r = r;
    l->alloc = n;
  }
  l->r[l->nr].offset = offset;
  l->r[l->nr].length = length;
  l->nr++;
  return 0;
}

void
range_list_free (struct range_list *l)
{
  free (l->r);
  memset (l, 0, sizeof *l);
}

struct data_walk {
  struct range_list *l;
  bool failed;                  /* range_add failed (and said why) */
};

static int
add_data_entry (void *opaque, const struct vmdk_map_entry *m)
{
  struct data_walk *w = opaque;

  if (m->type != VMDK_MAP_DATA)
    return 0;
  if (range_add (w->l, m->offset, m->length) == -1) {
    w->failed = true;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* A raw file's data regions (SEEK_DATA / SEEK_HOLE), all of it where
 * the file system cannot tell.
 */
static int
raw_data_ranges (const struct disk *src, uint64_t size, struct range_list *l)
{
  uint64_t pos = 0;

  while (pos < size) {
    off_t data = lseek (src->fd, pos, SEEK_DATA), hole;

    if (data == -1 && errno == ENXIO)
      return 0;
    if (data == -1)
      return range_add (l, pos, size - pos);
    hole = lseek (src->fd, data, SEEK_HOLE);
    if (hole == -1 || (uint64_t) hole > size)
      hole = size;
    if ((uint64_t) data >= size)
      return 0;
    if (range_add (l, data, hole - data) == -1)
      return -1;
    pos = hole;
  }
  return 0;
}

int
data_ranges (const struct disk *src, uint64_t size, struct range_list *l)
{
  struct data_walk w = { l, false };

  if (src->img == NULL)
    return raw_data_ranges (src, size, l);
  if (vmdk_map_entries (src->img, 0, size, add_data_entry, &w) == -1) {
    if (!w.failed)
      tool_file_error (src->name);
    return -1;
  }
  return 0;
}

/* Progress on stderr: a bar redrawn in place on a terminal, a line per
 * whole percent otherwise.
 */
struct progress {
  bool enabled, tty;
  uint64_t total, done;
  int shown;                    /* permille (tty) or percent last shown */
};

static void
progress_show (struct progress *p, bool last)
{
  int permille = p->total ? (int) (p->done * 1000 / p->total) : 1000;
  int hashes = permille / 25, i;

  if (!p->enabled)
    return;
  if (p->tty) {
    if (permille == p->shown && !last)
      return;
    fputs ("\r[", stderr);
    for (i = 0; i < 40; ++i)
      fputc (i < hashes ? '#' : ' ', stderr);
    fprintf (stderr, "] %3d.%d%%", permille / 10, permille % 10);
    if (last)
      fputc ('\n', stderr);
  }
  else {
    if (permille / 10 == p->shown)
      return;
    permille = permille / 10 * 10;
    fprintf (stderr, "%d%%\n", permille / 10);
  }
  p->shown = p->tty ? permille : permille / 10;
  fflush (stderr);
}

struct copier {
  const struct disk *src, *dst;
  const struct range_list *l;
  pthread_mutex_t lock;         /* everything below */
  size_t next_range;
  uint64_t next_offset;         /* in ranges[next_range] */
  bool failed;
  const char *failed_file;
  char errmsg[1024];
  struct progress progress;
};

/* The next chunk to copy: false when there is none left. */
static bool
take_chunk (struct copier *c, uint64_t *offset, size_t *len)
{
  const struct range *r;
  uint64_t end;
  bool found = false;

  pthread_mutex_lock (&c->lock);
  while (!c->failed && c->next_range < c->l->nr) {
    r = &c->l->r[c->next_range];
    if (c->next_offset < r->offset)
      c->next_offset = r->offset;
    end = r->offset + r->length;
    if (c->next_offset >= end) {
      c->next_range++;
      continue;
    }
    *offset = c->next_offset;
    /* Up to the next chunk boundary. */
    *len = MIN (end, (*offset / CHUNK + 1) * CHUNK) - *offset;
    c->next_offset += *len;
    found = true;
    break;
  }
  pthread_mutex_unlock (&c->lock);
  return found;
}

/* Remember the first failure (the engine's message is per thread). */
static void
fail (struct copier *c, const char *file, const char *msg)
{
  pthread_mutex_lock (&c->lock);
  if (!c->failed) {
    c->failed = true;
    c->failed_file = file;
    snprintf (c->errmsg, sizeof c->errmsg, "%s", msg);
  }
  pthread_mutex_unlock (&c->lock);
}

static int
read_src (struct copier *c, void *buf, size_t len, uint64_t offset)
{
  const struct disk *d = c->src;
  size_t done = 0;

  if (d->img) {
    if (vmdk_pread (d->img, buf, len, offset) == 0)
      return 0;
    fail (c, d->name, vmdk_errmsg ());
    return -1;
  }
  while (done < len) {
    ssize_t r = pread (d->fd, (char *) buf + done, len - done, offset + done);

    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {               /* the file shrank: an error too */
      fail (c, d->name, r == 0 ? "unexpected end of file" : strerror (errno));
      return -1;
    }
    done += r;
  }
  return 0;
}

static bool
is_aligned (uint64_t v)
{
  return v % DIRECT_ALIGN == 0;
}

static int
write_dst (struct copier *c, const void *buf, size_t len, uint64_t offset)
{
  const struct disk *d = c->dst;
  size_t done = 0;
  int fd = d->fd;

  if (d->img) {
    if (vmdk_pwrite (d->img, buf, len, offset, 0) == 0)
      return 0;
    fail (c, d->name, vmdk_errmsg ());
    return -1;
  }
  if (d->direct_fd >= 0 && is_aligned (offset) && is_aligned (len) &&
      is_aligned ((uintptr_t) buf))
    fd = d->direct_fd;
  while (done < len) {
    ssize_t r = pwrite (fd, (const char *) buf + done, len - done,
                        offset + done);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      fail (c, d->name, strerror (errno));
      return -1;
    }
    done += r;
  }
  return 0;
}

/* Grains of zeroes in an image are zeroed (nothing to do in a new
 * image but for a stream writer, which then stops waiting for them);
 * a raw file reads as zeroes there already.
 */
static int
zero_dst (struct copier *c, uint64_t len, uint64_t offset)
{
  if (c->dst->img == NULL || vmdk_zero (c->dst->img, len, offset, 0) == 0)
    return 0;
  fail (c, c->dst->name, vmdk_errmsg ());
  return -1;
}

/* Write the chunk, the zero grains apart: runs of like pieces (cut at
 * absolute ZERO_GRANULE boundaries) go out as one request.
 */
static int
write_chunk (struct copier *c, const unsigned char *buf, size_t len,
             uint64_t offset)
{
  size_t start = 0, pos = 0;
  bool run_zero = false;

  while (pos < len) {
    size_t n = MIN (len - pos,
                    ZERO_GRANULE - (offset + pos) % ZERO_GRANULE);
    bool z = is_all_zero (buf + pos, n);

    if (pos > start && z != run_zero) {
      if ((run_zero ? zero_dst (c, pos - start, offset + start)
                    : write_dst (c, buf + start, pos - start,
                                 offset + start)) == -1)
        return -1;
      start = pos;
    }
    run_zero = z;
    pos += n;
  }
  if (run_zero)
    return zero_dst (c, len - start, offset + start);
  return write_dst (c, buf + start, len - start, offset + start);
}

static void *
worker (void *opaque)
{
  struct copier *c = opaque;
  unsigned char *buf = NULL;
  uint64_t offset;
  size_t len;

  if (posix_memalign ((void **) &buf, DIRECT_ALIGN, CHUNK) != 0) {
    fail (c, c->src->name, "malloc: out of memory");
    return NULL;
  }
  while (take_chunk (c, &offset, &len)) {
    if (read_src (c, buf, len, offset) == -1 ||
        write_chunk (c, buf, len, offset) == -1)
      break;
    pthread_mutex_lock (&c->lock);
    c->progress.done += len;
    progress_show (&c->progress, false);
    pthread_mutex_unlock (&c->lock);
  }
  free (buf);
  return NULL;
}

static unsigned
thread_count (void)
{
  long n = sysconf (_SC_NPROCESSORS_ONLN);

  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

int
copy_ranges (const struct disk *src, const struct disk *dst,
             const struct range_list *l, bool progress)
{
  struct copier c = {
    .src = src, .dst = dst, .l = l,
    .progress = {
      .enabled = progress, .tty = isatty (STDERR_FILENO), .total = l->total,
      .shown = -1,
    },
  };
  pthread_t threads[MAX_THREADS];
  unsigned n = thread_count (), i, started = 0;
  int err;

  pthread_mutex_init (&c.lock, NULL);
  progress_show (&c.progress, false);
  for (i = 0; i < n; ++i) {
    err = pthread_create (&threads[i], NULL, worker, &c);
    if (err != 0) {
      errno = err;
      fail (&c, src->name, "pthread_create failed");
      break;
    }
    started++;
  }
  for (i = 0; i < started; ++i)
    pthread_join (threads[i], NULL);
  if (!c.failed)
    progress_show (&c.progress, true);
  else if (c.progress.enabled && c.progress.tty)
    fputc ('\n', stderr);
  pthread_mutex_destroy (&c.lock);
  if (c.failed) {
    tool_file_message (c.failed_file, c.errmsg);
    return -1;
  }
  return 0;
}
