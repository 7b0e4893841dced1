/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Reading compressed grains.
 *
 * The hot path: look the grain up in the image's cache (gtcache.c
 * keeps inflated grains next to grain tables, under one budget); on a
 * miss read the marker and only as many compressed bytes as it
 * declares, into a per-thread buffer, and inflate.  The grains of one
 * request are fetched with one read where they lie in order (a
 * per-thread window), since each read may be a network round trip.  A request for a whole grain inflates straight into the
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

/* Grains of one request are fetched with one read if each lies after
 * the one before by at most a compressed grain and this much (VMware
 * streams put a grain-table marker and table between grains), and the
 * whole read is at most WINDOW_MAX.
 */
#define WINDOW_GAP (64 * 1024)
#define WINDOW_MAX (8 * 1024 * 1024)

/* Grains whose first read inflated only a prefix, remembered so that a
 * second read soon after caches the whole grain.  Small on purpose: a
 * sequential reader comes back within a few requests, while a random
 * reader landing on a grain read long ago should not pay for caching.
 */
#define RECENT_SLOTS 256

struct stream {
  struct vmdk_io *io;
  _Atomic uint64_t file_size;   /* grows as a writer appends */
  uint32_t grain_bytes;
  uint64_t extent_length;
  size_t max_compressed;        /* marker + data */
  struct gtcache *cache;        /* the image's, shared */
  uint32_t owner;
  atomic_size_t read_hint;      /* bytes to read at first */
  size_t prefix_limit;          /* see stream_new */
  atomic_uint_fast64_t hits, misses, prefixes;  /* for -D vmdk.cache=1 */
  atomic_uint_fast64_t recent[RECENT_SLOTS];    /* see seen_recently */
};

struct buf {
  unsigned char *p;
  size_t size;
};

/* Per thread: compressed data as read, scratch room for a prefix, and
 * the window: the compressed bytes of the grains of one stream_read,
 * fetched with one read (window_len 0: none).
 */
struct thread_buf {
  struct buf in, scratch, window;
  uint64_t window_start;
  size_t window_len;
};

static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

static void
free_thread_buf (void *v)
{
  struct thread_buf *b = v;

  free (b->in.p);
  free (b->scratch.p);
  free (b->window.p);
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
reserve (struct buf *b, size_t need)
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

/* Give back the memory of an unusually large grain. */
static void
trim (struct buf *b)
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
  atomic_init (&s->file_size, file_size);
  s->grain_bytes = grain_bytes;
  s->extent_length = extent_length;
  s->max_compressed = STREAM_MAX_COMPRESSED (grain_bytes);
  atomic_init (&s->read_hint, MIN ((size_t) FIRST_CHUNK, s->max_compressed));
  /* zlib inflating a prefix costs about 1.6 times what libdeflate takes
   * per byte inflating the whole grain (measured on this project's
   * benchmark data), so a prefix pays up to 5/8 of the grain.  With
   * zlib as the backend too, any prefix pays.
   */
  if (strcmp (vmdk_inflate_backend (), "zlib") == 0)
    s->prefix_limit = grain_bytes;
  else
    s->prefix_limit = (size_t) grain_bytes / 8 * 5;

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
              " hits, %" PRIu64 " misses, %" PRIu64 " prefix-only reads",
              s->io->name, (uint64_t) atomic_load (&s->hits),
              (uint64_t) atomic_load (&s->misses),
              (uint64_t) atomic_load (&s->prefixes));
  free (s);                     /* cached grains go with the image's cache */
}

/* Where the window holds the byte at foff: its address and how many
 * bytes of the window follow (0: not in the window).
 */
static size_t
in_window (const struct thread_buf *b, uint64_t foff,
           const unsigned char **p)
{
  if (b->window_len == 0 || foff < b->window_start ||
      foff - b->window_start >= b->window_len)
    return 0;
  *p = b->window.p + (foff - b->window_start);
  return b->window_len - (foff - b->window_start);
}

