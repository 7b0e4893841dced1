/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The image object, inside lib/: one link of a snapshot chain, with
 * its descriptor, files and extents.  image.c opens a link, read.c
 * reads it, map.c answers block status, chain.c opens its parents,
 * write.c changes the top link.  Front ends see only the opaque struct
 * of vmdk.h.
 */

#ifndef VMDK_IMAGE_H
#define VMDK_IMAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "descriptor.h"
#include "extent.h"
#include "io.h"
#include "vmdk.h"

struct gtcache;

struct vmdk_image {
  struct vmdk_source *src;
  char *name;
  struct descriptor *desc;
  struct vmdk_io **ios;         /* every file opened, each once */
  size_t nr_ios, ios_alloc;
  struct extent *extents;
  size_t nr_extents;
  uint64_t size;
  uint32_t grain_size;
  struct gtcache *cache;        /* shared by every link of a chain */
  bool owns_src, owns_cache;
  struct vmdk_image *parent;    /* NULL: no parent, or single-link */
  unsigned chain_length;

  /* Writing (top link only). */
  bool rw;                      /* files opened read-write */
  bool writable;                /* every RW extent can be written */
  const char *ro_reason;
  char ro_reason_buf[256];
  uint64_t desc_offset, desc_length;  /* descriptor bytes in ios[0] */
  pthread_mutex_t write_lock;   /* first-write setup */
  bool modified;
  int compression_level;
};

/* The files already in the chain being opened, to refuse loops. */
struct chain {
  uint64_t ids[VMDK_MAX_CHAIN_DEPTH][2];
  unsigned depth;
};

/* image.c */

/* What a link's main file holds. */
struct main_file {
  struct descriptor *desc;      /* given, embedded, or made for a bare file */
  uint64_t desc_offset, desc_length;  /* the descriptor's bytes in it */
  struct vmdk_io *self;         /* the file is itself the only extent */
};
/* Read the main file: a sparse file with (or without) an embedded
 * descriptor, or a text descriptor.  On error nothing is kept.
 */
extern int image_read_main_file (struct vmdk_io *io, struct main_file *m);
/* Which sparse format a file holds, by its magic (both hosted sparse
 * and COWD files appear under either extent type): SPARSE_*, or -1.
 */
enum { SPARSE_NEITHER, SPARSE_KDMV, SPARSE_COWD };
extern int image_sparse_magic (struct vmdk_io *io);
/* A POSIX source for the directory of path (resolved), under policy,
 * and in *name the file's name in it (malloc'd).  NULL on error.
 */
extern struct vmdk_source *image_path_source (const char *path,
                                              const struct vmdk_file_policy *policy,
                                              char **name);

/* Open one link (and, unless opts->single_link, its parents). */
extern struct vmdk_image *image_open_link (struct vmdk_source *src,
                                           bool owns_src, const char *name,
                                           const struct vmdk_options *opts,
                                           struct gtcache *cache,
                                           struct chain *chain);
/* Open the image that hint names relative to src (chain_open_hint)
 * as the top of a chain, with a cache of its own.  src stays the
 * caller's.
 */
extern struct vmdk_image *image_open_hint (struct vmdk_source *src,
                                           const char *hint,
                                           const struct vmdk_options *opts);

/* read.c */

/* The extent containing offset, which must be < img->size. */
extern struct extent *image_find_extent (struct vmdk_image *img,
                                         uint64_t offset);
/* Look up the run at image offset (< img->size), bounded by max and
 * by the extent; *ep is the extent.  for_map: see extent_ops.lookup.
 */
extern int image_lookup (struct vmdk_image *img, uint64_t offset,
                         uint64_t max, bool for_map, struct extent **ep,
                         struct run *run);

/* map.c */

/* Block status of [offset, end) of img, which is the link at depth:
 * 0 when done, 1 if fn asked to stop, -1 on error.
 */
extern int image_map_range (struct vmdk_image *img, uint64_t offset,
                            uint64_t end, unsigned depth,
                            vmdk_map_entry_fn fn, void *opaque);

/* chain.c */

/* Does the link's descriptor say it has a parent? */
extern bool image_has_parent (const struct vmdk_image *img);
/* Record the link's main file in chain, refusing loops and depth. */
extern int chain_enter (struct chain *chain, struct vmdk_io *io);
/* A bare COWD redo log: take the parent name from its header. */
extern int chain_take_cowd_parent_name (struct vmdk_image *img);
/* Open the image that hint names relative to src (a file name, or a
 * path whose directories are opened beneath src under its containment
 * rules), with its parents.  *dir_failed says whether it failed at the
 * directories.
 */
extern struct vmdk_image *chain_open_hint (struct vmdk_source *src,
                                           const char *hint,
                                           const struct vmdk_options *opts,
                                           struct gtcache *cache,
                                           struct chain *chain,
                                           bool *dir_failed);
/* Open the parent named by the descriptor and check its CID. */
extern int chain_open_parent (struct vmdk_image *img,
                              const struct vmdk_options *opts,
                              struct chain *chain);
/* Read from, or map, the parent (at depth), which may be shorter than
 * the child: past its end is zeroes (holes that the child, at
 * depth - 1, answers for).
 */
extern int chain_read_parent (struct vmdk_image *parent, void *buf,
                              size_t count, uint64_t offset);
extern int chain_map_parent (struct vmdk_image *parent, uint64_t offset,
                             uint64_t end, unsigned depth,
                             vmdk_map_entry_fn fn, void *opaque);

/* write.c */

/* Decide whether the top link can be written (else keep the reason). */
extern int image_prepare_writes (struct vmdk_image *img,
                                 const struct vmdk_options *opts);
/* On close of a modified image: flush, clear the unclean flags. */
extern void image_end_writes (struct vmdk_image *img);

#endif /* VMDK_IMAGE_H */
