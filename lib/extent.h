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
  int compression_level;        /* for compressed (stream) extents */
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
  /* Read count bytes at offset from the compressed grains of runs[0..nr),
   * consecutive grains of the extent: offset lies in the first, and
   * the read ends in the last.  Several at once let the extent fetch
   * their compressed bytes with one read.
   */
  int (*read_compressed) (struct extent *e, const struct run *runs,
                          size_t nr, uint64_t offset, void *buf,
                          size_t count);
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
  struct grain_dir *dir;        /* grain-structured kinds (graindir.h) */
  void *priv;
};

/* Constructors.  Each validates everything it reads from io, and sets
 * e->ops, e->priv and, for grain-structured kinds, e->grain_size and
 * e->dir.
 */
extern int extent_flat_init (struct extent *e, uint64_t offset_sectors);
extern int extent_zero_init (struct extent *e);
/* A hosted sparse (KDMV) extent, plain or streamOptimized. */
extern int extent_sparse_init (struct extent *e, struct gtcache *cache);
/* COWD (VMDK3 / ESX vmfsSparse redo log). */
extern int extent_cowd_init (struct extent *e, struct gtcache *cache);
/* seSparse (ESXi 6.5+ snapshots).  Read-only. */
extern int extent_sesparse_init (struct extent *e, struct gtcache *cache);

/* The parent file name recorded in a COWD child's header, copied to buf
 * (len bytes); "" for a root disk or an empty name.  -1 with an error
 * if the name is corrupt or does not fit, or e is not a COWD extent.
 */
extern int cowd_parent_name (struct extent *e, char *buf, size_t len);

#endif /* VMDK_EXTENT_H */