/* Find the grain marker at run and the compressed data it announces,
 * in the thread's window or else read into the thread's buffer, and
 * check the marker: the lba is the grain's, the size is within bounds,
 * the data within the file.  Sets *data (the compressed bytes) and
 * *csize.  The caller trims (*bp)->in when done with the data.
 */
static int
read_grain_marker (struct stream *s, const struct run *run,
                   struct thread_buf **bp, const unsigned char **data,
                   uint32_t *csize)
{
  const char *name = s->io->name;
  uint64_t foff = run->file_offset, avail, lba;
  uint64_t want_lba = run->grain_start / SECTOR;
  uint64_t file_size = atomic_load (&s->file_size);
  const unsigned char *m;
  size_t first, need, hint;
  struct thread_buf *b;

  if (foff >= file_size || file_size - foff < GRAIN_MARKER_SIZE)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 " (for "
                       "sector %" PRIu64 ") is cut short by the end of the "
                       "file (size %" PRIu64 "): truncated image",
                       name, foff, want_lba, file_size);
  avail = file_size - foff;
  b = *bp = get_thread_buf ();
  if (b == NULL)
    return -1;

  first = in_window (b, foff, &m);
  if (first < GRAIN_MARKER_SIZE) {
    first = atomic_load_explicit (&s->read_hint, memory_order_relaxed);
    first = MAX (first, (size_t) GRAIN_MARKER_SIZE);
    first = MIN (first, s->max_compressed);
    first = MIN ((uint64_t) first, avail);
    if (reserve (&b->in, first) == -1 ||
        io_pread_full (s->io, b->in.p, first, foff, "compressed grain") == -1)
      return -1;
    m = b->in.p;
  }

  lba = get_le64 (m);
  *csize = get_le32 (m + 8);
  if (lba != want_lba)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": lba "
                       "field is %" PRIu64 ", expected %" PRIu64 " (the "
                       "grain table points here for that sector): corrupt "
                       "image", name, foff, lba, want_lba);
  if (*csize == 0 || *csize > s->max_compressed - GRAIN_MARKER_SIZE)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": size "
                       "field is %" PRIu32 ", expected 1 to %zu (twice the "
                       "grain size): corrupt image", name, foff, *csize,
                       s->max_compressed - GRAIN_MARKER_SIZE);
  need = GRAIN_MARKER_SIZE + (size_t) *csize;
  if (need > avail)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": size "
                       "field %" PRIu32 " runs past the end of the file (%"
                       PRIu64 " bytes): corrupt or truncated image", name,
                       foff, *csize, file_size);
  if (need > first) {           /* the rest, after what we have */
    bool from_window = m != b->in.p;

    /* reserve keeps b->in's bytes, but may move them. */
    if (reserve (&b->in, need) == -1)
      return -1;
    if (from_window)
      memcpy (b->in.p, m, first);
    if (io_pread_full (s->io, b->in.p + first, need - first, foff + first,
                       "compressed grain") == -1)
      return -1;
    m = b->in.p;
  }
  *data = m + GRAIN_MARKER_SIZE;

  /* Predict the next grain from this one. */
  hint = need + need / 8 + CHUNK_ALIGN - 1;
  hint -= hint % CHUNK_ALIGN;
  if (hint != atomic_load_explicit (&s->read_hint, memory_order_relaxed))
    atomic_store_explicit (&s->read_hint, hint, memory_order_relaxed);
  return 0;
}

/* The grain's inflated length: the grain size, or less for a last
 * grain cut by the end of the extent.
 */
static size_t
expected_length (const struct stream *s, const struct run *run)
{
  return MIN ((uint64_t) s->grain_bytes, s->extent_length - run->grain_start);
}

