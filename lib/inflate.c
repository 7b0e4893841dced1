/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* One inflate function, backed by libdeflate (several times faster for
 * whole-buffer inflation) when configure found it, else zlib.  Either
 * way the inflate state is allocated once per thread and kept (it is
 * not thread-safe, and zlib's inflateInit costs a 32 KiB window).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#else
#include <zlib.h>
#endif

#include "error.h"
#include "inflate.h"

static pthread_key_t state_key;
static pthread_once_t state_once = PTHREAD_ONCE_INIT;

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

#ifdef HAVE_LIBDEFLATE

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

static void
free_state (void *p)
{
  z_stream *zs = p;

  inflateEnd (zs);
  free (zs);
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
  z_stream *zs;
  int r;

  if (in_len > UINT_MAX || out_len > UINT_MAX)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": "
                       "compressed grain too large for zlib", name, offset);
  pthread_once (&state_once, make_key);
  zs = pthread_getspecific (state_key);
  if (zs == NULL) {
    zs = calloc (1, sizeof *zs);
    if (zs == NULL)
      return vmdk_error (ENOMEM, "calloc: %m");
    if (inflateInit (zs) != Z_OK) {
      free (zs);
      return vmdk_error (ENOMEM, "inflateInit failed");
    }
    if (pthread_setspecific (state_key, zs) != 0) {
      free_state (zs);
      return vmdk_error (ENOMEM, "pthread_setspecific: %m");
    }
  }
  else if (inflateReset (zs) != Z_OK)
    return vmdk_error (EIO, "inflateReset failed");
  zs->next_in = (Bytef *) in;
  zs->avail_in = in_len;
  zs->next_out = out;
  zs->avail_out = out_len;
  r = inflate (zs, Z_FINISH);
  if (r == Z_STREAM_END)
    return out_len - zs->avail_out;
  if (r == Z_BUF_ERROR && zs->avail_out == 0)
    return too_long (name, offset, out_len);
  if (r == Z_BUF_ERROR)          /* output room left: input ran out */
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64 ": its %zu "
                       "bytes of compressed data end before the zlib "
                       "stream does: corrupt image", name, offset, in_len);
  return corrupt (name, offset, in_len, "zlib", r);
}

const char *
vmdk_inflate_backend (void)
{
  return "zlib";
}

#endif /* !HAVE_LIBDEFLATE */
