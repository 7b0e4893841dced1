/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Writing streamOptimized extents (stream-write.c explains how). */

#ifndef VMDK_STREAM_WRITE_H
#define VMDK_STREAM_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "extent.h"
#include "header.h"
#include "stream-map.h"

struct stream;
struct stream_writer;

/* Start writing an extent (at extent_start in the image, extent_length
 * bytes) whose grains are read through reader: header h (as at offset
 * 0), grain map m (copied), grains ending at byte data_end, where
 * the metadata tail starts (has_tail: a valid one, which must be cut
 * off before new grains overwrite it).  io must be able to truncate.
 * level is the compression level.
 */
extern struct stream_writer *
stream_writer_new (struct vmdk_io *io, struct stream *reader,
                   const struct sparse_header *h, struct stream_map *m,
                   uint64_t data_end, bool has_tail, uint64_t extent_start,
                   uint64_t extent_length, int level);
/* Free the writer (call stream_writer_flush first to keep the data). */
extern void stream_writer_free (struct stream_writer *w);

/* The extent operations, on a writer.  Once a grain could not be
 * stored, every one of them fails (reads with EIO).
 */
extern int stream_writer_lookup (struct stream_writer *w, uint64_t offset,
                                 uint64_t max, struct run *run);
extern int stream_writer_read (struct stream_writer *w, const struct run *run,
                               uint64_t offset, void *buf, size_t count);
extern int stream_writer_pwrite (struct stream_writer *w, const void *buf,
                                 size_t count, uint64_t offset,
                                 const struct write_ctx *ctx);
extern int stream_writer_zero (struct stream_writer *w, uint64_t offset,
                               uint64_t count, unsigned flags,
                               const struct write_ctx *ctx);
extern int stream_writer_trim (struct stream_writer *w, uint64_t offset,
                               uint64_t count, const struct write_ctx *ctx);
/* Make the file a complete stream image of everything written. */
extern int stream_writer_flush (struct stream_writer *w);

#endif /* VMDK_STREAM_WRITE_H */