static int
wrong_length (const struct stream *s, const struct run *run, long n)
{
  size_t expected = expected_length (s, run);

  return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": data "
                     "inflates to %ld bytes, expected %zu (the grain "
                     "size%s): corrupt image", s->io->name,
                     run->file_offset, n, expected,
                     expected < s->grain_bytes ?
                     " cut at the extent's end" : "");
}

/* Read and inflate the grain at run into out: all of it when len is
 * the grain size (the inflated length must then be exactly the
 * grain's), else only its first len bytes (the stream is checked that
 * far: zlib stops when out is full).  Zero-fills after a short last
 * grain.
 */
static int
inflate_grain (struct stream *s, const struct run *run, unsigned char *out,
               size_t len)
{
  size_t expected = expected_length (s, run);
  bool whole = len == s->grain_bytes;
  struct thread_buf *b = NULL;
  const unsigned char *in = NULL;
  uint32_t csize = 0;
  long n;
  int r = -1;

  if (read_grain_marker (s, run, &b, &in, &csize) == -1)
    goto out;
  if (whole)
    n = vmdk_inflate (in, csize, out, len, s->io->name, run->file_offset);
  else
    n = vmdk_inflate_prefix (in, csize, out, MIN (len, expected),
                             s->io->name, run->file_offset);
  if (n == -1)
    goto out;
  if (whole ? (size_t) n != len && (size_t) n != expected
            : (size_t) n < MIN (len, expected)) {
    wrong_length (s, run, n);
    goto out;
  }
  if ((size_t) n < len)
    memset (out + n, 0, len - n);
  r = 0;

 out:
  if (b)
    trim (&b->in);
  return r;
}

/* Grains read lately, in a lossy, lock-free set: a slot holds the
 * last index that hashed to it, so an answer may be wrong, which only
 * costs speed.  A grain is remembered after a prefix-only read (so the
 * next read caches it whole) and after a whole grain failed to inflate
 * (so that reads of its start keep failing rather than inflate only a
 * prefix that looks fine).
 */
static void
remember (struct stream *s, uint64_t index)
{
  atomic_store_explicit (&s->recent[index % RECENT_SLOTS], index + 1,
                         memory_order_relaxed);
}

/* Was the grain stored at sector index read lately?  Remembers it if
 * not.
 */
static bool
seen_recently (struct stream *s, uint64_t index)
{
  if (atomic_load_explicit (&s->recent[index % RECENT_SLOTS],
                            memory_order_relaxed) == index + 1)
    return true;
  remember (s, index);
  return false;
}

/* A partial read of a grain nobody cached: inflate up to its end only,
 * into the caller's buffer when it starts the grain, else through the
 * thread's scratch buffer.
 */
static int
read_prefix (struct stream *s, const struct run *run, uint64_t in_grain,
             void *buf, size_t count)
{
  struct thread_buf *b = NULL;
  unsigned char *out = buf;

  if (in_grain > 0) {
    b = get_thread_buf ();
    if (b == NULL || reserve (&b->scratch, in_grain + count) == -1)
      return -1;
    out = b->scratch.p;
  }
  if (inflate_grain (s, run, out, in_grain + count) == -1)
    return -1;
  if (b) {
    memcpy (buf, out + in_grain, count);
    trim (&b->scratch);
  }
  atomic_fetch_add_explicit (&s->prefixes, 1, memory_order_relaxed);
  return 0;
}

