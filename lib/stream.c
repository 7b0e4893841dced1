/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "header.h"
#include "inflate.h"
#include "le.h"
#include "stream.h"

struct stream {
  struct vmdk_io *io;
  uint64_t file_size;
  uint32_t grain_bytes;
  uint64_t extent_length;
  size_t max_compressed;        /* marker + data, bounded by our buffer */
};

struct stream *
stream_new (struct vmdk_io *io, uint64_t file_size, uint32_t grain_bytes,
            uint64_t extent_length, bool markers)
{
  struct stream *s;

  if (grain_bytes > STREAM_MAX_GRAIN_BYTES) {
    vmdk_error (ENOTSUP, "%s: compressed grains of %" PRIu32 " bytes are "
                "larger than the limit %d", io->name, grain_bytes,
                STREAM_MAX_GRAIN_BYTES);
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
  /* Incompressible data grows a little under deflate; QEMU accepts up
   * to two grains, so do we.
   */
  s->max_compressed = 2 * (size_t) grain_bytes + SECTOR;
  return s;
}

void
stream_free (struct stream *s)
{
  free (s);
}

/* Read and inflate the whole grain at run into out (grain_bytes). */
static int
inflate_grain (struct stream *s, const struct run *run, unsigned char *out,
               unsigned char *cbuf, size_t *expected)
{
  const char *name = s->io->name;
  uint64_t lba, foff = run->file_offset, avail;
  uint32_t csize;
  char what[256];
  long n;

  avail = MIN ((uint64_t) s->max_compressed, s->file_size - foff);
  if (avail < GRAIN_MARKER_SIZE)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64
                       " is cut short by the end of the file",
                       name, foff);
  if (io_pread_full (s->io, cbuf, avail, foff, "compressed grain") == -1)
    return -1;
  lba = get_le64 (cbuf);
  csize = get_le32 (cbuf + 8);
  if (lba != run->grain_start / SECTOR)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64
                       " has lba %" PRIu64 ", expected %" PRIu64
                       ": corrupt image", name, foff, lba,
                       run->grain_start / SECTOR);
  if (csize == 0 || csize > avail - GRAIN_MARKER_SIZE)
    return vmdk_error (EIO, "%s: grain marker at offset %" PRIu64
                       " has compressed size %" PRIu32 " (expected 1 to %"
                       PRIu64 "): corrupt or truncated image",
                       name, foff, csize, avail - GRAIN_MARKER_SIZE);

  *expected = MIN ((uint64_t) s->grain_bytes,
                   s->extent_length - run->grain_start);
  snprintf (what, sizeof what, "%s: grain at offset %" PRIu64, name, foff);
  n = vmdk_inflate (cbuf + GRAIN_MARKER_SIZE, csize, out, s->grain_bytes,
                    what);
  if (n == -1)
    return -1;
  if ((size_t) n != *expected && (size_t) n != s->grain_bytes)
    return vmdk_error (EIO, "%s: inflates to %ld bytes, expected %zu: "
                       "corrupt image", what, n, *expected);
  if ((size_t) n < s->grain_bytes)
    memset (out + n, 0, s->grain_bytes - n);
  return 0;
}

int
stream_read (struct stream *s, const struct run *run, uint64_t offset,
             void *buf, size_t count)
{
  unsigned char *out, *cbuf;
  size_t expected;
  int r;

  out = malloc (s->grain_bytes);
  cbuf = malloc (s->max_compressed);
  if (out == NULL || cbuf == NULL) {
    free (out);
    free (cbuf);
    return vmdk_error (ENOMEM, "malloc: %m");
  }
  r = inflate_grain (s, run, out, cbuf, &expected);
  if (r == 0)
    memcpy (buf, out + (offset - run->grain_start), count);
  free (out);
  free (cbuf);
  return r;
}
