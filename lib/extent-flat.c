/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* FLAT and VMFS extents (raw bytes at an offset in a file) and ZERO
 * extents (no file, all zeroes).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "checked.h"
#include "error.h"
#include "extent.h"
#include "header.h"

struct flat {
  uint64_t base;                /* byte offset of the extent in the file */
};

static int
flat_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
             struct run *run)
{
  const struct flat *f = e->priv;
  uint64_t foff = f->base + offset;       /* checked at init */
  bool is_data;
  uint64_t end;

  run->kind = RUN_DATA;
  run->length = max;
  run->file_offset = foff;
  /* Only block status pays for SEEK_DATA/SEEK_HOLE.  A host hole reads
   * as zeroes and never falls through to anything.
   */
  if (for_map && e->io->ops->region) {
    if (e->io->ops->region (e->io, foff, &is_data, &end) == -1)
      return -1;
    if (!is_data)
      run->kind = RUN_HOLE;
    if (end > foff)
      run->length = MIN (max, end - foff);
  }
  return 0;
}

static void
flat_free (struct extent *e)
{
  free (e->priv);
}

static int
zero_nop (struct extent *e)
{
  return 0;
}

static int
flat_open_rw (struct extent *e, const char **reason)
{
  return 0;
}

static int
flat_pwrite (struct extent *e, const void *buf, size_t count,
             uint64_t offset, const struct write_ctx *ctx)
{
  const struct flat *f = e->priv;

  return e->io->ops->pwrite (e->io, buf, count, f->base + offset);
}

/* Zero with fallocate where the host supports it (punching a hole when
 * trimming is allowed), else by writing zeroes unless asked to be fast.
 */
static int
flat_zero (struct extent *e, uint64_t offset, uint64_t count,
           unsigned flags, const struct write_ctx *ctx)
{
  const struct flat *f = e->priv;
  struct vmdk_io *io = e->io;
  uint64_t foff = f->base + offset;
  int r = -1;

  if (flags & EXTENT_ZERO_CHECK_ONLY)   /* fallocate may still refuse */
    return 0;
  if ((flags & EXTENT_ZERO_MAY_TRIM) && io->ops->punch)
    r = io->ops->punch (io, foff, count);
  if (r == -1 && io->ops->zero_range)
    r = io->ops->zero_range (io, foff, count);
  if (r == 0)
    return 0;
  if (errno != EOPNOTSUPP && io->ops->zero_range)
    return -1;
  if (flags & EXTENT_ZERO_FAST)
    return vmdk_error (ENOTSUP, "%s: fast zero not possible: the host "
                       "file system cannot zero ranges", io->name);
  return io_write_zeroes (io, foff, count);
}

static int
flat_trim (struct extent *e, uint64_t offset, uint64_t count,
           const struct write_ctx *ctx)
{
  const struct flat *f = e->priv;

  /* Advisory: a host that cannot punch holes simply keeps the data. */
  if (e->io->ops->punch &&
      e->io->ops->punch (e->io, f->base + offset, count) == -1 &&
      errno != EOPNOTSUPP)
    return -1;
  return 0;
}

static int
flat_flush (struct extent *e)
{
  return e->io->ops->flush (e->io);
}

static int
flat_close_rw (struct extent *e)
{
  return flat_flush (e);
}

static const struct extent_ops flat_ops = {
  .kind = "FLAT",
  .lookup = flat_lookup,
  .free = flat_free,
  .open_rw = flat_open_rw,
  .pwrite = flat_pwrite,
  .zero = flat_zero,
  .trim = flat_trim,
  .flush = flat_flush,
  .begin_rw = zero_nop,
  .close_rw = flat_close_rw,
};

int
extent_flat_init (struct extent *e, uint64_t offset_sectors)
{
  struct flat *f;
  uint64_t base, end;

  if (MUL_OVERFLOW (offset_sectors, (uint64_t) SECTOR, &base) ||
      ADD_OVERFLOW (base, e->length, &end))
    return vmdk_error (EINVAL, "%s: extent offset %" PRIu64 " sectors is "
                       "too large", e->io->name, offset_sectors);
  f = malloc (sizeof *f);
  if (f == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  f->base = base;
  e->priv = f;
  e->ops = &flat_ops;
  return 0;
}

static int
zero_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
             struct run *run)
{
  run->kind = RUN_HOLE;
  run->length = max;
  return 0;
}

static void
zero_free (struct extent *e)
{
}

/* A ZERO extent accepts writes of zeroes (they change nothing) and
 * refuses anything else.
 */
static int
zero_pwrite (struct extent *e, const void *buf, size_t count,
             uint64_t offset, const struct write_ctx *ctx)
{
  const unsigned char *b = buf;
  size_t i;

  for (i = 0; i < count; ++i)
    if (b[i] != 0)
      return vmdk_error (EPERM, "write of non-zero data into a ZERO extent "
                         "(\"%s\")", e->line);
  return 0;
}

static int
zero_zero (struct extent *e, uint64_t offset, uint64_t count,
           unsigned flags, const struct write_ctx *ctx)
{
  return 0;
}

static int
zero_trim (struct extent *e, uint64_t offset, uint64_t count,
           const struct write_ctx *ctx)
{
  return 0;
}

static const struct extent_ops zero_ops = {
  .kind = "ZERO",
  .lookup = zero_lookup,
  .free = zero_free,
  .open_rw = flat_open_rw,
  .pwrite = zero_pwrite,
  .zero = zero_zero,
  .trim = zero_trim,
  .flush = zero_nop,
  .begin_rw = zero_nop,
  .close_rw = zero_nop,
};

int
extent_zero_init (struct extent *e)
{
  e->ops = &zero_ops;
  return 0;
}
