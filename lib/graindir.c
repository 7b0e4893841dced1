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
#include <assert.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "array.h"
#include "graindir.h"
#include "gtcache.h"
#include "header.h"
#include "le.h"

int
grain_dir_init (struct grain_dir *d, const char *name)
{
  uint64_t i;

  d->owner = gtcache_new_owner (d->cache);
  d->open_file_size = d->file_size;
  pthread_mutex_init (&d->alloc_lock, NULL);
  d->lock_initialized = true;
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
  size_t i;

  for (i = 0; i < d->nr_dirty; ++i) {      /* unflushed: discarded */
    gtcache_clean (d->cache, d->dirty[i]);
    gtcache_unpin (d->dirty[i]);
  }
  free (d->dirty);
  free (d->dirty_index);
  free (d->dirty_gdes);
  free (d->table_state);
  free (d->rgt_offsets);
  free (d->gt_offsets);
  d->gt_offsets = NULL;
  if (d->lock_initialized)
    pthread_mutex_destroy (&d->alloc_lock);
  d->lock_initialized = false;
}

/* Entries may be updated in place by a writer while readers look at
 * the same pinned table: use single aligned atomic loads and stores.
 */
static uint64_t
get_gte (const unsigned char *table, uint32_t gte_size, uint32_t i)
{
  if (gte_size == 4)
    return le32toh (__atomic_load_n ((const uint32_t *) table + i,
                                     __ATOMIC_RELAXED));
  return le64toh (__atomic_load_n ((const uint64_t *) table + i,
                                   __ATOMIC_RELAXED));
}

static uint64_t
gt_offset (const struct grain_dir *d, uint64_t t)
{
  return __atomic_load_n (&d->gt_offsets[t], __ATOMIC_ACQUIRE);
}

/* Grain tables loaded with one read: at most this many bytes, and at
 * most 1/BATCH_BUDGET_SHARE of the cache (a small cache must not evict
 * its own tables to make room for a batch).
 */
#define BATCH_MAX_BYTES (256 * 1024)
#define BATCH_BUDGET_SHARE 8

/* The tables after gt_index that lie right after it in the file and
 * are in no cache entry: reserve them (up to max, into batch[]) so
 * that one read loads them all.  Returns how many.
 */
static size_t
reserve_neighbours (struct grain_dir *d, uint64_t gt_index, size_t gt_bytes,
                    uint64_t stride, struct gt_entry **batch, size_t max)
{
  uint64_t first = gt_offset (d, gt_index);
  size_t n = 0;

  while (n < max && gt_index + 1 + n < d->nr_gts) {
    uint64_t t = gt_index + 1 + n;

    if (gt_offset (d, t) != first + (n + 1) * stride)
      break;
    batch[n] = gtcache_try_reserve (d->cache, gtcache_key (d->owner, t),
                                    gt_bytes);
    if (batch[n] == NULL)       /* cached already, or being loaded */
      break;
    n++;
  }
  return n;
}

/* Fill the reserved entries e[0..n) (tables first, first + 1, ...,
 * stride bytes apart in the file) with one read.
 *
 * A read from disk races with writers: a table could be changed in
 * the cache, flushed and evicted while our read of the old bytes is in
 * flight.  Reserving the entries first makes writers wait for them, and
 * each flush bumps flush_gen before dirty tables become evictable, so
 * a read that saw no change of generation cannot be older than the
 * disk; one that did is done again.
 */
static int
fill_tables (struct grain_dir *d, uint64_t first, size_t gt_bytes,
             uint64_t stride, struct gt_entry **e, size_t n)
{
  unsigned char *buf = NULL;
  uint64_t gen;
  size_t i;
  int r;

  if (n > 1) {
    buf = malloc ((n - 1) * stride + gt_bytes);
    if (buf == NULL)
      return vmdk_error (ENOMEM, "malloc: grain tables: %m");
  }
  do {
    gen = __atomic_load_n (&d->flush_gen, __ATOMIC_ACQUIRE);
    r = io_pread_zerofill (d->io, n > 1 ? buf : gtcache_data (e[0]),
                           (n - 1) * stride + gt_bytes, first);
  } while (r == 0 && __atomic_load_n (&d->flush_gen, __ATOMIC_ACQUIRE) != gen);
  if (r == 0 && n > 1)
    for (i = 0; i < n; ++i)
      memcpy (gtcache_data (e[i]), buf + i * stride, gt_bytes);
  free (buf);
  return r;
}

