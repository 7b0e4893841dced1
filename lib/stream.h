/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Compressed grains of streamOptimized extents.
 *
 * A grain marker is: u64 lba (virtual sector of the grain start),
 * u32 size (compressed bytes), then size bytes of zlib data, padded to
 * a sector.  Metadata markers have size 0 and a u32 type at byte 12.
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
#define GRAIN_MARKER_SIZE 12

/* Compressed grains are at most this large (QEMU allows 2 clusters). */
#define STREAM_MAX_GRAIN_BYTES (16 * 1024 * 1024)

struct stream;

extern struct stream *stream_new (struct vmdk_io *io, uint64_t file_size,
                                  uint32_t grain_bytes,
                                  uint64_t extent_length, bool markers);
extern void stream_free (struct stream *s);

/* Read count bytes at extent offset offset, inside the compressed grain
 * described by run.
 */
extern int stream_read (struct stream *s, const struct run *run,
                        uint64_t offset, void *buf, size_t count);

#endif /* VMDK_STREAM_H */
