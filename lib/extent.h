/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* One interface every extent kind implements.
 *
 * The image splits each request by virtual offset across extents; an
 * extent answers "what is at this offset, and for how long is it the
 * same kind of thing?" (lookup), returning a run.  Reads and block
 * status are both built on runs, so the two can never disagree, and
 * physically contiguous grains come back as one run (one pread).
 */

#ifndef VMDK_EXTENT_H
#define VMDK_EXTENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "descriptor.h"
#include "io.h"

struct gtcache;

enum run_kind {
  RUN_DATA,          /* bytes at file_offset in the extent file */
  RUN_ZERO,          /* allocated, reads as zeroes (zeroed grain) */
  RUN_HOLE,          /* not allocated, reads as zeroes, never falls
                        through to a parent (ZERO extent, host hole) */
  RUN_UNALLOC,       /* not allocated in this link: parent, else zeroes */
  RUN_COMPRESSED,    /* one compressed grain, read via read_compressed */
};

struct run {
  enum run_kind kind;
  uint64_t length;          /* bytes from the looked-up offset */
  uint64_t file_offset;     /* DATA: file offset of the looked-up byte;
                               COMPRESSED: file offset of the grain */
  uint64_t grain_start;     /* COMPRESSED: extent offset of the grain */
};

struct extent;

/* What a writable extent needs from the image around it. */
struct write_ctx {
  /* Read what the layers below this link hold at an image offset (the
   * parent chain, or zeroes): fills the rest of a newly allocated grain.
   */
  int (*read_below) (void *opaque, void *buf, size_t count, uint64_t offset);
  void *opaque;
  bool has_parent;
};

/* Flags of extent zero requests. */
#define EXTENT_ZERO_MAY_TRIM 1
#define EXTENT_ZERO_FAST 2
#define EXTENT_ZERO_CHECK_ONLY 4    /* only say whether FAST is possible */

struct extent_ops {
  const char *kind;
  /* Describe offset (relative to the extent start).  max > 0 bounds the
   * run length the caller wants; the run may be shorter.  for_map asks
   * for a finer answer where that costs extra (host-file holes).
   */
  int (*lookup) (struct extent *e, uint64_t offset, uint64_t max,
                 bool for_map, struct run *run);
  /* Read count bytes at offset from the compressed grain in run. */
  int (*read_compressed) (struct extent *e, const struct run *run,
                          uint64_t offset, void *buf, size_t count);
  void (*free) (struct extent *e);

  /* Writes (all optional: NULL means the kind is never writable). */
  /* Prepare for writing; 1 with *reason set if this extent cannot be
   * written (the image then opens read-only), -1 on error.
   */
  int (*open_rw) (struct extent *e, const char **reason);
  int (*pwrite) (struct extent *e, const void *buf, size_t count,
                 uint64_t offset, const struct write_ctx *ctx);
  /* Make the range read as zeroes.  With EXTENT_ZERO_FAST, fail with
   * ENOTSUP before changing anything if that needs writing zeroes.
   */
  int (*zero) (struct extent *e, uint64_t offset, uint64_t count,
               unsigned flags, const struct write_ctx *ctx);
  /* Advisory: deallocate whole grains where reads stay correct. */
  int (*trim) (struct extent *e, uint64_t offset, uint64_t count,
               const struct write_ctx *ctx);
  /* Data first, then metadata, then sync again. */
  int (*flush) (struct extent *e);
  /* Called before the first change (sets the unclean flag), and on a
   * clean close after a final flush (clears it).
   */
  int (*begin_rw) (struct extent *e);
  int (*close_rw) (struct extent *e);
};

struct extent {
  const struct extent_ops *ops;
  uint64_t start;               /* virtual byte offset in the image */
  uint64_t length;              /* bytes */
  enum extent_access access;
  struct vmdk_io *io;           /* borrowed from the image; NULL for ZERO */
  const char *line;             /* descriptor line, for messages */
  uint32_t grain_size;          /* bytes; 0 if not grain-structured */
  bool writable;                /* open_rw succeeded */
  void *priv;
};

/* Constructors.  Each validates everything it reads from io. */
extern int extent_flat_init (struct extent *e, uint64_t offset_sectors);
extern int extent_zero_init (struct extent *e);
/* A hosted sparse (KDMV) extent, plain or streamOptimized.  If header
 * is non-NULL it is the already-read first sector.
 */
extern int extent_sparse_init (struct extent *e, struct gtcache *cache);

/* COWD (VMDK3 / ESX vmfsSparse redo log), extent-cowd.c. */
#define COWD_HEADER_SIZE 2048
extern bool cowd_is_magic (const unsigned char *buf);
/* Capacity in sectors from a COWD header (first 512 bytes suffice). */
extern int cowd_capacity (const unsigned char *buf, uint64_t *sectors,
                          const char *name);
extern int extent_cowd_init (struct extent *e, struct gtcache *cache);
/* The parent file name recorded in a COWD child's header, copied to buf
 * (len bytes); "" for a root disk or an empty name.  -1 with an error
 * if the name is corrupt or does not fit.
 */
extern int cowd_parent_name (struct extent *e, char *buf, size_t len);

/* seSparse (ESXi 6.5+ snapshots), extent-sesparse.c.  Read-only. */
extern int extent_sesparse_init (struct extent *e, struct gtcache *cache);

/* A two-level grain directory (GD in memory, GTs through the cache),
 * shared by KDMV, COWD and seSparse: only the entry decoding differs.
 */
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

/* The extent write operations on a grain directory (graindir-write.c). */
extern int grain_dir_pwrite (struct grain_dir *d, struct extent *e,
                             const void *buf, size_t count, uint64_t offset,
                             const struct write_ctx *ctx);
extern int grain_dir_zero (struct grain_dir *d, struct extent *e,
                           uint64_t offset, uint64_t count, unsigned flags,
                           const struct write_ctx *ctx);
extern int grain_dir_trim (struct grain_dir *d, struct extent *e,
                           uint64_t offset, uint64_t count,
                           const struct write_ctx *ctx);

/* Set up the directory.  gt_offsets must already be filled by the
 * caller; this validates each against the file size (a GT outside the
 * file becomes GD_BAD and reads of its range fail with EIO).
 */
extern int grain_dir_init (struct grain_dir *d, const char *name);
extern void grain_dir_free (struct grain_dir *d);
extern int grain_dir_lookup (struct grain_dir *d, uint64_t offset,
                             uint64_t max, struct run *run);

#endif /* VMDK_EXTENT_H */
