/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The grain map of a streamOptimized extent held whole in memory, for
 * writing (and for reading an image whose footer was lost): where each
 * grain's marker is, its metadata tail as the writer lays it out, and
 * the recovery of a map from the grain markers alone.
 */

#ifndef VMDK_STREAM_MAP_H
#define VMDK_STREAM_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extent.h"
#include "graindir.h"
#include "header.h"
#include "io.h"

struct stream;

/* Tables are allocated on first use, so memory follows what is stored
 * (4 bytes a grain), not the capacity.
 */
struct stream_map {
  uint64_t nr_grains;
  uint32_t gtes_per_gt;
  uint64_t nr_gts;
  uint32_t **tables;            /* sector of each grain's marker, 0: none */
};

extern int stream_map_init (struct stream_map *m, uint64_t nr_grains,
                            uint32_t gtes_per_gt);
extern void stream_map_free (struct stream_map *m);

static inline uint32_t
stream_map_get (const struct stream_map *m, uint64_t g)
{
  const uint32_t *t = m->tables[g / m->gtes_per_gt];

  return t ? t[g % m->gtes_per_gt] : 0;
}

extern int stream_map_set (struct stream_map *m, uint64_t g, uint32_t sector);

/* A deep copy of from in to (a new map). */
extern int stream_map_copy (struct stream_map *to,
                            const struct stream_map *from);

/* The run at extent offset (bytes) for grains of grain_bytes: one
 * compressed grain, or a run of unallocated ones, at most max long.
 */
extern void stream_map_lookup (const struct stream_map *m,
                               uint64_t grain_bytes, uint64_t offset,
                               uint64_t max, struct run *run);

/* Fill m from the grain directory d (every table read once).  Returns
 * 1 with *reason set if the directory cannot be trusted for writing.
 */
extern int stream_map_load (struct stream_map *m, struct grain_dir *d,
                            const char **reason);

/* Rebuild m by walking the markers from overHead, checking that every
 * grain inflates: the writer's crash recovery.  The walk stops at the
 * first thing that is not a valid marker (a torn tail); *end is set to
 * where it stopped.
 */
extern int stream_map_recover (struct stream_map *m, struct vmdk_io *io,
                               struct stream *reader,
                               const struct sparse_header *h,
                               uint64_t file_size, uint64_t grain_bytes,
                               uint64_t *end);

/* The metadata tail for m at byte offset at (a sector): a table
 * marker and table for each table that has a grain, the directory
 * marker and directory, the footer marker, the footer (h with the real
 * gdOffset, uncleanShutdown clear) and the end-of-stream marker.
 * *buf is malloc'd, *len bytes.
 */
extern int stream_tail_build (const struct stream_map *m,
                              const struct sparse_header *h, uint64_t at,
                              unsigned char **buf, size_t *len);

/* Marker layout (VMDK-FORMAT.md b.4). */
extern void stream_put_metadata_marker (unsigned char *sector,
                                        uint64_t num_sectors, uint32_t type);

#endif /* VMDK_STREAM_MAP_H */