/* Return the grain table, pinned, reading it into the cache on a miss,
 * together with the uncached tables that follow it in the file (qemu-img
 * writes all tables in a row: a sequential reader then loads many with
 * one read).  Threads that miss the same table wait for one read.
 */
static const unsigned char *
load_table (struct grain_dir *d, uint64_t gt_index, struct gt_entry **pin)
{
  uint64_t key = gtcache_key (d->owner, gt_index);
  size_t gt_bytes = (size_t) d->gtes_per_gt * d->gte_size;
  uint64_t stride = div_round_up (gt_bytes, SECTOR) * SECTOR;
  size_t max = MIN ((uint64_t) BATCH_MAX_BYTES,
                    gtcache_budget (d->cache) / BATCH_BUDGET_SHARE) / stride;
  struct gt_entry *batch[BATCH_MAX_BYTES / SECTOR + 1];
  const unsigned char *data;
  size_t n, i;
  int tries, r;

  for (tries = 0; tries < 3; ++tries) {
    data = gtcache_get_or_reserve (d->cache, key, gt_bytes, pin);
    if (data)
      return data;
    if (*pin)
      break;
    /* No memory, or the read we waited for failed: try again. */
  }
  if (*pin == NULL) {
    vmdk_error (ENOMEM, "%s: cannot load grain table %" PRIu64 ": out of "
                "memory, or reading it keeps failing", d->io->name, gt_index);
    return NULL;
  }
  batch[0] = *pin;
  n = 1 + reserve_neighbours (d, gt_index, gt_bytes, stride, batch + 1,
                              max > 1 ? max - 1 : 0);
  r = fill_tables (d, gt_offset (d, gt_index), gt_bytes, stride, batch, n);
  for (i = 0; i < n; ++i) {
    gtcache_loaded (d->cache, batch[i], r == 0);
    if (i > 0)
      gtcache_unpin (batch[i]);
  }
  if (r == -1) {
    gtcache_unpin (*pin);
    return NULL;
  }
  if (n == 1)
    vmdk_debug (VMDK_DEBUG_CACHE, "%s: loaded grain table %" PRIu64
                " from offset %" PRIu64, d->io->name, gt_index,
                gt_offset (d, gt_index));
  else
    vmdk_debug (VMDK_DEBUG_CACHE, "%s: loaded grain table %" PRIu64
                " from offset %" PRIu64 " with the %zu after it in one read",
                d->io->name, gt_index, gt_offset (d, gt_index), n - 1);
  return gtcache_data (*pin);
}

/* The grain table gt_index, pinned (NULL: the directory has none, and
 * its range is unallocated).  A directory entry that failed validation
 * fails with EIO.
 */
