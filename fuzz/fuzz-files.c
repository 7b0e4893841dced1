/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "fuzz-files.h"

int
fuzz_add_files (struct vmdk_source *src, const uint8_t *data, size_t size,
                fuzz_file_fn fn, void *opaque)
{
  const size_t mlen = sizeof FILE_MARKER - 1;
  const uint8_t *end = data + size, *m;
  unsigned nr = 0;

  m = memmem (data, size, FILE_MARKER, mlen);
  if (vmdk_source_memory_add (src, MAIN_NAME, data,
                              m ? (size_t) (m - data) : size) == -1)
    return -1;
  if (fn)
    fn (opaque, MAIN_NAME, true, data, m ? (size_t) (m - data) : size);

  while (m != NULL && nr++ < MAX_FILES) {
    const uint8_t *name = m + mlen, *nl, *body, *next;
    char namebuf[MAX_NAME + 1];
    size_t namelen;

    nl = memchr (name, '\n', end - name);
    if (nl == NULL)
      break;
    body = nl + 1;
    next = memmem (body, end - body, FILE_MARKER, mlen);
    namelen = nl - name;
    if (namelen > 0 && namelen <= MAX_NAME &&
        memchr (name, '\0', namelen) == NULL) {
      memcpy (namebuf, name, namelen);
      namebuf[namelen] = '\0';
      if (vmdk_source_memory_add (src, namebuf, body,
                                  (next ? next : end) - body) == -1)
        return -1;
      if (fn)
        fn (opaque, namebuf, false, body, (next ? next : end) - body);
    }
    m = next;
  }
  return 0;
}

/* A source that lends the files of another: closing it leaves them
 * alone, so that the same memory files can be opened again after a
 * vmdk_close (to check that writes persisted).
 */
struct borrowed_source {
  struct vmdk_source src;
  struct vmdk_source *inner;
};

/* Files may not grow past MAX_FILE_BYTES: corrupt metadata can point
 * writes terabytes into a file, which a real file stores as a sparse
 * hole but the memory source would try to allocate.  The limit acts
 * like a full disk (EFBIG), an error path worth fuzzing too.  Only the
 * growing operations of the memory files' ops table are wrapped: the
 * io objects are the memory source's own.
 */
static const struct vmdk_io_ops *mem_ops;
static struct vmdk_io_ops limited_ops;

static int
too_big (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  if (offset > MAX_FILE_BYTES || count > MAX_FILE_BYTES - offset)
    return vmdk_error (EFBIG, "%s: fuzz: the file would grow past "
                       "%d bytes (offset %" PRIu64 ", %" PRIu64 " bytes)",
                       io->name, MAX_FILE_BYTES, offset, count);
  return 0;
}

static int
limited_pwrite (struct vmdk_io *io, const void *buf, size_t count,
                uint64_t offset)
{
  if (too_big (io, offset, count) == -1)
    return -1;
  return mem_ops->pwrite (io, buf, count, offset);
}

static int
limited_punch (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  if (too_big (io, offset, count) == -1)
    return -1;
  return mem_ops->punch (io, offset, count);
}

static int
limited_zero_range (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  if (too_big (io, offset, count) == -1)
    return -1;
  return mem_ops->zero_range (io, offset, count);
}

static int
limited_extend (struct vmdk_io *io, uint64_t size)
{
  if (too_big (io, size, 0) == -1)
    return -1;
  return mem_ops->extend (io, size);
}

static int
limited_truncate (struct vmdk_io *io, uint64_t size)
{
  if (too_big (io, size, 0) == -1)
    return -1;
  return mem_ops->truncate (io, size);
}

static struct vmdk_io *
borrowed_open (struct vmdk_source *src, const char *name, bool readonly)
{
  struct vmdk_source *inner = ((struct borrowed_source *) src)->inner;
  struct vmdk_io *io = inner->ops->open (inner, name, readonly);

  if (io == NULL)
    return NULL;
  if (mem_ops == NULL) {
    mem_ops = io->ops;
    limited_ops = *mem_ops;
    if (mem_ops->pwrite)
      limited_ops.pwrite = limited_pwrite;
    if (mem_ops->punch)
      limited_ops.punch = limited_punch;
    if (mem_ops->zero_range)
      limited_ops.zero_range = limited_zero_range;
    if (mem_ops->extend)
      limited_ops.extend = limited_extend;
    if (mem_ops->truncate)
      limited_ops.truncate = limited_truncate;
  }
  CHECK (io->ops == mem_ops);
  io->ops = &limited_ops;
  return io;
}

static struct vmdk_source *
borrowed_subdir (struct vmdk_source *src, const char *dir)
{
  struct vmdk_source *inner = ((struct borrowed_source *) src)->inner;

  return inner->ops->subdir (inner, dir);
}

static void
borrowed_close (struct vmdk_source *src)
{
  free (src);
}

static const struct vmdk_source_ops borrowed_ops = {
  .open = borrowed_open,
  .subdir = borrowed_subdir,
  .close = borrowed_close,
};

struct vmdk_source *
fuzz_borrow_files (struct vmdk_source *files)
{
  struct borrowed_source *b = malloc (sizeof *b);

  if (b == NULL)
    return NULL;
  b->src.ops = &borrowed_ops;
  b->inner = files;
  return &b->src;
}
