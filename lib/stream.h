/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Compressed grains of streamOptimized extents.
 *
 * A grain marker is: u64 lba (virtual sector of the grain start),
 * u32 size (compressed bytes), then size bytes of zlib data, padded to
 * a sector.  Metadata markers have size 0 and a u32 type at byte 12;
 * the reader never walks them (it uses the GD and GTs), so unknown
 * types (ovftool's type 4) are harmless.
 *
 * Every marker is validated before use: its lba must be the grain's,
 * its size non-zero, at most STREAM_MAX_COMPRESSED (grain) and inside
 * the file, and the data must inflate to exactly the grain (or the
 * extent's tail, for a last grain cut short by the extent's end).
 * A bad grain fails only reads of its own range, with EIO.
 */

#ifndef VMDK_STREAM_H
#define VMDK_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"

#define MARKER_EOS 0
#define MARKER_GT 1
#define MARKER_GD 2
#define MARKER_FOOTER 3
#define MARKER_PROGRESS 4       /* ovftool; undocumented */
#define GRAIN_MARKER_SIZE 12

/* Compressed grains are at most this large (QEMU allows 2 clusters). */
#define STREAM_MAX_GRAIN_BYTES (16 * 1024 * 1024)

/* The most bytes a grain marker plus its data may take: incompressible
 * data grows a little under deflate; QEMU accepts up to two grains, so
 * do we.
 */
#define STREAM_MAX_COMPRESSED(grain_bytes) \
  (2 * (size_t) (grain_bytes) + 512)

struct stream;

struct gtcache;

/* The compressed grains of one extent.  Inflated grains are kept in
 * the image's cache (cache), under the same budget as its grain
 * tables.  markers must be true: compressed grains without markers are
 * refused (implementations disagree on their layout).
 */
extern struct stream *stream_new (struct vmdk_io *io, struct gtcache *cache,
                                  uint64_t file_size, uint32_t grain_bytes,
                                  uint64_t extent_length, bool markers);
extern void stream_free (struct stream *s);

/* Read count bytes at extent offset offset from the compressed grains
 * of runs[0..nr), consecutive grains (offset lies in the first, the
 * read ends in the last).  Their compressed bytes are fetched with one
 * read when they lie in order close together, as a stream writes them.
 * Thread-safe; takes no lock while inflating.
 */
extern int stream_read (struct stream *s, const struct run *runs, size_t nr,
                        uint64_t offset, void *buf, size_t count);

/* The file grew (a writer appended grains): markers up to file_size
 * may be read.
 */
extern void stream_set_file_size (struct stream *s, uint64_t file_size);

/* Read and inflate the whole grain at run, checking its marker and its
 * length: 0 if it is intact.
 */
extern int stream_check_grain (struct stream *s, const struct run *run);

#endif /* VMDK_STREAM_H */
