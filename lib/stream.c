/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Reading compressed grains.
 *
 * The hot path: look the grain up in the image's cache (gtcache.c
 * keeps inflated grains next to grain tables, under one budget); on a
 * miss read the marker and only as many
 * compressed bytes as it declares, into a per-thread buffer, and
 * inflate.  A request for a whole grain inflates straight into the
 * caller's buffer and bypasses the cache (a sequential reader will not
 * ask again); smaller requests inflate into a cache entry, so a client
 * reading 4 KiB at a time inflates each grain once.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "gtcache.h"
#include "header.h"
#include "inflate.h"
#include "le.h"
#include "stream.h"

/* The first read of a grain takes the marker and this many bytes at
 * first; afterwards the size of the last grain read, plus a little,
 * predicts the next (grains of one image compress alike).  A short
 * guess costs a second pread, a long one copies bytes for nothing.
 */
#define FIRST_CHUNK 65536
#define CHUNK_ALIGN 4096

/* Per-thread compressed-input buffers larger than this (grains over
 * 2 MiB) are freed after each request rather than kept.
 */
#define THREAD_BUF_KEEP (4 * 1024 * 1024 + 4096)

struct stream {
  struct vmdk_io *io;
  uint64_t file_size;
  uint32_t grain_bytes;
  uint64_t extent_length;
  size_t max_compressed;        /* marker + data */
  struct gtcache *cache;        /* the image's, shared */
  uint32_t owner;
  atomic_size_t read_hint;      /* bytes to read at first */
  atomic_uint_fast64_t hits, misses;   /* for -D vmdk.cache=1 */
};

struct thread_buf {
  unsigned char *p;
  size_t size;
};

static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

static void
free_thread_buf (void *v)
{
  struct thread_buf *b = v;

  free (b->p);
  free (b);
}

static void
make_buf_key (void)
{
  pthread_key_create (&buf_key, free_thread_buf);
}

static struct thread_buf *
get_thread_buf (void)
{
  struct thread_buf *b;

  pthread_once (&buf_once, make_buf_key);
  b = pthread_getspecific (buf_key);
  if (b == NULL) {
    b = calloc (1, sizeof *b);
    if (b == NULL) {
      vmdk_error (ENOMEM, "calloc: %m");
      return NULL;
    }
    if (pthread_setspecific (buf_key, b) != 0) {
      free (b);
      vmdk_error (ENOMEM, "pthread_setspecific: %m");
      return NULL;
    }
  }
  return b;
}

/* Make room for need bytes, keeping what is already there. */
static int
reserve (struct thread_buf *b, size_t need)
{
  unsigned char *p;

  if (need <= b->size)
    return 0;
  p = realloc (b->p, need);
  if (p == NULL)
    return vmdk_error (ENOMEM, "realloc: %zu bytes: %m", need);
  b->p = p;
  b->size = need;
  return 0;
}

static void
trim (struct thread_buf *b)
{
  if (b->size > THREAD_BUF_KEEP) {
    free (b->p);
    b->p = NULL;
    b->size = 0;
  }
}

