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

static const struct extent_ops flat_ops = {
  .kind = "FLAT",
  .lookup = flat_lookup,
  .free = flat_free,
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

static const struct extent_ops zero_ops = {
  .kind = "ZERO",
  .lookup = zero_lookup,
  .free = zero_free,
};

int
extent_zero_init (struct extent *e)
{
  e->ops = &zero_ops;
  return 0;
}