/* Read count bytes at offset from the compressed grain of run. */
static int
read_grain (struct stream *s, const struct run *run, uint64_t offset,
            void *buf, size_t count)
{
  uint64_t in_grain = offset - run->grain_start;
  /* Grains are keyed by where they are stored: a rewritten grain is a
   * new marker elsewhere, so the cache never serves an old version.
   */
  uint64_t index = run->file_offset / SECTOR;
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
   *
   * Except the first read of a grain, if it ends early in the grain:
   * random readers seldom come back, so inflating to the end of the
   * request saves up to half the work (see prefix_limit).  A second
   * read of the grain soon after inflates and caches all of it.
   */
  if (index <= UINT32_MAX) {
    uint64_t key = gtcache_key (s->owner, index);

    if (!whole && in_grain + count <= s->prefix_limit) {
      data = gtcache_get_or_reserve (s->cache, key, 0, &pin);
      if (data == NULL && !seen_recently (s, index))
        return read_prefix (s, run, in_grain, buf, count);
    }
    else
      data = NULL;
    if (data == NULL)
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
      r = inflate_grain (s, run, out, s->grain_bytes);
      gtcache_loaded (s->cache, pin, r == 0);
      if (r == 0)
        memcpy (buf, out + in_grain, count);
      else
        remember (s, index);
      gtcache_unpin (pin);
      return r;
    }
  }
  if (whole) {
    r = inflate_grain (s, run, buf, s->grain_bytes);
    if (r == -1 && index <= UINT32_MAX)
      remember (s, index);
    return r;
  }

  /* Not cacheable (a sector beyond the cache's keys, or no memory). */
  tmp = malloc (s->grain_bytes);
  if (tmp == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = inflate_grain (s, run, tmp, s->grain_bytes);
  if (r == 0)
    memcpy (buf, tmp + in_grain, count);
  free (tmp);
  return r;
}

/* Fetch the compressed bytes of runs[0..nr) into the thread's window
 * with one read, from the first grain's marker to the last one's plus
 * its predicted size, if the grains lie in order close together.
 * Otherwise leave the window empty: each grain is then read alone.
 */
static int
fetch_window (struct stream *s, const struct run *runs, size_t nr,
              struct thread_buf *b)
{
  uint64_t start = runs[0].file_offset, last = runs[nr - 1].file_offset;
  uint64_t file_size = atomic_load (&s->file_size);
  uint64_t end;
  size_t i;

  b->window_len = 0;
  for (i = 1; i < nr; ++i)
    if (runs[i].file_offset <= runs[i - 1].file_offset ||
        runs[i].file_offset - runs[i - 1].file_offset >
        s->max_compressed + WINDOW_GAP)
      return 0;
  if (last >= file_size)
    return 0;
  end = last + MIN ((uint64_t) atomic_load_explicit (&s->read_hint,
                                                      memory_order_relaxed),
                    file_size - last);
  if (end - start > WINDOW_MAX)
    return 0;
  if (reserve (&b->window, end - start) == -1 ||
      io_pread_full (s->io, b->window.p, end - start, start,
                     "compressed grains") == -1)
    return -1;
  b->window_start = start;
  b->window_len = end - start;
  return 0;
}

int
stream_read (struct stream *s, const struct run *runs, size_t nr,
             uint64_t offset, void *buf, size_t count)
{
  struct thread_buf *b = NULL;
  unsigned char *out = buf;
  size_t i;
  int r = 0;

  if (nr > 1) {
    b = get_thread_buf ();
    if (b == NULL || fetch_window (s, runs, nr, b) == -1)
      return -1;
  }
  for (i = 0; i < nr && count > 0 && r == 0; ++i) {
    /* The last grain takes the rest (a caller with one run may leave
     * its length unset).
     */
    size_t n = i + 1 < nr ? MIN ((uint64_t) count, runs[i].length) : count;

    r = read_grain (s, &runs[i], offset, out, n);
    offset += n;
    out += n;
    count -= n;
  }
  if (b) {
    b->window_len = 0;
    trim (&b->window);
  }
  return r;
}

void
stream_set_file_size (struct stream *s, uint64_t file_size)
{
  atomic_store (&s->file_size, file_size);
}

int
stream_check_grain (struct stream *s, const struct run *run)
{
  unsigned char *tmp = malloc (s->grain_bytes);
  int r;

  if (tmp == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = inflate_grain (s, run, tmp, s->grain_bytes);
  free (tmp);
  return r;
}