static int
get_table (struct grain_dir *d, uint64_t gt_index,
           const unsigned char **table, struct gt_entry **pin)
{
  *table = NULL;
  if (gt_index >= d->nr_gts || gt_offset (d, gt_index) == 0)
    return 0;
  if (gt_offset (d, gt_index) == GD_BAD)
    return vmdk_error (EIO, "%s: grain directory entry %" PRIu64
                       " points outside the file: corrupt image",
                       d->io->name, gt_index);
  *table = load_table (d, gt_index, pin);
  return *table ? 0 : -1;
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

  if (get_table (d, gt_index, &table, &pin) == -1)
    return -1;
  if (table == NULL) {
    run->kind = RUN_UNALLOC;
    run->length = max;
    return 0;
  }

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

uint64_t
grain_dir_data_limit (const struct grain_dir *d, uint64_t gt_index)
{
  if (d->table_state &&
      (__atomic_load_n (&d->table_state[gt_index], __ATOMIC_ACQUIRE) &
       TABLE_WRITTEN))
    return __atomic_load_n (&d->file_size, __ATOMIC_ACQUIRE);
  return d->open_file_size;
}

/* Writing.  Every function below runs with d->alloc_lock held. */

/* Before we change a table for the first time, every entry in it must
 * be valid: a dangling entry would alias the grains we append.
 */
static int
check_table_entries (struct grain_dir *d, uint64_t t,
                     const unsigned char *table)
{
  enum grain_kind kind;
  uint64_t foff;
  uint32_t i;

  for (i = 0; i < d->gtes_per_gt; ++i)
    if (d->decode (d, get_gte (table, d->gte_size, i), t, i,
                   &kind, &foff) == -1)
      return vmdk_error_prefix ("refusing to write into grain table %"
                                PRIu64 " which has a corrupt entry", t);
  return 0;
}

int
grain_dir_get (struct grain_dir *d, uint64_t gt_index, uint32_t gte_index,
               uint64_t *gte)
{
  const unsigned char *table;
  struct gt_entry *pin;

  if (get_table (d, gt_index, &table, &pin) == -1)
    return -1;
  if (table == NULL) {
    *gte = 0;
    return 0;
  }
  *gte = get_gte (table, d->gte_size, gte_index);
  gtcache_unpin (pin);
  return 0;
}

/* A grain that starts inside the file may end past it (a truncated
 * image, or a hostile one): appending there would make the new grain
 * the old one's tail, which read as zeroes until then (fuzz-image found
 * that).  Before the first allocation, move next_free past every such
 * grain.  That takes reading every table once, so it is done only when
 * something is about to be allocated.  A table that cannot be read is
 * skipped: its grains fail to read before and after.
 */
static void
move_past_straddling_grains (struct grain_dir *d)
{
  enum grain_kind kind;
  uint64_t t, foff, end;
  uint32_t i;

  for (t = 0; t < d->nr_gts; ++t) {
    const unsigned char *table;
    struct gt_entry *pin;

    if (gt_offset (d, t) == 0 || gt_offset (d, t) == GD_BAD)
      continue;
    table = load_table (d, t, &pin);
    if (table == NULL)
      continue;
    for (i = 0; i < d->gtes_per_gt; ++i)
      if (d->decode (d, get_gte (table, d->gte_size, i), t, i,
                     &kind, &foff) == 0 &&
          kind == GRAIN_DATA &&
          !ADD_OVERFLOW (foff, d->grain_bytes, &end) &&
          end > d->next_free) {
        vmdk_debug (VMDK_DEBUG_OPEN, "%s: grain table %" PRIu64 " entry %"
                    PRIu32 " ends at byte %" PRIu64 ", past the end of the "
                    "file: allocations start after it", d->io->name, t, i,
                    end);
        d->next_free = end;
      }
    gtcache_unpin (pin);
  }
}

int
grain_dir_reserve (struct grain_dir *d, uint64_t bytes, uint64_t align,
                   uint64_t *offset)
{
  uint64_t off, end;

  /* Appending is all we do, so a file that cannot grow has no room. */
  if (d->io->cannot_grow)
    return vmdk_error (ENOSPC, "%s: this write needs space for a new grain "
                       "or grain table, but the file cannot grow: %s",
                       d->io->name, d->io->cannot_grow);
  if (!d->past_straddlers) {
    move_past_straddling_grains (d);
    d->past_straddlers = true;
  }
  off = div_round_up (d->next_free, align) * align;

  if (ADD_OVERFLOW (off, bytes, &end) || end > d->max_offset)
    return vmdk_error (ENOSPC, "%s: the extent file is full: a sparse "
                       "extent cannot grow past %" PRIu64 " bytes",
                       d->io->name, d->max_offset);
  d->next_free = end;
  d->allocated = true;
  if (end > __atomic_load_n (&d->file_size, __ATOMIC_RELAXED))
    __atomic_store_n (&d->file_size, end, __ATOMIC_RELEASE);
  *offset = off;
  return 0;
}

/* Give a GD hole a new (zeroed) table and its redundant twin. */
static int
allocate_table (struct grain_dir *d, uint64_t t)
{
  uint64_t gt_bytes = div_round_up ((uint64_t) d->gtes_per_gt * d->gte_size,
                                    SECTOR) * SECTOR;
  uint64_t off, roff = 0;

  if (array_reserve ((void **) &d->dirty_gdes, &d->dirty_gdes_alloc,
            d->nr_dirty_gdes + 1, sizeof *d->dirty_gdes) == -1 ||
      grain_dir_reserve (d, gt_bytes, SECTOR, &off) == -1 ||
      (d->rgt_offsets && grain_dir_reserve (d, gt_bytes, SECTOR, &roff) == -1))
    return -1;
  /* The new space lies past everything ever written, so it reads as
   * zeroes: a lookup that misses the cache sees an empty table.
   */
  if (d->rgt_offsets)
    d->rgt_offsets[t] = roff;
  __atomic_store_n (&d->gt_offsets[t], off, __ATOMIC_RELEASE);
  d->table_state[t] |= TABLE_CHECKED;
  d->dirty_gdes[d->nr_dirty_gdes++] = t;
  return 0;
}

/* Before the first update of a table, compare it with its redundant
 * copy: if they differ we cannot know which is right.
 */
static int
check_redundant (struct grain_dir *d, uint64_t t, const unsigned char *table)
{
  size_t gt_bytes = (size_t) d->gtes_per_gt * d->gte_size;
  unsigned char *copy;
  int r = 0;

  if (d->rgt_offsets == NULL || (d->table_state[t] & TABLE_CHECKED))
    return 0;
  copy = malloc (gt_bytes);
  if (copy == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  if (io_pread_zerofill (d->io, copy, gt_bytes, d->rgt_offsets[t]) == -1)
    r = -1;
  else if (memcmp (copy, table, gt_bytes) != 0)
    r = vmdk_error (EIO, "%s: grain table %" PRIu64 " differs from its "
                    "redundant copy: refusing to write to a corrupt image",
                    d->io->name, t);
  free (copy);
  if (r == 0)
    d->table_state[t] |= TABLE_CHECKED;
  return r;
}

int
grain_dir_ensure_table (struct grain_dir *d, uint64_t t)
{
  if (t >= d->nr_gts)
    return vmdk_error (EIO, "%s: write beyond the capacity in the sparse "
                       "header (table %" PRIu64 ")", d->io->name, t);
  if (gt_offset (d, t) == GD_BAD)
    return vmdk_error (EIO, "%s: grain directory entry %" PRIu64
                       " points outside the file: corrupt image",
                       d->io->name, t);
  if (gt_offset (d, t) == 0)
    return allocate_table (d, t);
  return 0;
}

int
grain_dir_set (struct grain_dir *d, uint64_t t, uint32_t i, uint32_t value)
{
  unsigned char *table;
  struct gt_entry *pin;

  if (grain_dir_ensure_table (d, t) == -1)
    return -1;

  /* Pin the table and keep it in the cache until flushed. */
  for (;;) {
    table = (unsigned char *) load_table (d, t, &pin);
    if (table == NULL)
      return -1;
    if ((d->table_state[t] & TABLE_DIRTY) || gtcache_mark_dirty (d->cache, pin))
      break;
    gtcache_unpin (pin);        /* evicted meanwhile: load it again */
  }
  if (!(d->table_state[t] & TABLE_WRITTEN) &&
      check_table_entries (d, t, table) == -1) {
    if (!(d->table_state[t] & TABLE_DIRTY))
      gtcache_clean (d->cache, pin);
    gtcache_unpin (pin);
    return -1;
  }
  if (!(d->table_state[t] & TABLE_DIRTY)) {
    if (check_redundant (d, t, table) == -1 ||
        array_reserve ((void **) &d->dirty, &d->dirty_alloc, d->nr_dirty + 1,
              sizeof *d->dirty) == -1 ||
        array_reserve ((void **) &d->dirty_index, &d->dirty_index_alloc,
              d->nr_dirty + 1, sizeof *d->dirty_index) == -1) {
      gtcache_clean (d->cache, pin);
      gtcache_unpin (pin);
      return -1;
    }
    d->table_state[t] |= TABLE_DIRTY;
    d->dirty[d->nr_dirty] = pin;              /* keeps the pin */
    d->dirty_index[d->nr_dirty++] = t;
  }
  else
    gtcache_unpin (pin);        /* the dirty list holds a pin already */

  /* Mark the table before its new entry can be seen, so lookups accept
   * entries pointing at space we appended.
   */
  __atomic_or_fetch (&d->table_state[t], TABLE_WRITTEN, __ATOMIC_RELEASE);
  assert (d->gte_size == 4);
  __atomic_store_n ((uint32_t *) table + i, htole32 (value),
                    __ATOMIC_RELAXED);

  /* Bound the memory held by dirty tables. */
  if (d->nr_dirty >= GRAIN_DIR_MAX_DIRTY)
    return grain_dir_flush_locked (d);
  return 0;
}

static int
write_gde (struct grain_dir *d, uint64_t start, uint64_t t, uint64_t off)
{
  unsigned char buf[4];

  put_le32 (buf, off / SECTOR);
  return d->io->ops->pwrite (d->io, buf, 4, start + t * 4);
}

int
grain_dir_flush_locked (struct grain_dir *d)
{
  size_t gt_bytes = (size_t) d->gtes_per_gt * d->gte_size, k;
  struct vmdk_io *io = d->io;

  if (d->nr_dirty == 0 && d->nr_dirty_gdes == 0)
    return io->ops->flush (io);

  /* 1. Data: every grain a new entry points at must be on disk before
   * the entry is.  The file is first extended over all allocations (if
   * there were any: a file that cannot grow has none), and any metadata
   * the new entries rely on is written with the data.
   */
  if ((d->allocated && io->ops->extend (io, d->next_free) == -1) ||
      (d->before_tables && d->before_tables (d) == -1) ||
      io->ops->flush (io) == -1)
    return -1;
  /* 2. Tables (and redundant copies), then directory entries. */
  for (k = 0; k < d->nr_dirty; ++k) {
    uint64_t t = d->dirty_index[k];
    const void *data = gtcache_data (d->dirty[k]);

    if (io->ops->pwrite (io, data, gt_bytes, d->gt_offsets[t]) == -1 ||
        (d->rgt_offsets &&
         io->ops->pwrite (io, data, gt_bytes, d->rgt_offsets[t]) == -1))
      return -1;
  }
  for (k = 0; k < d->nr_dirty_gdes; ++k) {
    uint64_t t = d->dirty_gdes[k];

    if (write_gde (d, d->gd_start, t, d->gt_offsets[t]) == -1 ||
        (d->rgt_offsets &&
         write_gde (d, d->rgd_start, t, d->rgt_offsets[t]) == -1))
      return -1;
  }
  /* 3. Metadata durable. */
  if (io->ops->flush (io) == -1)
    return -1;

  __atomic_add_fetch (&d->flush_gen, 1, __ATOMIC_RELEASE);
  for (k = 0; k < d->nr_dirty; ++k) {
    d->table_state[d->dirty_index[k]] &= ~TABLE_DIRTY;
    gtcache_clean (d->cache, d->dirty[k]);
    gtcache_unpin (d->dirty[k]);
  }
  d->nr_dirty = 0;
  d->nr_dirty_gdes = 0;
  return 0;
}
