/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* One inflate function, backed by libdeflate (several times faster for
 * whole-buffer inflation) when configure found it, else zlib.
 */

#include <config.h>

#include <errno.h>
#include <limits.h>

#ifdef HAVE_LIBDEFLATE
#include <libdeflate.h>
#include <pthread.h>
#endif
#include <zlib.h>

#include "error.h"
#include "inflate.h"

#ifdef HAVE_LIBDEFLATE

/* A libdeflate decompressor is not thread-safe but cheap to keep:
 * one per thread, freed when the thread exits.
 */
static pthread_key_t decompressor_key;
static pthread_once_t decompressor_once = PTHREAD_ONCE_INIT;

static void
free_decompressor (void *d)
{
  libdeflate_free_decompressor (d);
}

static void
make_key (void)
{
  pthread_key_create (&decompressor_key, free_decompressor);
}

long
vmdk_inflate (const void *in, size_t in_len, void *out, size_t out_len,
              const char *what)
{
  struct libdeflate_decompressor *d;
  enum libdeflate_result r;
  size_t actual;

  pthread_once (&decompressor_once, make_key);
  d = pthread_getspecific (decompressor_key);
  if (d == NULL) {
    d = libdeflate_alloc_decompressor ();
    if (d == NULL)
      return vmdk_error (ENOMEM, "libdeflate_alloc_decompressor: %m");
    pthread_setspecific (decompressor_key, d);
  }
  r = libdeflate_zlib_decompress (d, in, in_len, out, out_len, &actual);
  if (r == LIBDEFLATE_SUCCESS)
    return actual;
  if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
    return vmdk_error (EIO, "%s: compressed grain inflates to more than "
                       "%zu bytes: corrupt image", what, out_len);
  return vmdk_error (EIO, "%s: compressed grain is not valid zlib data "
                     "(libdeflate error %d): corrupt image", what, (int) r);
}

const char *
vmdk_inflate_backend (void)
{
  return "libdeflate";
}

#else /* !HAVE_LIBDEFLATE */

long
vmdk_inflate (const void *in, size_t in_len, void *out, size_t out_len,
              const char *what)
{
  z_stream zs = { 0 };
  int r;

  if (in_len > UINT_MAX || out_len > UINT_MAX)
    return vmdk_error (EIO, "%s: compressed grain too large", what);
  if (inflateInit (&zs) != Z_OK)
    return vmdk_error (ENOMEM, "%s: inflateInit failed", what);
  zs.next_in = (Bytef *) in;
  zs.avail_in = in_len;
  zs.next_out = out;
  zs.avail_out = out_len;
  r = inflate (&zs, Z_FINISH);
  inflateEnd (&zs);
  if (r == Z_STREAM_END)
    return out_len - zs.avail_out;
  if (r == Z_BUF_ERROR && zs.avail_out == 0)
    return vmdk_error (EIO, "%s: compressed grain inflates to more than "
                       "%zu bytes: corrupt image", what, out_len);
  return vmdk_error (EIO, "%s: compressed grain is not valid zlib data "
                     "(zlib error %d): corrupt image", what, r);
}

const char *
vmdk_inflate_backend (void)
{
  return "zlib";
}

#endif /* !HAVE_LIBDEFLATE */
