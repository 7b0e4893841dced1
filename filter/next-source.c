/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The layer below a filter as the engine's one file.
 *
 * nbdkit checks every call a filter makes into the layer below: the
 * range must lie inside its size, be non-empty, and writes, flushes
 * and zeroes must have been offered.  This file keeps to those rules,
 * so the engine can ask for anything: reads past the end are short
 * (as at the end of a file), writes past it fail with ENOSPC, and
 * requests are split at MAX_REQUEST.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "next-source.h"

#include "error.h"
#include "io.h"

/* The largest request sent below: NBD servers commonly refuse more
 * than 32 MiB in one request (qemu-nbd does).
 */
#define MAX_REQUEST (32 * 1024 * 1024)

struct next_source {
  struct vmdk_source src;
  nbdkit_next *next;
  char *name;
  uint64_t size;
  bool can_write, can_flush, can_zero;
  bool serialize;
  pthread_mutex_t lock;         /* with serialize: one call at a time */
};

struct next_io {
  struct vmdk_io io;
  struct next_source *s;
};

static struct next_source *
source_of (struct vmdk_io *io)
{
  return ((struct next_io *) io)->s;
}

/* One call into the layer below, as nbdkit_next's functions report
 * errors: -1 with *err set.
 */
enum op { OP_READ, OP_WRITE, OP_ZERO, OP_FLUSH };

static const char *const op_names[] = { "read", "write", "zero", "flush" };

static int
call_below (struct next_source *s, enum op op, void *buf, uint32_t count,
            uint64_t offset, uint32_t flags, int *err)
{
  nbdkit_next *n = s->next;
  int r = -1;

  if (s->serialize)
    pthread_mutex_lock (&s->lock);
  switch (op) {
  case OP_READ: r = n->pread (n, buf, count, offset, 0, err); break;
  case OP_WRITE: r = n->pwrite (n, buf, count, offset, 0, err); break;
  case OP_ZERO: r = n->zero (n, count, offset, flags, err); break;
  case OP_FLUSH: r = n->flush (n, 0, err); break;
  }
  if (s->serialize)
    pthread_mutex_unlock (&s->lock);
  if (r == -1 && *err == 0)
    *err = EIO;
  return r;
}

/* Do op over [offset, offset + count), which lies inside the layer
 * below, in requests of at most MAX_REQUEST.
 */
static int
do_range (struct vmdk_io *io, enum op op, unsigned char *buf, uint64_t count,
          uint64_t offset, uint32_t flags)
{
  struct next_source *s = source_of (io);

  while (count > 0) {
    uint32_t n = count < MAX_REQUEST ? count : MAX_REQUEST;
    int err = 0;

    if (call_below (s, op, buf, n, offset, flags, &err) == -1) {
      errno = err;
      return vmdk_error (err, "%s: %s of %" PRIu32 " bytes at offset %"
                         PRIu64 " in the layer below failed: %m",
                         io->name, op_names[op], n, offset);
    }
    if (buf)
      buf += n;
    offset += n;
    count -= n;
  }
  return 0;
}

static int64_t
next_pread (struct vmdk_io *io, void *buf, size_t count, uint64_t offset)
{
  struct next_source *s = source_of (io);

  if (offset >= s->size)
    return 0;
  if (count > s->size - offset)
    count = s->size - offset;
  if (do_range (io, OP_READ, buf, count, offset, 0) == -1)
    return -1;
  return count;
}

static const char cannot_grow[] =
  "the vmdk filter cannot grow the layer below it; serve the image with "
  "the vmdk plugin (nbdkit vmdk FILE) to write where it has no grain";

/* Writes stay inside the layer below (the engine appends only where
 * cannot_grow lets it, so this is a last line of defence).
 */
static int
check_inside (struct vmdk_io *io, uint64_t count, uint64_t offset)
{
  struct next_source *s = source_of (io);

  if (!s->can_write)
    return vmdk_error (EROFS, "%s: the layer below is read-only", io->name);
  if (offset > s->size || count > s->size - offset)
    return vmdk_error (ENOSPC, "%s: %" PRIu64 " bytes at offset %" PRIu64
                       " lie past the end of the layer below (%" PRIu64
                       " bytes): %s", io->name, count, offset, s->size,
                       cannot_grow);
  return 0;
}

static int
next_pwrite (struct vmdk_io *io, const void *buf, size_t count,
             uint64_t offset)
{
  if (check_inside (io, count, offset) == -1)
    return -1;
  return do_range (io, OP_WRITE, (unsigned char *) buf, count, offset, 0);
}

