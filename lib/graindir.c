/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The grain directory walk shared by every grain-structured extent:
 * GD entry -> grain table (through the cache) -> grain-table entry,
 * with runs of like grains coalesced.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "checked.h"
#include "error.h"
#include "extent.h"
#include "gtcache.h"
#include "header.h"
#include "le.h"

int
grain_dir_init (struct grain_dir *d, const char *name)
{
  uint64_t i;

  d->owner = gtcache_new_owner (d->cache);
  for (i = 0; i < d->nr_gts; ++i) {
    uint64_t off = d->gt_offsets[i];

    /* A table must start past the first sector (the header) and inside
     * the file.  A table cut short by the end of the file reads its
     * missing entries as unallocated.
     */
    if (off != 0 && (off < SECTOR || off >= d->file_size)) {
      vmdk_debug (VMDK_DEBUG_OPEN, "%s: grain directory entry %" PRIu64
                  " points at byte %" PRIu64 ", outside the file (size %"
                  PRIu64 "): reads of its range will fail",
                  name, i, off, d->file_size);
      d->gt_offsets[i] = GD_BAD;
    }
  }
  return 0;
}

void
grain_dir_free (struct grain_dir *d)
{
  free (d->gt_offsets);
  d->gt_offsets = NULL;
}

static uint64_t
get_gte (const unsigned char *table, uint32_t gte_size, uint32_t i)
{
  return gte_size == 4 ? get_le32 (table + (size_t) i * 4)
                       : get_le64 (table + (size_t) i * 8);
}

/* Return the grain table, pinned, reading it into the cache on a miss. */
static const unsigned char *
load_table (struct grain_dir *d, uint64_t gt_index, struct gt_entry **pin)
{
  uint64_t key = gtcache_key (d->owner, gt_index);
  size_t gt_bytes = (size_t) d->gtes_per_gt * d->gte_size;
  struct gt_entry *e;
  const unsigned char *data;

  data = gtcache_get (d->cache, key, pin);
  if (data)
    return data;

  e = gtcache_alloc (gt_bytes);
  if (e == NULL) {
    vmdk_error (ENOMEM, "malloc: grain table: %m");
    return NULL;
  }
  if (io_pread_zerofill (d->io, gtcache_data (e), gt_bytes,
                         d->gt_offsets[gt_index]) == -1) {
    gtcache_discard (e);
    return NULL;
  }
  vmdk_debug (VMDK_DEBUG_CACHE, "%s: loaded grain table %" PRIu64
              " from offset %" PRIu64, d->io->name, gt_index,
              d->gt_offsets[gt_index]);
  *pin = gtcache_insert (d->cache, key, e);
  return gtcache_data (*pin);
}

static enum run_kind
run_kind_of (enum grain_kind k)
{
  switch (k) {
  case GRAIN_ZERO: return RUN_ZERO;
  case GRAIN_DATA: return RUN_DATA;
  case GRAIN_COMPRESSED: return RUN_COMPRESSED;
  case GRAIN_UNALLOC: default: return RUN_UNALLOC;
  }
}

int
grain_dir_lookup (struct grain_dir *d, uint64_t offset, uint64_t max,
                  struct run *run)
{
  uint64_t coverage = d->grain_bytes * d->gtes_per_gt;
  uint64_t gt_index = offset / coverage;
  uint64_t in_table = offset % coverage;
  uint64_t in_grain = in_table % d->grain_bytes;
  uint32_t i = in_table / d->grain_bytes, j;
  const unsigned char *table;
  struct gt_entry *pin;
  enum grain_kind kind, k;
  uint64_t foff, f;

  /* Runs never cross a grain table: the caller loops. */
  max = MIN (max, coverage - in_table);

  if (gt_index >= d->nr_gts || d->gt_offsets[gt_index] == 0) {
    run->kind = RUN_UNALLOC;
    run->length = max;
    return 0;
  }
  if (d->gt_offsets[gt_index] == GD_BAD)
    return vmdk_error (EIO, "%s: grain directory entry %" PRIu64
                       " points outside the file: corrupt image",
                       d->io->name, gt_index);

  table = load_table (d, gt_index, &pin);
  if (table == NULL)
    return -1;

  if (d->decode (d, get_gte (table, d->gte_size, i), gt_index, i,
                 &kind, &foff) == -1)
    goto err;
  run->kind = run_kind_of (kind);
  run->length = d->grain_bytes - in_grain;
  if (kind == GRAIN_COMPRESSED) {
    run->file_offset = foff;
    run->grain_start = offset - in_grain;
  }
  else {
    run->file_offset = foff + in_grain;
    /* Extend over following grains of the same kind; data grains only
     * while they are physically contiguous in the file.
     */
    for (j = i + 1; run->length < max && j < d->gtes_per_gt; ++j) {
      /* A corrupt entry ends the run; the next lookup reports it, so
       * only the bad grain's range fails.
       */
      if (d->decode (d, get_gte (table, d->gte_size, j), gt_index, j,
                     &k, &f) == -1 ||
          k != kind ||
          (kind == GRAIN_DATA && f != foff + (j - i) * d->grain_bytes))
        break;
      run->length += d->grain_bytes;
    }
  }
  gtcache_unpin (pin);
  run->length = MIN (run->length, max);
  return 0;

 err:
  gtcache_unpin (pin);
  return -1;
}
