/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Writing the files of a new image (create-extent.c): each function
 * lays out one extent file, freshly created and empty, following
 * VMDK-FORMAT.md (c), "Writing images that VMware accepts".
 */

#ifndef VMDK_CREATE_H
#define VMDK_CREATE_H

#include <stddef.h>
#include <stdint.h>

#include "descriptor.h"
#include "io.h"

/* Hosted sparse geometry as VMware writes it. */
#define CREATE_GRAIN_SECTORS 128        /* 64 KiB grains */
#define CREATE_GTES_PER_GT 512          /* 32 MiB per grain table */
#define CREATE_EMBEDDED_DESC_SECTORS 20 /* room for the descriptor to grow */

/* Split images: VMware's extent size (VirtualBox's VMDK_2G_SPLIT_SIZE). */
#define CREATE_SPLIT_SECTORS (UINT64_C (2047) * 1024 * 1024 / 512)

/* A hosted sparse (KDMV) extent of capacity sectors: version 1 header,
 * redundant grain directory, every grain table preallocated (as holes
 * in the file: nothing but the header, descriptor and directories is
 * written).  desc (desc_len bytes, at most 20 sectors) is embedded at
 * sector 1 when non-NULL.
 */
extern int create_sparse_extent (struct vmdk_io *io, uint64_t capacity,
                                 const char *desc, size_t desc_len);

/* A COWD (vmfsSparse) extent of capacity sectors: the 2048-byte header
 * and an empty grain directory; grain tables are allocated on demand.
 * parent_name is the parent's file name for a delta, else NULL (a root
 * disk, which records the geometry instead).
 */
struct geometry;
extern int create_cowd_extent (struct vmdk_io *io, uint64_t capacity,
                               const struct geometry *geo,
                               const char *parent_name);

/* A streamOptimized extent of capacity sectors as VMware writes one
 * (version 3 header, flags newline test, compressed and markers, the
 * directory at the end), with desc embedded at sector 1, and no
 * grains yet: the header and descriptor, then at overHead (128) an
 * empty directory, the footer and the end-of-stream marker.
 */
extern int create_stream_extent (struct vmdk_io *io, uint64_t capacity,
                                 const char *desc, size_t desc_len);

/* A flat extent: the file at its full size, as a hole (no data is
 * written).
 */
extern int create_flat_extent (struct vmdk_io *io, uint64_t capacity);

#endif /* VMDK_CREATE_H */
