/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Reading: finding the extent and run that hold an offset (for the
 * block-status path in map.c too), and the read path that splits a
 * request across extents and runs, batching compressed grains and
 * asking the parent for what a link does not allocate.
 *
 * The image is immutable once open (the grain-table cache has its own
 * sharded locks), so reads take no image-wide lock.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "image.h"

struct extent *
image_find_extent (struct vmdk_image *img, uint64_t offset)
{
  size_t lo = 0, hi = img->nr_extents;

  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (img->extents[mid].start <= offset)
      lo = mid;
    else
      hi = mid;
  }
  return &img->extents[lo];
}

int
image_lookup (struct vmdk_image *img, uint64_t offset, uint64_t max,
              bool for_map, struct extent **ep, struct run *run)
{
  struct extent *e = image_find_extent (img, offset);
  uint64_t rel = offset - e->start;

  max = MIN (max, e->length - rel);
  *ep = e;
  if (e->access == ACCESS_NOACCESS) {
    if (for_map) {              /* unknown contents: call it data */
      run->kind = RUN_DATA;
      run->length = max;
      return 0;
    }
    return vmdk_error (EIO, "%s: read at offset %" PRIu64 " falls in a "
                       "NOACCESS extent (\"%s\")", img->name, offset,
                       e->line);
  }
  if (e->ops->lookup (e, rel, max, for_map, run) == -1)
    return -1;
  if (run->length == 0 || run->length > max)
    run->length = max;            /* defensive: always make progress */
  return 0;
}

/* The most compressed grains read together. */
#define MAX_GRAIN_BATCH 32

/* Read the compressed grain of run at offset together with the
 * compressed grains that follow it in the same extent, up to the end
 * of the request (count bytes): the extent may then fetch all their
 * bytes at once.  *done is set to the bytes read.  A grain that cannot
 * be looked up ends the batch; the caller's next lookup reports it.
 */
static int
read_compressed_grains (struct vmdk_image *img, struct extent *e,
                        const struct run *run, uint64_t offset,
                        unsigned char *buf, size_t count, size_t *done)
{
  struct run runs[MAX_GRAIN_BATCH];
  size_t nr = 1, n = run->length;

  runs[0] = *run;
  while (nr < MAX_GRAIN_BATCH && n < count) {
    struct extent *next_e;
    struct run next;

    if (image_lookup (img, offset + n, count - n, false, &next_e,
                      &next) == -1 ||
        next_e != e || next.kind != RUN_COMPRESSED)
      break;
    runs[nr++] = next;
    n += next.length;
  }
  if (e->ops->read_compressed (e, runs, nr, offset - e->start, buf, n) == -1)
    return -1;
  *done = n;
  return 0;
}

int
vmdk_pread (struct vmdk_image *img, void *buf, size_t count, uint64_t offset)
{
  unsigned char *b = buf;
  uint64_t end;

  if (ADD_OVERFLOW (offset, (uint64_t) count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: read of %zu bytes at offset %" PRIu64
                       " is beyond the end of the disk (%" PRIu64 ")",
                       img->name, count, offset, img->size);
  while (count > 0) {
    struct extent *e;
    struct run run;
    size_t n;

    if (image_lookup (img, offset, count, false, &e, &run) == -1)
      return -1;
    n = run.length;
    switch (run.kind) {
    case RUN_DATA:
      if (io_pread_zerofill (e->io, b, n, run.file_offset) == -1)
        return -1;
      break;
    case RUN_COMPRESSED:
      if (read_compressed_grains (img, e, &run, offset, b, count, &n) == -1)
        return -1;
      break;
    case RUN_UNALLOC:
      if (img->parent) {
        if (chain_read_parent (img->parent, b, n, offset) == -1)
          return -1;
        break;
      }
      /* fall through */
    case RUN_ZERO:
    case RUN_HOLE:
      memset (b, 0, n);
      break;
    }
    vmdk_debug (VMDK_DEBUG_GRAINS, "pread: offset %" PRIu64 " len %zu "
                "kind %d file offset %" PRIu64, offset, n, run.kind,
                run.kind == RUN_DATA ? run.file_offset : 0);
    b += n;
    offset += n;
    count -= n;
  }
  return 0;
}
