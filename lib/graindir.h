/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A two-level grain directory: the directory (GD) held in memory, the
 * grain tables (GTs) read through the image's cache.  Hosted sparse
 * (KDMV), COWD and seSparse extents all walk one; only the decoding of
 * an entry differs (gte_decode_fn).  graindir.c reads, graindir-write.c
 * allocates grains and tables and writes them back in a crash-safe
 * order.
 */

#ifndef VMDK_GRAINDIR_H
#define VMDK_GRAINDIR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"
#include "io.h"

struct gtcache;
struct gt_entry;

enum grain_kind { GRAIN_UNALLOC, GRAIN_ZERO, GRAIN_DATA, GRAIN_COMPRESSED };

struct grain_dir;
/* Decode one grain-table entry; returns -1 (with error) if corrupt. */
typedef int (*gte_decode_fn) (const struct grain_dir *d, uint64_t gte,
                              uint64_t gt_index, uint32_t gte_index,
                              enum grain_kind *kind, uint64_t *file_offset);

#define GD_BAD UINT64_MAX       /* GD entry that failed validation */

struct grain_dir {
  struct gtcache *cache;
  pthread_mutex_t alloc_lock;   /* allocation, table updates, flush */
  bool lock_initialized;
  uint32_t owner;
  struct vmdk_io *io;
  uint64_t file_size;           /* grows as we allocate (atomic) */
  uint64_t open_file_size;      /* as it was at open */
  uint64_t *gt_offsets;         /* byte offset of each GT; 0 none */
  uint64_t nr_gts;
  uint32_t gtes_per_gt;
  uint32_t gte_size;            /* 4 or 8 */
  uint64_t grain_bytes;
  gte_decode_fn decode;
  const void *opaque;           /* for decode */

  /* Writing (hosted sparse and COWD).  All under alloc_lock. */
  uint64_t gd_start;            /* byte offset of the GD (4-byte GDEs) */
  uint64_t rgd_start;           /* redundant GD, 0 if none */
  uint64_t *rgt_offsets;        /* redundant tables, or NULL */
  uint64_t next_free;           /* where the next allocation goes */
  bool allocated;               /* anything reserved since open */
  bool past_straddlers;         /* next_free checked against old grains */
  uint64_t max_offset;          /* allocations must end below this */
  struct gt_entry **dirty;      /* pinned dirty tables */
  uint64_t *dirty_index;        /* their table numbers */
  size_t nr_dirty, dirty_alloc, dirty_index_alloc;
  uint64_t *dirty_gdes;         /* GD entries to write at flush */
  size_t nr_dirty_gdes, dirty_gdes_alloc;
  uint8_t *table_state;         /* TABLE_* bits per table */
  uint64_t flush_gen;           /* bumped by each flush (atomic) */
  uint64_t first_data;          /* data grains start at or after this */
  uint64_t grain_align;         /* alignment of new grains */
  uint32_t zeroed_grain_value;  /* GTE meaning "zeroed grain", 0: none */
  /* Optional: called by grain_dir_flush_locked (lock held) when there
   * are table changes to write, after the file has been extended over
   * every allocation and before the data is synced: what it writes is
   * durable before any new table entry is (COWD's next-free sector).
   */
  int (*before_tables) (struct grain_dir *d);
};

#define TABLE_CHECKED 1         /* compared with its redundant copy */
#define TABLE_DIRTY 2           /* in the dirty list */
#define TABLE_WRITTEN 4         /* changed by us since open */

/* Where data grains named by table gt_index must start below.  Entries
 * of tables we never changed must point inside the file as it was at
 * open: an entry dangling past the end must not come alive when we
 * append a grain there (fuzz-image found that aliasing).
 */
extern uint64_t grain_dir_data_limit (const struct grain_dir *d,
                                      uint64_t gt_index);

/* Largest number of dirty tables kept before an internal flush. */
#define GRAIN_DIR_MAX_DIRTY 4096

/* Read entry gte_index of table gt_index (0 if no table). */
extern int grain_dir_get (struct grain_dir *d, uint64_t gt_index,
                          uint32_t gte_index, uint64_t *gte);
/* Make sure table gt_index exists: allocate it (zeroed, at the end of
 * the file) if the GD has none.  Caller holds alloc_lock.
 */
extern int grain_dir_ensure_table (struct grain_dir *d, uint64_t gt_index);
/* Set an entry, allocating its table first if the GD has none.  The
 * new value is visible to lookups at once and reaches the disk at the
 * next grain_dir_flush.  Caller holds alloc_lock.
 */
extern int grain_dir_set (struct grain_dir *d, uint64_t gt_index,
                          uint32_t gte_index, uint32_t value);
/* Reserve bytes at the end of the file, aligned; caller holds the lock. */
extern int grain_dir_reserve (struct grain_dir *d, uint64_t bytes,
                              uint64_t align, uint64_t *offset);
/* Write dirty tables and GD entries, ordered for crash consistency:
 * fdatasync data, write metadata, fdatasync.  Caller holds the lock.
 */
extern int grain_dir_flush_locked (struct grain_dir *d);

/* The extent write operations of every writable grain-structured kind
 * (hosted sparse, COWD), on e->dir (graindir-write.c).
 */
extern int grain_dir_pwrite (struct extent *e, const void *buf, size_t count,
                             uint64_t offset, const struct write_ctx *ctx);
extern int grain_dir_zero (struct extent *e, uint64_t offset, uint64_t count,
                           unsigned flags, const struct write_ctx *ctx);
extern int grain_dir_trim (struct extent *e, uint64_t offset, uint64_t count,
                           const struct write_ctx *ctx);
extern int grain_dir_flush (struct extent *e);

/* Set up the directory.  gt_offsets must already be filled by the
 * caller; this validates each against the file size (a GT outside the
 * file becomes GD_BAD and reads of its range fail with EIO).
 */
extern int grain_dir_init (struct grain_dir *d, const char *name);
extern void grain_dir_free (struct grain_dir *d);
extern int grain_dir_lookup (struct grain_dir *d, uint64_t offset,
                             uint64_t max, struct run *run);

#endif /* VMDK_GRAINDIR_H */
