/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* One inflate function, backed by libdeflate (several times faster for
 * whole-buffer inflation) when configure found it, else zlib.  Either
 * way the inflate state is allocated once per thread and kept (it is
 * not thread-safe, and zlib's inflateInit costs a 32 KiB window).
 *
 * And a prefix inflater, always zlib: only zlib can stop exactly when
 * the output is full, which libdeflate cannot (its output is undefined
 * when the buffer is too small).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
#include <zlib.h>

#include "error.h"
#include "inflate.h"

static int
corrupt (const char *name, uint64_t offset, size_t in_len, const char *lib,
         int code)
{
  return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": its %zu "
                     "bytes of compressed data are not valid zlib data "
                     "(%s error %d): corrupt image", name, offset, in_len,
                     lib, code);
}

static int
too_long (const char *name, uint64_t offset, size_t out_len)
{
  return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": the "
                     "compressed data inflates to more than the grain "
                     "size (%zu bytes): corrupt image", name, offset,
                     out_len);
}

/* zlib, per thread: the whole-stream backend without libdeflate, and
 * the prefix inflater always.
 */
static pthread_key_t zlib_key;
static pthread_once_t zlib_once = PTHREAD_ONCE_INIT;

static void
free_zlib_state (void *p)
{
  z_stream *zs = p;

  inflateEnd (zs);
  free (zs);
}

static void
make_zlib_key (void)
{
  pthread_key_create (&zlib_key, free_zlib_state);
}

/* The calling thread's z_stream, reset for a new stream: window_bits
 * 15 for a zlib stream, -15 for raw deflate.
 */
static z_stream *
thread_zstream (int window_bits)
{
  z_stream *zs;

  pthread_once (&zlib_once, make_zlib_key);
  zs = pthread_getspecific (zlib_key);
  if (zs == NULL) {
    zs = calloc (1, sizeof *zs);
    if (zs == NULL) {
      vmdk_error (ENOMEM, "calloc: %m");
      return NULL;
    }
    if (inflateInit (zs) != Z_OK) {
      free (zs);
      vmdk_error (ENOMEM, "inflateInit failed");
      return NULL;
    }
    if (pthread_setspecific (zlib_key, zs) != 0) {
      free_zlib_state (zs);
      vmdk_error (ENOMEM, "pthread_setspecific: %m");
      return NULL;
    }
  }
  if (inflateReset2 (zs, window_bits) != Z_OK) {
    vmdk_error (EIO, "inflateReset2 failed");
    return NULL;
  }
  return zs;
}

/* Is this the 2-byte header of a zlib stream (RFC 1950) of deflate
 * data without a preset dictionary?
 */
static bool
zlib_header_ok (const unsigned char *in, size_t in_len)
{
  return in_len >= 2 && (in[0] & 0x0f) == 8 && (in[0] >> 4) <= 7 &&
    (in[1] & 0x20) == 0 && ((unsigned) in[0] << 8 | in[1]) % 31 == 0;
}

/* Inflate into out.  whole: the stream must end within out_len bytes.
 * Otherwise stop as soon as out is full (what follows is not looked
 * at); a stream that ends earlier returns its shorter length.  A
 * prefix never reaches the Adler-32 at the end of the stream, so it is
 * inflated as raw deflate after checking the zlib header by hand,
 * which spares zlib computing a checksum nobody compares.
 */
static long
zlib_inflate (const void *in, size_t in_len, void *out, size_t out_len,
              const char *name, uint64_t offset, bool whole)
{
  z_stream *zs;
  int r;

  if (in_len > UINT_MAX || out_len > UINT_MAX)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": "
                       "compressed grain too large for zlib", name, offset);
  if (!whole) {
    if (!zlib_header_ok (in, in_len))
      return corrupt (name, offset, in_len, "zlib", Z_DATA_ERROR);
    in = (const unsigned char *) in + 2;
    in_len -= 2;
  }
  zs = thread_zstream (whole ? 15 : -15);
  if (zs == NULL)
    return -1;
  zs->next_in = (Bytef *) in;
  zs->avail_in = in_len;
  zs->next_out = out;
  zs->avail_out = out_len;
  r = inflate (zs, whole ? Z_FINISH : Z_SYNC_FLUSH);
  if (r == Z_STREAM_END || (!whole && r == Z_OK && zs->avail_out == 0))
    return out_len - zs->avail_out;
  if (r == Z_BUF_ERROR && zs->avail_out == 0)
    return too_long (name, offset, out_len);
  if (r == Z_BUF_ERROR || r == Z_OK)    /* output room left: input ran out */
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": its %zu "
                       "bytes of compressed data end before the zlib "
                       "stream does: corrupt image", name, offset, in_len);
  return corrupt (name, offset, in_len, "zlib", r);
}

#ifdef HAVE_LIBDEFLATE

static pthread_key_t state_key;
static pthread_once_t state_once = PTHREAD_ONCE_INIT;

static void
free_state (void *d)
{
  libdeflate_free_decompressor (d);
}

static void
make_key (void)
{
  pthread_key_create (&state_key, free_state);
}

long
vmdk_inflate (const void *in, size_t in_len, void *out, size_t out_len,
              const char *name, uint64_t offset)
{
  struct libdeflate_decompressor *d;
  enum libdeflate_result r;
  size_t actual;

  pthread_once (&state_once, make_key);
  d = pthread_getspecific (state_key);
  if (d == NULL) {
    d = libdeflate_alloc_decompressor ();
    if (d == NULL)
      return vmdk_error (ENOMEM, "libdeflate_alloc_decompressor: %m");
    if (pthread_setspecific (state_key, d) != 0) {
      libdeflate_free_decompressor (d);
      return vmdk_error (ENOMEM, "pthread_setspecific: %m");
    }
  }
  r = libdeflate_zlib_decompress (d, in, in_len, out, out_len, &actual);
  if (r == LIBDEFLATE_SUCCESS)
    return actual;
  if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
    return too_long (name, offset, out_len);
  return corrupt (name, offset, in_len, "libdeflate", (int) r);
}

const char *
vmdk_inflate_backend (void)
{
  return "libdeflate";
}

#else /* !HAVE_LIBDEFLATE */

long
vmdk_inflate (const void *in, size_t in_len, void *out, size_t out_len,
              const char *name, uint64_t offset)
{
  return zlib_inflate (in, in_len, out, out_len, name, offset, true);
}

const char *
vmdk_inflate_backend (void)
{
  return "zlib";
}

#endif /* !HAVE_LIBDEFLATE */

long
vmdk_inflate_prefix (const void *in, size_t in_len, void *out,
                     size_t out_len, const char *name, uint64_t offset)
{
  return zlib_inflate (in, in_len, out, out_len, name, offset, false);
}
