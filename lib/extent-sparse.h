/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A hosted sparse (KDMV) extent's state, shared by extent-sparse.c
 * (opening it, plain sparse reads and writes) and extent-stream.c
 * (streamOptimized reads, writes and recovery).
 */

#ifndef VMDK_EXTENT_SPARSE_H
#define VMDK_EXTENT_SPARSE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "extent.h"
#include "graindir.h"
#include "header.h"
#include "stream.h"
#include "stream-map.h"

struct sparse {
  struct sparse_header h;
  struct grain_dir dir;
  struct stream *stream;        /* compressed grains, else NULL */

  /* streamOptimized writing (stream_open_rw prepares the map, the
   * first write starts the writer) and recovery (the footer was lost
   * while a writer ran: the map comes from the markers).
   */
  struct stream_map map;
  bool recovered;
  uint64_t data_end;            /* where the stored grains end */
  struct stream_writer *writer; /* atomic: set once, by the first write */
  pthread_mutex_t writer_lock;
};

/* extent-sparse.c */
extern void sparse_free (struct extent *e);

/* extent-stream.c */

/* The operations of a streamOptimized extent. */
extern const struct extent_ops stream_ops;
/* Read the header of a stream written in one pass (GD_AT_END) from
 * its footer into *h.
 */
extern int stream_read_footer (struct vmdk_io *io, uint64_t file_size,
                               struct sparse_header *h);
/* Rebuild the map of a stream whose footer is gone from its markers. */
extern int stream_recover (struct extent *e);

#endif /* VMDK_EXTENT_SPARSE_H */
