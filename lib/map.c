/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Block status: the runs of each link, and ranges a link does not
 * allocate answered by its parent (chain_map_parent), with the depth
 * of the link that answered and, for data stored as it is, where.
 * vmdk_map is the plain view (the plugin's extents); vmdk_map_entries
 * the full one (the vmdk command's map, qemu-img map's terms).
 */

#include <config.h>

#include <inttypes.h>

#include "checked.h"
#include "image.h"

static enum vmdk_map_type
map_type_of (enum run_kind k)
{
  switch (k) {
  case RUN_ZERO: return VMDK_MAP_ZERO;
  case RUN_HOLE:
  case RUN_UNALLOC: return VMDK_MAP_HOLE;
  case RUN_DATA:
  case RUN_COMPRESSED:
  default: return VMDK_MAP_DATA;
  }
}

/* The entry of one run of link img at depth. */
static void
entry_of (const struct extent *e, const struct run *run, uint64_t offset,
          unsigned depth, struct vmdk_map_entry *m)
{
  m->offset = offset;
  m->length = run->length;
  m->type = map_type_of (run->kind);
  m->present = run->kind != RUN_UNALLOC;
  m->depth = depth;
  m->file = NULL;
  m->file_offset = 0;
  /* Uncompressed data has a place, and so has a flat extent's host
   * hole (a NOACCESS extent's "data" is a guess, a ZERO extent has no
   * file).
   */
  if ((run->kind == RUN_DATA || (run->kind == RUN_HOLE && e->io)) &&
      e->access != ACCESS_NOACCESS) {
    m->file = e->io->name;
    m->file_offset = run->file_offset;
  }
}

int
image_map_range (struct vmdk_image *img, uint64_t offset, uint64_t end,
                 unsigned depth, vmdk_map_entry_fn fn, void *opaque)
{
  while (offset < end) {
    struct vmdk_map_entry m;
    struct extent *e;
    struct run run;
    int r;

    if (image_lookup (img, offset, end - offset, true, &e, &run) == -1)
      return -1;
    if (run.kind == RUN_UNALLOC && img->parent)
      r = chain_map_parent (img->parent, offset, offset + run.length,
                            depth + 1, fn, opaque);
    else {
      entry_of (e, &run, offset, depth, &m);
      r = fn (opaque, &m);
    }
    if (r != 0)
      return r;
    offset += run.length;
  }
  return 0;
}

/* [offset, offset + count) clipped to the disk. */
static uint64_t
map_end (const struct vmdk_image *img, uint64_t offset, uint64_t count)
{
  uint64_t end;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    end = img->size;
  return end;
}

int
vmdk_map_entries (struct vmdk_image *img, uint64_t offset, uint64_t count,
                  vmdk_map_entry_fn fn, void *opaque)
{
  return image_map_range (img, offset, map_end (img, offset, count), 0, fn,
                          opaque) == -1 ? -1 : 0;
}

struct plain_map {
  vmdk_map_fn fn;
  void *opaque;
};

static int
plain_entry (void *opaque, const struct vmdk_map_entry *m)
{
  const struct plain_map *p = opaque;

  return p->fn (p->opaque, m->offset, m->length, m->type);
}

int
vmdk_map (struct vmdk_image *img, uint64_t offset, uint64_t count,
          vmdk_map_fn fn, void *opaque)
{
  struct plain_map p = { fn, opaque };

  return vmdk_map_entries (img, offset, count, plain_entry, &p);
}