static int
next_flush (struct vmdk_io *io)
{
  struct next_source *s = source_of (io);
  int err = 0;

  if (!s->can_flush)            /* nothing below to make durable */
    return 0;
  if (call_below (s, OP_FLUSH, NULL, 0, 0, 0, &err) == -1) {
    errno = err;
    return vmdk_error (err, "%s: flush of the layer below failed: %m",
                       io->name);
  }
  return 0;
}

static int
next_get_size (struct vmdk_io *io, uint64_t *size)
{
  *size = source_of (io)->size;
  return 0;
}

/* One file per source: its identity is the source. */
static int
next_get_id (struct vmdk_io *io, uint64_t id[2])
{
  id[0] = 0;
  id[1] = (uintptr_t) source_of (io);
  return 0;
}

static int
zero_below (struct vmdk_io *io, uint64_t offset, uint64_t count,
            uint32_t flags)
{
  if (!source_of (io)->can_zero)
    return vmdk_error (EOPNOTSUPP, "%s: the layer below cannot zero",
                       io->name);
  if (check_inside (io, count, offset) == -1)
    return -1;
  return do_range (io, OP_ZERO, NULL, count, offset, flags);
}

static int
next_punch (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  return zero_below (io, offset, count, NBDKIT_FLAG_MAY_TRIM);
}

static int
next_zero_range (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  return zero_below (io, offset, count, 0);
}

static int
next_extend (struct vmdk_io *io, uint64_t size)
{
  if (size > source_of (io)->size)
    return check_inside (io, size - source_of (io)->size,
                         source_of (io)->size);
  return 0;
}

static void
next_close (struct vmdk_io *io)
{
  free (io->name);
  free (io);
}

static const struct vmdk_io_ops next_io_ops = {
  .pread = next_pread,
  .pwrite = next_pwrite,
  .flush = next_flush,
  .get_size = next_get_size,
  .region = NULL,
  .get_id = next_get_id,
  .punch = next_punch,
  .zero_range = next_zero_range,
  .extend = next_extend,
  .close = next_close,
};

static void *
refuse_other_file (const char *name)
{
  vmdk_error (EPERM, "%s: the image names another file; the vmdk filter "
              "serves single-file images only (monolithicSparse, "
              "streamOptimized, a bare hosted-sparse or COWD file): "
              "serve this one with the vmdk plugin (nbdkit vmdk FILE)",
              name);
  return NULL;
}

static struct vmdk_io *
source_open (struct vmdk_source *src, const char *name, bool readonly)
{
  struct next_source *s = (struct next_source *) src;
  struct next_io *n;

  if (strcmp (name, s->name) != 0)
    return refuse_other_file (name);
  if (!readonly && !s->can_write) {
    vmdk_error (EROFS, "%s: the layer below is read-only", name);
    return NULL;
  }
  n = calloc (1, sizeof *n);
  if (n == NULL || (n->io.name = strdup (name)) == NULL) {
    free (n);
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  n->io.ops = &next_io_ops;
  n->io.cannot_grow = cannot_grow;
  n->s = s;
  return &n->io;
}

static struct vmdk_source *
source_subdir (struct vmdk_source *src, const char *dir)
{
  return refuse_other_file (dir);
}

static void
source_close (struct vmdk_source *src)
{
  struct next_source *s = (struct next_source *) src;

  pthread_mutex_destroy (&s->lock);
  free (s->name);
  free (s);
}

static const struct vmdk_source_ops next_source_ops = {
  .open = source_open,
  .subdir = source_subdir,
  .close = source_close,
};

struct vmdk_source *
next_source_new (nbdkit_next *next, const char *name, bool serialize)
{
  struct next_source *s;
  int64_t size;
  int w, f, z;

  size = next->get_size (next);
  w = next->can_write (next);
  f = next->can_flush (next);
  z = w == 1 ? next->can_zero (next) : 0;
  if (size == -1 || w == -1 || f == -1 || z == -1) {
    vmdk_error (EIO, "%s: the layer below did not say its size or what it "
                "can do", name);
    return NULL;
  }
  s = calloc (1, sizeof *s);
  if (s == NULL || (s->name = strdup (name)) == NULL) {
    free (s);
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  s->src.ops = &next_source_ops;
  s->next = next;
  s->size = size;
  s->can_write = w == 1;
  s->can_flush = f == 1;
  s->can_zero = z > NBDKIT_ZERO_NONE;
  s->serialize = serialize;
  pthread_mutex_init (&s->lock, NULL);
  return &s->src;
}