struct stream *
stream_new (struct vmdk_io *io, struct gtcache *cache, uint64_t file_size,
            uint32_t grain_bytes, uint64_t extent_length, bool markers)
{
  struct stream *s;

  if (!markers) {
    vmdk_error (ENOTSUP, "%s: compressed grains without grain markers "
                "(flags bit 17 clear) are not supported yet", io->name);
    return NULL;
  }
  if (grain_bytes == 0 || grain_bytes > STREAM_MAX_GRAIN_BYTES) {
    vmdk_error (ENOTSUP, "%s: compressed grains of %" PRIu32 " bytes are "
                "outside the supported range (1 to %d)", io->name,
                grain_bytes, STREAM_MAX_GRAIN_BYTES);
    return NULL;
  }
  s = calloc (1, sizeof *s);
  if (s == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  s->io = io;
  s->file_size = file_size;
  s->grain_bytes = grain_bytes;
  s->extent_length = extent_length;
  s->max_compressed = STREAM_MAX_COMPRESSED (grain_bytes);
  atomic_init (&s->read_hint, MIN ((size_t) FIRST_CHUNK, s->max_compressed));

  s->cache = cache;
  s->owner = gtcache_new_owner (cache);
  return s;
}

void
stream_free (struct stream *s)
{
  if (s == NULL)
    return;
  vmdk_debug (VMDK_DEBUG_CACHE, "%s: inflated-grain cache: %" PRIu64
              " hits, %" PRIu64 " misses", s->io->name,
              (uint64_t) atomic_load (&s->hits),
              (uint64_t) atomic_load (&s->misses));
  free (s);                     /* cached grains go with the image's cache */
}

/* Read and inflate the grain at run into out (grain_bytes of room),
 * zero-filling after a short last grain.
 */
static int
inflate_grain (struct stream *s, const struct run *run, unsigned char *out)
{
  const char *name = s->io->name;
  uint64_t foff = run->file_offset, avail, lba;
  uint64_t want_lba = run->grain_start / SECTOR;
  size_t first, need, expected, hint;
  struct thread_buf *b;
  uint32_t csize;
  long n;
  int r = -1;

  if (foff >= s->file_size || s->file_size - foff < GRAIN_MARKER_SIZE)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 " (for "
                       "sector %" PRIu64 ") is cut short by the end of the "
                       "file (size %" PRIu64 "): truncated image",
                       name, foff, want_lba, s->file_size);
  avail = s->file_size - foff;
  b = get_thread_buf ();
  if (b == NULL)
    return -1;

  first = atomic_load_explicit (&s->read_hint, memory_order_relaxed);
  first = MAX (first, (size_t) GRAIN_MARKER_SIZE);
  first = MIN (first, s->max_compressed);
  first = MIN ((uint64_t) first, avail);
  if (reserve (b, first) == -1 ||
      io_pread_full (s->io, b->p, first, foff, "compressed grain") == -1)
    goto out;

  lba = get_le64 (b->p);
  csize = get_le32 (b->p + 8);
  if (lba != want_lba) {
    vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": lba field is %"
                PRIu64 ", expected %" PRIu64 " (the grain table points "
                "here for that sector): corrupt image",
                name, foff, lba, want_lba);
    goto out;
  }
  if (csize == 0 || csize > s->max_compressed - GRAIN_MARKER_SIZE) {
    vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": size field is "
                "%" PRIu32 ", expected 1 to %zu (twice the grain size): "
                "corrupt image", name, foff, csize,
                s->max_compressed - GRAIN_MARKER_SIZE);
    goto out;
  }
  need = GRAIN_MARKER_SIZE + (size_t) csize;
  if (need > avail) {
    vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": size field %"
                PRIu32 " runs past the end of the file (%" PRIu64 " bytes): "
                "corrupt or truncated image", name, foff, csize,
                s->file_size);
    goto out;
  }
  if (need > first &&
      (reserve (b, need) == -1 ||
       io_pread_full (s->io, b->p + first, need - first, foff + first,
                      "compressed grain") == -1))
    goto out;

  /* Predict the next grain from this one. */
  hint = need + need / 8 + CHUNK_ALIGN - 1;
  hint -= hint % CHUNK_ALIGN;
  if (hint != first)
    atomic_store_explicit (&s->read_hint, hint, memory_order_relaxed);

  n = vmdk_inflate (b->p + GRAIN_MARKER_SIZE, csize, out, s->grain_bytes,
                    name, foff);
  if (n == -1)
    goto out;
  expected = MIN ((uint64_t) s->grain_bytes,
                  s->extent_length - run->grain_start);
  if ((size_t) n != s->grain_bytes && (size_t) n != expected) {
    vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": data inflates "
                "to %ld bytes, expected %zu (the grain size%s): corrupt "
                "image", name, foff, n, expected,
                expected < s->grain_bytes ? " cut at the extent's end" : "");
    goto out;
  }
  if ((size_t) n < s->grain_bytes)
    memset (out + n, 0, s->grain_bytes - n);
  r = 0;

 out:
  trim (b);
  return r;
}

int
stream_read (struct stream *s, const struct run *run, uint64_t offset,
             void *buf, size_t count)
{
  uint64_t in_grain = offset - run->grain_start;
  uint64_t index = run->grain_start / s->grain_bytes;
  bool whole = in_grain == 0 && count == s->grain_bytes;
  struct gt_entry *pin;
  const unsigned char *data;
  unsigned char *tmp;
  int r;

  if (offset < run->grain_start || in_grain >= s->grain_bytes ||
      count > s->grain_bytes - in_grain ||
      run->grain_start % s->grain_bytes != 0)
    return vmdk_error (EIO, "%s: internal error: read of %zu bytes at %"
                       PRIu64 " outside the grain at %" PRIu64,
                       s->io->name, count, offset, run->grain_start);

  /* Partial requests go through the cache, so a client reading 4 KiB
   * at a time inflates each grain once: the first thread to miss
   * reserves the grain and inflates it with no lock held; others wait
   * for it.  A whole-grain request (a sequential reader will not ask
   * again) inflates straight into the caller's buffer unless the grain
   * is already cached.
   */
  if (index <= UINT32_MAX) {
    uint64_t key = gtcache_key (s->owner, index);

    data = gtcache_get_or_reserve (s->cache, key,
                                   whole ? 0 : s->grain_bytes, &pin);
    if (data) {
      memcpy (buf, data + in_grain, count);
      gtcache_unpin (pin);
      atomic_fetch_add_explicit (&s->hits, 1, memory_order_relaxed);
      return 0;
    }
    if (pin) {                  /* we inflate it for everyone */
      unsigned char *out = gtcache_data (pin);

      atomic_fetch_add_explicit (&s->misses, 1, memory_order_relaxed);
      r = inflate_grain (s, run, out);
      gtcache_loaded (s->cache, pin, r == 0);
      if (r == 0)
        memcpy (buf, out + in_grain, count);
      gtcache_unpin (pin);
      return r;
    }
  }
  if (whole)
    return inflate_grain (s, run, buf);

  /* Not cacheable (an index beyond the cache's keys, or no memory). */
  tmp = malloc (s->grain_bytes);
  if (tmp == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = inflate_grain (s, run, tmp);
  if (r == 0)
    memcpy (buf, tmp + in_grain, count);
  free (tmp);
  return r;
}
